//! Calling functions: the function URL (`/fn/{name}/...`) and OpenLambda's
//! `/run/{name}/...`, any method on both.
//!
//! Both hand the runtime the whole request (method, path below the name,
//! query, headers, body, and the prefix as `SCRIPT_NAME`); the runtime turns
//! it into the handler's event and answers with the function's HTTP
//! response, passed through. Where the conventions differ, the function URL
//! follows AWS (payload 2.0 for AWS-style handlers, an empty body is `null`
//! for `def f(event)`) and `/run` follows OpenLambda (the JSON body is the
//! event of either style, `{}` when empty; a web app gets the request as it
//! is). Node handlers take an event only, so `/run` sends them the JSON body.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;

use super::error::ApiError;
use crate::call::{self, CallResult, Outcome};
use crate::manifest::Runtime;
use crate::pool::AcquireError;
use crate::sandbox::{error_parts, Failure, Payload, RequestMeta};
use crate::state::AppState;
use uuid::Uuid;

/// Largest event accepted (AWS Lambda's synchronous payload limit).
const MAX_EVENT_BYTES: usize = 6 * 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/fn/{name}", any(function_url))
        .route("/fn/{name}/", any(function_url))
        .route("/fn/{name}/{*path}", any(function_url))
        .route("/run/{name}", any(run))
        .route("/run/{name}/", any(run))
        .route("/run/{name}/{*path}", any(run))
        .route("/run", any(no_name))
        .route("/run/", any(no_name))
        .route("/fn", any(no_name))
        .route("/fn/", any(no_name))
}

/// `/run` or `/fn` with no function named: say how to call one.
async fn no_name() -> ApiError {
    ApiError::not_found("name the function: /run/NAME or /fn/NAME, then any path below it")
}

/// Which URL a call came in on; where AWS's and OpenLambda's conventions
/// differ, the function URL follows AWS and `/run` follows OpenLambda.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `/fn/{name}/...`: AWS Lambda's function URL.
    Fn,
    /// `/run/{name}/...`: OpenLambda's; a web app gets the request as it is,
    /// `f(event)` the JSON body (`{}` when empty).
    Run,
}

impl Route {
    fn prefix(self) -> &'static str {
        match self {
            Route::Fn => "/fn/",
            Route::Run => "/run/",
        }
    }
}

/// Where a call came from and what it asked for.
struct HttpCall {
    route: Route,
    method: Method,
    /// The route's prefix with the name: a web app's `SCRIPT_NAME`.
    script_name: String,
    /// The path below `script_name`, from `/`, as sent (not percent-decoded).
    path: String,
    query: String,
    headers: HeaderMap,
    source: SocketAddr,
}

async fn function_url(
    State(state): State<AppState>,
    Path(params): Path<Vec<(String, String)>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    http_call(state, Route::Fn, params, source, request).await
}

async fn run(
    State(state): State<AppState>,
    Path(params): Path<Vec<(String, String)>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    http_call(state, Route::Run, params, source, request).await
}

async fn http_call(
    state: AppState,
    route: Route,
    params: Vec<(String, String)>,
    source: SocketAddr,
    request: Request,
) -> Response {
    let name = params
        .into_iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let (parts, body) = request.into_parts();
    let script_name = format!("{}{name}", route.prefix());
    // The raw path, as sent (the extractor's copy is percent-decoded).
    let below = parts
        .uri
        .path()
        .strip_prefix(&script_name)
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/")
        .to_string();
    let call = HttpCall {
        route,
        method: parts.method,
        script_name,
        path: below,
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts.headers,
        source,
    };
    invoke(state, name, call, Admission::ByCallersKey, body).await
}

/// `POST /api/v1/functions/{name}/run` on the management listener: the
/// dashboard's "Call it" form, for a caller the management auth admitted
/// (so no invoke key or rate limit), called as OpenLambda's `/run` (the
/// body is the event). Only the result's JSON goes back: a handler's headers
/// never reach the management origin.
pub async fn run_from_dashboard(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let call = HttpCall {
        route: Route::Run,
        method: Method::POST,
        script_name: format!("{}{name}", Route::Run.prefix()),
        path: "/".into(),
        query: String::new(),
        headers,
        source,
    };
    let mut response = invoke(state, name, call, Admission::Admitted, body).await;
    let old = std::mem::take(response.headers_mut());
    let headers = response.headers_mut();
    for name in [header::RETRY_AFTER, HeaderName::from_static("x-request-id")] {
        if let Some(value) = old.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Who lets a call in.
enum Admission {
    /// The function's guard, from the call's own headers (invoke keys when
    /// `auth: key`, the rate limit).
    ByCallersKey,
    /// The management auth already did (the dashboard's call form).
    Admitted,
}

async fn invoke(
    state: AppState,
    name: String,
    mut http: HttpCall,
    admission: Admission,
    body: Body,
) -> Response {
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
    if let Admission::ByCallersKey = admission {
        if let Err(e) = state.guard.admit(&state.db, &name, &http.headers).await {
            return e.into_response();
        }
    }
    super::guard::strip_credentials(&mut http.headers, state.settings.admin_token.as_deref());
    if let Some(allowed) = &function.http_methods {
        if !allowed.iter().any(|m| m == http.method.as_str()) {
            return method_not_allowed(&name, allowed, &http);
        }
    }
    let body = match read_body(body, state.settings.body_timeout).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    // On the function URL, as AWS's; `/run` stays OpenLambda's synchronous call.
    if http.route == Route::Fn && super::events::wants_async(&http.headers) {
        return super::events::accept(&state, &function.name, body).await;
    }
    let request_id = Uuid::new_v4();
    let payload = match (http.route, function.runtime) {
        // Node's handlers take an event only: /run gives it the JSON body.
        (Route::Run, Runtime::Node) => match check_json(&body) {
            Ok(()) if body.iter().all(u8::is_ascii_whitespace) => {
                Payload::Event(Bytes::from_static(b"{}"))
            }
            Ok(()) => Payload::Event(body),
            Err(e) => return e.into_response(),
        },
        _ => Payload::Http {
            meta: describe(&http, request_id, function.timeout_ms),
            body,
        },
    };
    let result = call::call(state, function.clone(), request_id, payload).await;
    respond(result, &name)
}

/// 405 for a method outside `triggers.http`, naming the allowed ones: JSON
/// on the function URL, text on `/run` (as OpenLambda answers).
fn method_not_allowed(name: &str, allowed: &[String], http: &HttpCall) -> Response {
    let allow = allowed.join(", ");
    match http.route {
        Route::Fn => {
            let message = format!(
                "{name} accepts {allow} (triggers.http in its ol.yaml), not {}",
                http.method
            );
            let mut error = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                message,
            );
            error.allow = Some(allow);
            error.into_response()
        }
        Route::Run => {
            // OpenLambda's words exactly: its tests compare them.
            let text = format!(
                "HTTP method not allowed. Sent: {}, Allowed: [{}]\n",
                http.method,
                allowed.join(" ")
            );
            let mut response = (StatusCode::METHOD_NOT_ALLOWED, text).into_response();
            if let Ok(allow) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            response
        }
    }
}

/// The request's description the runtime builds its event from.
fn describe(http: &HttpCall, request_id: Uuid, timeout_ms: i64) -> RequestMeta {
    RequestMeta {
        method: http.method.as_str().to_string(),
        path: http.path.clone(),
        script_name: http.script_name.clone(),
        run: http.route == Route::Run,
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

/// The body, within the size bound and the body deadline (408 past it).
async fn read_body(body: Body, deadline: std::time::Duration) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_EVENT_BYTES)
        .await
        .map_err(|e| {
            super::body_error(&e, deadline).unwrap_or_else(|| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "the request body is over 6 MiB, the largest a call takes",
                )
            })
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
                if super::guard::response_header_allowed(name.as_str(), value.as_bytes()) {
                    headers.append(name, value);
                }
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
        Failure::ResponseTooLarge(limit) => ApiError::new(
            status,
            "response_too_large",
            format!(
                "{name}'s response is larger than the limit of {limit} bytes \
                 (OL_MAX_RESPONSE_BYTES); return less, or store a large result elsewhere \
                 and return where it is"
            ),
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
