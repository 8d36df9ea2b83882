//! "This node is full": answered before any handler ran, so that the load
//! balancer may send the call to another node.
//!
//! With `OL_SPILL_QUEUE=N` (N > 0), a function call that arrives while N or
//! more calls already wait in this node's pool queue is answered at once
//! with 503, `X-Ol-Node-Full: 1` and `Retry-After: 1`, and is neither run
//! nor recorded here: HAProxy (`retry-on 503`, `option redispatch`) sends it
//! to another node. A hot function thus spills over to other nodes instead
//! of queueing on the one its name hashes to. The default, 0, never spills:
//! a single node has nowhere to send a call; nor does the last node up, so
//! a call that HAProxy marks `X-Ol-No-Spill` queues here as usual.

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// The header that marks the answer as "full, try another node".
pub const NODE_FULL: HeaderName = HeaderName::from_static("x-ol-node-full");
/// Set by the balancer on a call when no other node is up: queue it here.
pub const NO_SPILL: HeaderName = HeaderName::from_static("x-ol-no-spill");

/// Whether `path` is a function call (`/fn/NAME...` or `/run/NAME`).
pub fn is_call(path: &str) -> bool {
    path.starts_with("/fn/") || path.starts_with("/run/")
}

/// Whether a call should go elsewhere: spilling is on and at least
/// `threshold` calls already wait.
pub fn full(threshold: usize, queued: usize) -> bool {
    threshold > 0 && queued >= threshold
}

/// Middleware on the function routes: answers "node full" instead of
/// queueing past `OL_SPILL_QUEUE`.
pub async fn spill(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let threshold = state.settings.cluster.spill_queue;
    if threshold > 0 && is_call(request.uri().path()) && !request.headers().contains_key(NO_SPILL) {
        let queued = state.pool.status().queued;
        if full(threshold, queued) {
            state.node.count_spill();
            tracing::debug!(
                path = request.uri().path(),
                queued,
                "node full: call sent on"
            );
            return node_full(queued);
        }
    }
    next.run(request).await
}

fn node_full(queued: usize) -> Response {
    let body = serde_json::json!({"error": {
        "code": "node_full",
        "message": format!(
            "this node has {queued} calls waiting (OL_SPILL_QUEUE); the call did not run \
             here, retry it on another node or later"
        ),
    }});
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(NODE_FULL, HeaderValue::from_static("1"));
    headers.insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from_static("1"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_calls_spill_and_only_past_the_threshold() {
        assert!(is_call("/fn/hello") && is_call("/fn/hello/a/b") && is_call("/run/hello"));
        assert!(!is_call("/api/v1/functions/hello") && !is_call("/healthz") && !is_call("/fn"));
        assert!(!full(0, 1_000), "0 turns spilling off");
        assert!(!full(2, 1));
        assert!(full(2, 2) && full(1, 5));
    }

    #[test]
    fn the_answer_says_full_and_when_to_retry() {
        let r = node_full(3);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[NODE_FULL], "1");
        assert_eq!(r.headers()[axum::http::header::RETRY_AFTER], "1");
    }
}
