//! HTTP: the management API under `/api/v1`, function URLs, health,
//! `/metrics` and the dashboard's pages.
//!
//! One module per resource, each with its own `router()`, merged here;
//! `pages/` holds the dashboard, one file per page.

mod auth;
mod billing;
pub mod error;
pub mod events;
mod functions;
pub mod invoke;
mod pages;

use axum::http::{header, HeaderMap};
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
            crate::metrics::CONTENT_TYPE,
        )],
        state.metrics.render(&gauges),
    )
}

/// `http://host:port` as the caller reached us (its `Host`, else where we
/// listen), so the function URLs shown work from where the caller is.
fn base_url(headers: &HeaderMap, state: &AppState) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| state.settings.listen.to_string());
    format!("http://{host}")
}

pub fn router(state: AppState) -> Router {
    let management = Router::new()
        .merge(functions::router())
        .merge(billing::router())
        .merge(events::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin_token,
        ));
    Router::new()
        .nest("/api/v1", management)
        .merge(invoke::router())
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .merge(pages::router(state.clone()))
        .with_state(state)
        .layer(TraceLayer::new_for_http())
}
