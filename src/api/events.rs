//! Async calls over the API: queue one (`POST /api/v1/functions/{name}/invocations`,
//! or `X-Ol-Invocation-Type: Event` on a function URL), see one
//! (`GET /api/v1/invocations/{id}`), re-drive a failed one
//! (`POST /api/v1/invocations/{id}/retry`).

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use uuid::Uuid;

use super::error::ApiError;
use crate::events::MAX_EVENT_BYTES;
use crate::state::AppState;
use crate::store::events::{self as store, NewEvent};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/functions/{name}/invocations", post(invoke_async))
        .route("/invocations/{request_id}", get(show))
        .route("/invocations/{request_id}/retry", post(retry))
        .route("/functions/{name}/schedules", get(schedules))
}

/// A function's schedules with their next ticks, and the latest ticks
/// fired with their events' states:
/// `{"schedules": [{"schedule", "missed", "next": [...]}], "fired": [...]}`.
async fn schedules(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if state.catalog.get(&name).await?.is_none() {
        return Err(ApiError::function_not_found(&name));
    }
    let rows = crate::store::schedules::all(&state.db, Some(&name)).await?;
    let now = chrono::Utc::now();
    let schedules: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let next = crate::events::schedule::next_ticks_of(&row.schedule, now, 3);
            json!({
                "schedule": row.schedule,
                "missed": if row.catch_up { "once" } else { "skip" },
                "last_tick": row.last_tick,
                "next": next,
            })
        })
        .collect();
    let fired = crate::store::schedules::recent(&state.db, &name, 10).await?;
    Ok(Json(json!({ "schedules": schedules, "fired": fired })))
}

/// Whether a function-URL call asks to be queued.
pub fn wants_async(headers: &HeaderMap) -> bool {
    headers
        .get("x-ol-invocation-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("event"))
}

async fn invoke_async(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    let body = match axum::body::to_bytes(body, MAX_EVENT_BYTES).await {
        Ok(body) => body,
        Err(_) => return too_large().into_response(),
    };
    match state.catalog.get(&name).await {
        Ok(Some(function)) => accept(&state, &function.name, body).await,
        Ok(None) => ApiError::function_not_found(&name).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!(
            "an async event is at most {} KiB; send a reference to larger data instead",
            MAX_EVENT_BYTES / 1024
        ),
    )
}

/// Queues `body` as an async event of `function` (which exists) and
/// answers 202 `{"request_id"}` with `x-request-id`.
pub async fn accept(state: &AppState, function: &str, body: Bytes) -> Response {
    if body.len() > MAX_EVENT_BYTES {
        return too_large().into_response();
    }
    let event: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        &body
    };
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(event) {
        return ApiError::bad_request(
            "invalid_event",
            format!("an async call's body must be JSON (it is the handler's event): {e}"),
        )
        .into_response();
    }
    let request_id = Uuid::new_v4();
    let new = NewEvent {
        request_id,
        function,
        trigger: "async",
        payload: event,
        origin: None,
        depth: 0,
    };
    if let Err(e) = store::enqueue(&state.db, &new).await {
        return ApiError::from(e).into_response();
    }
    state.events.wake();
    accepted(request_id, json!({ "request_id": request_id }))
}

fn accepted(request_id: Uuid, body: serde_json::Value) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(id) = HeaderValue::from_str(&request_id.to_string()) {
        response.headers_mut().insert("x-request-id", id);
    }
    response
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::bad_request(
            "invalid_request_id",
            format!("{raw:?} is not a request id; use the request_id an async call answered"),
        )
    })
}

fn no_event(id: Uuid) -> ApiError {
    ApiError::not_found(format!(
        "no async invocation {id}; a synchronous call's record is under \
         GET /api/v1/functions/NAME/invocations"
    ))
}

/// `{"request_id", "function", "trigger", "state", "attempts", "result" |
/// "error", "records": [...], ...}`.
async fn show(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&raw)?;
    let event = store::get(&state.db, id)
        .await?
        .ok_or_else(|| no_event(id))?;
    let records = store::records(&state.db, id).await?;
    let mut view = serde_json::to_value(event).map_err(ApiError::internal)?;
    view["records"] = json!(records);
    Ok(Json(view))
}

/// Queues a failed event again, retries afresh: 202, or 409 when it has
/// not failed.
async fn retry(State(state): State<AppState>, Path(raw): Path<String>) -> Response {
    let id = match parse_id(&raw) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    match store::redrive(&state.db, id).await {
        Ok(None) => no_event(id).into_response(),
        Ok(Some(was)) if was == "failed" => {
            state.events.wake();
            accepted(id, json!({ "request_id": id, "state": "queued" }))
        }
        Ok(Some(was)) => ApiError::new(
            StatusCode::CONFLICT,
            "not_failed",
            format!("invocation {id} is {was}; only a failed one can be re-driven"),
        )
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
