//! HTTP: the management API under `/api/v1`, function URLs, health,
//! `/metrics` and the dashboard's pages.
//!
//! Two routers for two listeners (two origins): [`router`] for management
//! (API, dashboard, metrics; behind `auth` and the `hosts` allow-list) and
//! [`functions_router`] for function URLs (behind `guard`). One module per
//! resource, each with its own `router()`, merged here; `pages/` holds the
//! dashboard, one file per page.

mod audit;
pub mod auth;
mod billing;
pub mod credentials;
pub mod error;
pub mod events;
mod functions;
pub mod guard;
mod hosts;
pub mod invoke;
mod keys;
mod pages;
mod records;

use axum::http::{header, HeaderMap};
use axum::routing::get;
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::metrics::Gauges;
use crate::state::AppState;

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

/// Base of the function URLs, on the function listener: `OL_FUNCTIONS_URL`
/// when set, else the host name the caller reached the management listener
/// by, with the function listener's port, so the URLs shown work from
/// where the caller is.
fn base_url(headers: &HeaderMap, state: &AppState) -> String {
    if let Some(url) = &state.settings.functions_url {
        return url.clone();
    }
    let listen = state.settings.functions_listen;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(hosts::host_name)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| listen.ip().to_string());
    format!("http://{host}:{}", listen.port())
}

/// A 408 when a body read failed because the body missed its deadline
/// (`OL_BODY_TIMEOUT_S`); `None` for other failures (too large, cut off).
fn body_error(e: &axum::Error, deadline: std::time::Duration) -> Option<error::ApiError> {
    crate::serve::past_deadline(e).then(|| {
        error::ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s (OL_BODY_TIMEOUT_S); send it faster \
                 or in a smaller piece",
                deadline.as_secs()
            ),
        )
    })
}

/// The management listener (`OL_LISTEN`): API, dashboard, health, metrics;
/// only for the allowed host names. Never a function URL.
pub fn router(state: AppState) -> Router {
    let management = Router::new()
        .merge(functions::router())
        .merge(billing::router())
        .merge(keys::router())
        .merge(audit::router())
        .route(
            "/functions/{name}/run",
            axum::routing::post(invoke::run_from_dashboard),
        )
        .merge(events::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    Router::new()
        .nest("/api/v1", management)
        .route("/healthz", get(crate::cluster::healthz))
        .route("/metrics", get(metrics))
        .merge(pages::router(state.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            hosts::allowed_host,
        ))
        .with_state(state)
        .layer(TraceLayer::new_for_http())
}

/// The function listener (`OL_FUNCTIONS_LISTEN`): function URLs, `/run`
/// and health; no management route, no dashboard. A full node answers 503
/// `X-Ol-Node-Full` here, before any handler ran, so a balancer can send
/// the call elsewhere.
pub fn functions_router(state: AppState) -> Router {
    Router::new()
        .merge(invoke::router())
        .route("/healthz", get(crate::cluster::healthz))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::cluster::spill::spill,
        ))
        .with_state(state)
        .layer(TraceLayer::new_for_http())
}
