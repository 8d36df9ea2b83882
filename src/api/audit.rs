//! `GET /api/v1/audit?function=NAME&limit=N` (1 to 1000, default 20):
//! management changes, newest first.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/audit", get(list))
}

#[derive(Deserialize)]
struct AuditQuery {
    function: Option<String>,
    limit: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = super::functions::parse_limit(query.limit.as_deref())?;
    let function = query.function.as_deref().filter(|f| !f.is_empty());
    let entries = crate::store::audit::recent(&state.db, function, limit).await?;
    Ok(Json(json!({ "entries": entries })))
}
