//! Calling functions: the function URL (`/fn/{name}/...`, any method) and
//! OpenLambda's `POST /run/{name}`.
//!
//! `/run` sends the JSON body as the event and answers the JSON of the
//! result. The function URL hands the runtime the whole request (method,
//! path below `/fn/{name}`, query, headers, body); the runtime turns it into
//! the handler's event (the JSON body for `def f(event)`, the function URL
//! payload 2.0 for AWS-style handlers, the request itself for WSGI/ASGI
//! apps) and answers with the function's HTTP response, passed through.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use bytes::Bytes;

use super::error::ApiError;
use crate::app::AppState;
use crate::call::{self, CallResult, Outcome};
use crate::pool::AcquireError;
use crate::sandbox::{error_parts, Failure, Payload, RequestMeta};
use uuid::Uuid;

/// Largest event accepted (AWS Lambda's synchronous payload limit).
const MAX_EVENT_BYTES: usize = 6 * 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/fn/{name}", any(function_url))
        .route("/fn/{name}/{*path}", any(function_url_path))
        .route("/run/{name}", post(run))
}

/// Where a call came from and what it asked for (function URLs).
struct HttpCall {
    method: Method,
    /// The path below `/fn/{name}`, from `/`.
    path: String,
    query: String,
    headers: HeaderMap,
    source: SocketAddr,
}

async fn function_url(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let call = HttpCall {
        method: parts.method,
        path: "/".into(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts.headers,
        source,
    };
    invoke(state, name, Some(call), body).await
}

async fn function_url_path(
    State(state): State<AppState>,
    Path((name, path)): Path<(String, String)>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    // The raw path, as sent (the extractor's copy is percent-decoded).
    let raw = parts.uri.path();
    let prefix = format!("/fn/{name}");
    let below = raw.strip_prefix(&prefix).filter(|p| p.starts_with('/'));
    let call = HttpCall {
        method: parts.method.clone(),
        path: below.map_or_else(|| format!("/{path}"), str::to_string),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts.headers,
        source,
    };
    invoke(state, name, Some(call), body).await
}

async fn run(State(state): State<AppState>, Path(name): Path<String>, body: Body) -> Response {
    invoke(state, name, None, body).await
}

/// `http` is the function URL's request; `None` for `/run`.
async fn invoke(state: AppState, name: String, http: Option<HttpCall>, body: Body) -> Response {
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
    if let (Some(http), Some(allowed)) = (&http, &function.http_methods) {
        if !allowed.iter().any(|m| m == http.method.as_str()) {
            let mut error = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!(
                    "{name} accepts {} (triggers.http in its ol.yaml), not {}",
                    allowed.join(", "),
                    http.method
                ),
            );
            error.allow = Some(allowed.join(", "));
            return error.into_response();
        }
    }
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    if http
        .as_ref()
        .is_some_and(|h| super::events::wants_async(&h.headers))
    {
        return super::events::accept(&state, &function.name, body).await;
    }
    let request_id = Uuid::new_v4();
    let payload = match http {
        None => match check_json(&body) {
            Ok(()) => Payload::Event(body),
            Err(e) => return e.into_response(),
        },
        Some(http) => Payload::Http {
            meta: describe(&http, request_id, function.timeout_ms),
            body,
        },
    };
    let result = call::call(state, function.clone(), request_id, payload).await;
    respond(result, &name)
}

/// The request's description the runtime builds its event from.
fn describe(http: &HttpCall, request_id: Uuid, timeout_ms: i64) -> RequestMeta {
    RequestMeta {
        method: http.method.as_str().to_string(),
        path: http.path.clone(),
        query: http.query.clone(),
        headers: http
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        source_ip: http.source.ip().to_string(),
        request_id: request_id.to_string(),
        timeout_ms,
    }
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_EVENT_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is over 6 MiB, the largest a call takes",
            )
        })
}

fn check_json(bytes: &[u8]) -> Result<(), ApiError> {
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(|e| {
            ApiError::bad_request(
                "invalid_event",
                format!("the body must be JSON (it is the handler's event): {e}"),
            )
        })?;
    }
    Ok(())
}

fn respond(result: CallResult, name: &str) -> Response {
    let status = StatusCode::from_u16(result.outcome.status().http)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match result.outcome {
        Outcome::Handled(reply) if !reply.raised => {
            // The function's own response, passed through.
            let mut r = Response::new(Body::from(reply.body));
            *r.status_mut() = status;
            let headers = r.headers_mut();
            for (name, value) in reply.headers {
                headers.append(name, value);
            }
            if !headers.contains_key(header::CONTENT_TYPE) {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
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
