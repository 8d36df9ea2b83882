//! The one error type of the HTTP API: `{"error": {"code", "message"}}`.
//!
//! Caller mistakes get a 4xx and a message that says how to fix them.
//! Platform faults are logged in full and answered with a 5xx that gives no
//! internals away.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The exception type, for handler errors.
    pub kind: Option<String>,
    /// Seconds, for 429.
    pub retry_after: Option<u64>,
    /// Allowed methods, for 405.
    pub allow: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            kind: None,
            retry_after: None,
            allow: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn function_not_found(name: &str) -> Self {
        Self::not_found(format!(
            "no function named {name:?}; deploy it with PUT /api/v1/functions/{name}"
        ))
    }

    /// Logs the cause; the caller only learns that it was our fault.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the manager's log has the details",
        )
    }
}

impl ApiError {
    /// Postgres is away: calls of known functions still run, this does not.
    pub fn database_unreachable(error: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %error, "Postgres unreachable");
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "Postgres is unreachable, so this cannot be done now; calls of deployed \
             functions keep working. Try again when the database is back.",
        );
        e.retry_after = Some(5);
        e
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::store::is_unreachable(&e) {
            return Self::database_unreachable(e);
        }
        Self::internal(format!("database: {e}"))
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast_ref::<sqlx::Error>() {
            Some(db) if crate::store::is_unreachable(db) => {
                Self::database_unreachable(format!("{e:#}"))
            }
            _ => Self::internal(format!("{e:#}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(kind) = &self.kind {
            error["type"] = json!(kind);
        }
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self.allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            headers.insert(header::ALLOW, allow);
        }
        response
    }
}
