//! Calling functions: the function URL (`/fn/{name}/...`, any method) and
//! OpenLambda's `POST /run/{name}`.
//!
//! For `def f(event)` handlers the event is the JSON body (null when empty)
//! and the response is the JSON of the return value.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use bytes::Bytes;

use super::error::ApiError;
use crate::app::AppState;
use crate::call::{self, CallResult, Outcome};
use crate::pool::AcquireError;
use crate::sandbox::{error_parts, Failure};

/// Largest event accepted (AWS Lambda's synchronous payload limit).
const MAX_EVENT_BYTES: usize = 6 * 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/fn/{name}", any(function_url))
        .route("/fn/{name}/{*path}", any(function_url_path))
        .route("/run/{name}", post(run))
}

async fn function_url(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    body: Body,
) -> Response {
    invoke(state, name, Some(method), body).await
}

async fn function_url_path(
    State(state): State<AppState>,
    Path((name, _path)): Path<(String, String)>,
    method: Method,
    body: Body,
) -> Response {
    invoke(state, name, Some(method), body).await
}

async fn run(State(state): State<AppState>, Path(name): Path<String>, body: Body) -> Response {
    invoke(state, name, None, body).await
}

/// `method` is the function URL's method (checked against `triggers.http`);
/// `None` for `/run`.
async fn invoke(state: AppState, name: String, method: Option<Method>, body: Body) -> Response {
    let function = match state.catalog.get(&name).await {
        Ok(Some(f)) => f,
        Ok(None) => {
            let request_id = call::record_unknown(&state, &name);
            let mut response = ApiError::function_not_found(&name).into_response();
            if let Ok(id) = HeaderValue::from_str(&request_id.to_string()) {
                response.headers_mut().insert("x-request-id", id);
            }
            return response;
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let (Some(method), Some(allowed)) = (&method, &function.http_methods) {
        if !allowed.iter().any(|m| m == method.as_str()) {
            let mut error = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!(
                    "{name} accepts {} (triggers.http in its ol.yaml), not {method}",
                    allowed.join(", ")
                ),
            );
            error.allow = Some(allowed.join(", "));
            return error.into_response();
        }
    }
    let event = match read_event(body).await {
        Ok(event) => event,
        Err(e) => return e.into_response(),
    };
    let result = call::call(state, function.clone(), event).await;
    respond(result, &name)
}

async fn read_event(body: Body) -> Result<Bytes, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_EVENT_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is over 6 MiB, the largest event a call takes",
            )
        })?;
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).map_err(|e| {
            ApiError::bad_request(
                "invalid_event",
                format!("the body must be JSON (it is the handler's event): {e}"),
            )
        })?;
    }
    Ok(bytes)
}

/// The HTTP status a call's outcome is answered with.
pub fn http_status(outcome: &Outcome) -> StatusCode {
    match outcome {
        Outcome::Handled(reply) => {
            StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        Outcome::Failed(failure) | Outcome::NotStarted(AcquireError::Start(failure)) => {
            match failure {
                Failure::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                Failure::OutOfMemory(_) | Failure::Crashed(_) => StatusCode::BAD_GATEWAY,
                Failure::Load { .. } | Failure::Platform(_) => StatusCode::INTERNAL_SERVER_ERROR,
            }
        }
        Outcome::NotStarted(AcquireError::Throttled { .. }) => StatusCode::TOO_MANY_REQUESTS,
        Outcome::NotStarted(AcquireError::ShuttingDown | AcquireError::TooLarge { .. }) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

fn respond(result: CallResult, name: &str) -> Response {
    let status = http_status(&result.outcome);
    let mut response = match result.outcome {
        Outcome::Handled(reply) if reply.status == 200 => {
            let mut r = (status, reply.body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Outcome::Handled(reply) => {
            let (kind, message) = error_parts(&reply.body);
            tracing::info!(function = name, request_id = %result.request_id, %kind, %message,
                "handler raised an exception");
            let mut e = ApiError::new(status, "handler_error", format!("{kind}: {message}"));
            e.kind = Some(kind);
            e.into_response()
        }
        Outcome::Failed(failure) | Outcome::NotStarted(AcquireError::Start(failure)) => {
            failure_error(failure, status, name).into_response()
        }
        Outcome::NotStarted(e @ AcquireError::Throttled { .. }) => {
            let mut error = ApiError::new(
                status,
                "throttled",
                format!("{name}: {e}; retry later, or raise the function's concurrency limit"),
            );
            error.retry_after = Some(1);
            error.into_response()
        }
        Outcome::NotStarted(e @ (AcquireError::ShuttingDown | AcquireError::TooLarge { .. })) => {
            ApiError::new(status, "unavailable", e.to_string()).into_response()
        }
    };
    if let Ok(id) = HeaderValue::from_str(&result.request_id.to_string()) {
        response.headers_mut().insert("x-request-id", id);
    }
    response
}

fn failure_error(failure: Failure, status: StatusCode, name: &str) -> ApiError {
    match failure {
        Failure::Timeout(limit) => ApiError::new(
            status,
            "timeout",
            format!(
                "{name} did not finish within its timeout of {} s (timeout_s in ol.yaml); \
                 the call was stopped",
                limit.as_secs_f64()
            ),
        ),
        Failure::OutOfMemory(mb) => ApiError::new(
            status,
            "out_of_memory",
            format!(
                "{name} exceeded its memory limit of {mb} MB and was killed; \
                 raise memory_mb in ol.yaml or use less memory"
            ),
        ),
        Failure::Crashed(detail) => ApiError::new(
            status,
            "crashed",
            format!("{name}'s container stopped during the call ({detail}); the next call gets a fresh one"),
        ),
        Failure::Load { kind, message } => {
            let mut e = ApiError::new(
                status,
                "load_error",
                format!("{name}'s handler could not be loaded: {kind}: {message}; fix the code and deploy again"),
            );
            e.kind = Some(kind);
            e
        }
        Failure::Platform(e) => ApiError::internal(format!("{name}: {e:#}")),
    }
}
