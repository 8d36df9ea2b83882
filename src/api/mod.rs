//! HTTP: the management API under `/api/v1`, function URLs, health.
//!
//! One module per resource, each with its own `router()`, merged here.

mod auth;
mod billing;
mod dashboard;
pub mod error;
mod functions;
pub mod invoke;
mod ui;

use axum::routing::get;
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::metrics::Gauges;

async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> impl axum::response::IntoResponse {
    let gauges = Gauges {
        pool: state.pool.status(),
        records_pending: state.recorder.depth(),
        journal_bytes: state.recorder.journal_bytes(),
        records: state.recorder.stats(),
        catalog_notified: state.catalog.notified(),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(&gauges),
    )
}

pub fn router(state: AppState) -> Router {
    let management = Router::new()
        .merge(functions::router())
        .merge(billing::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin_token,
        ));
    Router::new()
        .nest("/api/v1", management)
        .merge(invoke::router())
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .merge(
            dashboard::pages()
                .merge(ui::router())
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    dashboard::require_login,
                )),
        )
        .merge(dashboard::login_routes())
        .with_state(state)
        .layer(TraceLayer::new_for_http())
}
