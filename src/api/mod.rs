//! HTTP: the management API under `/api/v1`, function URLs, health.
//!
//! One module per resource, each with its own `router()`, merged here.

mod auth;
mod billing;
pub mod error;
mod functions;
pub mod invoke;

use axum::routing::get;
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::app::AppState;

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
        .with_state(state)
        .layer(TraceLayer::new_for_http())
}
