//! `/api/v1/keys` (management keys, admin only) and
//! `/api/v1/functions/{name}/keys` (invoke keys of an `auth: key` function).
//! A key's secret is shown once, in the answer that creates it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Caller, ADMIN_TOKEN_KEY, FIRST_ADMIN_KEY};
use super::error::ApiError;
use crate::manifest::FunctionName;
use crate::state::AppState;
use crate::store::keys;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/keys", post(create).get(list))
        .route("/keys/{name}", delete(revoke))
        .route("/functions/{name}/keys", post(create_invoke_key))
        .route("/functions/{name}/keys/{id}", delete(revoke_invoke_key))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    scopes: Vec<String>,
    prefix: Option<String>,
}

const SCOPES: [&str; 3] = ["admin", "deploy", "read"];

/// Checks a new key's name, scopes and prefix.
fn validate(key: &NewKey) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_key", m);
    let name_ok = !key.name.is_empty()
        && key.name.len() <= 64
        && key
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        return Err(bad(format!(
            "key name {:?}: use 1 to 64 lowercase letters, digits, '-' or '_'",
            key.name
        )));
    }
    if [ADMIN_TOKEN_KEY, FIRST_ADMIN_KEY].contains(&key.name.as_str()) {
        return Err(bad(format!(
            "the key name {:?} is the manager's own (OL_ADMIN_TOKEN, or the first admin key); \
             pick another",
            key.name
        )));
    }
    if key.scopes.is_empty() {
        return Err(bad("give at least one scope: admin, deploy or read".into()));
    }
    if let Some(s) = key.scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(bad(format!(
            "scope {s:?} does not exist; use admin, deploy or read"
        )));
    }
    if key.prefix.is_some() && !key.scopes.iter().any(|s| s == "deploy") {
        return Err(bad(
            "prefix limits the deploy scope; give --scope deploy with it".into(),
        ));
    }
    if key.prefix.is_some() && key.scopes.iter().any(|s| s == "admin") {
        return Err(bad(
            "an admin key may change every function; a prefix would not limit it".into(),
        ));
    }
    Ok(())
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let key: NewKey = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!(
                "expected JSON like {{\"name\": \"ci\", \"scopes\": [\"deploy\"], \
                 \"prefix\": \"team-\"}}: {e}"
            ),
        )
    })?;
    validate(&key)?;
    let secret = keys::new_secret();
    let prefix = key.prefix.as_deref().filter(|p| !p.is_empty());
    if !keys::create(&state.db, &key.name, &secret, &key.scopes, prefix).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "key_exists",
            format!(
                "a key named {:?} exists; revoke it first (DELETE /api/v1/keys/{}) or pick \
                 another name",
                key.name, key.name
            ),
        ));
    }
    caller
        .audit(
            &state,
            "key_created",
            None,
            json!({ "name": key.name, "scopes": key.scopes, "prefix": prefix }),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": key.name, "scopes": key.scopes, "prefix": prefix, "key": secret })),
    ))
}

async fn list(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!({ "keys": keys::list(&state.db).await? })))
}

async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !keys::revoke(&state.db, &name).await? {
        return Err(ApiError::not_found(format!(
            "no key named {name:?}; GET /api/v1/keys lists them"
        )));
    }
    caller
        .audit(&state, "key_revoked", None, json!({ "name": name }))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

async fn existing_function(state: &AppState, raw: &str) -> Result<FunctionName, ApiError> {
    let name = FunctionName::parse(raw).map_err(|m| ApiError::bad_request("invalid_name", m))?;
    if crate::store::functions::get(&state.db, name.as_str())
        .await?
        .is_none()
    {
        return Err(ApiError::function_not_found(name.as_str()));
    }
    Ok(name)
}

async fn create_invoke_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let name = existing_function(&state, &name).await?;
    let (id, secret) = keys::create_invoke_key(&state.db, name.as_str()).await?;
    caller
        .audit(
            &state,
            "invoke_key_created",
            Some(name.as_str()),
            json!({ "id": id }),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "key": secret })),
    ))
}

async fn revoke_invoke_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = uuid::Uuid::parse_str(&id).map_err(|_| {
        ApiError::bad_request(
            "invalid_id",
            format!("{id:?} is not an invoke key id; use the id its creation answered"),
        )
    })?;
    if !keys::revoke_invoke_key(&state.db, &name, id).await? {
        return Err(ApiError::not_found(format!(
            "{name} has no invoke key {id}"
        )));
    }
    caller
        .audit(
            &state,
            "invoke_key_revoked",
            Some(&name),
            json!({ "id": id }),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}
