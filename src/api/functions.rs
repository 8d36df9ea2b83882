//! `/api/v1/functions`: deploy, list, show, delete, and a function's records.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::base_url;
use super::error::ApiError;
use crate::code::{self, CodeError, MAX_ZIP_BYTES};
use crate::manifest::{in_range, FunctionName, CONCURRENCY_RANGE, MAX_CONCURRENCY_RANGE};
use crate::state::AppState;
use crate::store::functions::{self as store, Function};
use crate::store::invocations;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/functions", get(list))
        .route(
            "/functions/{name}",
            get(show).put(deploy).patch(set_limits).delete(delete),
        )
        .route("/functions/{name}/invocations", get(recent_invocations))
        .route("/functions/{name}/logs", get(call_logs))
}

/// A function as the API shows it.
#[derive(Serialize)]
struct FunctionView {
    name: String,
    version: String,
    runtime: String,
    handler: String,
    memory_mb: i32,
    timeout_ms: i64,
    environment: serde_json::Value,
    http_methods: Option<Vec<String>>,
    concurrency: i32,
    max_concurrency: i32,
    /// `internet` or `none` (`network` in `ol.yaml`).
    network: String,
    /// Its writable `/tmp`, in MiB.
    tmp_mb: i32,
    url: String,
    /// Package cache directories of its version, e.g. `six-1.16.0`.
    installed_packages: Vec<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

impl FunctionView {
    fn new(f: Function, base: &str) -> Self {
        Self {
            url: format!("{base}/fn/{}", f.name),
            environment: json!(f.environment.0),
            name: f.name,
            version: f.version,
            runtime: f.runtime,
            handler: f.handler,
            memory_mb: f.memory_mb,
            timeout_ms: f.timeout_ms,
            http_methods: f.http_methods,
            concurrency: f.concurrency,
            max_concurrency: f.max_concurrency,
            network: f.network,
            tmp_mb: f.tmp_mb,
            installed_packages: f.packages,
            created_at: f.created_at,
            updated_at: f.updated_at,
        }
    }
}

fn parse_name(raw: &str) -> Result<FunctionName, ApiError> {
    FunctionName::parse(raw).map_err(|m| ApiError::bad_request("invalid_name", m))
}

async fn deploy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let name = parse_name(&name)?;
    let zip = axum::body::to_bytes(body, MAX_ZIP_BYTES)
        .await
        .map_err(|e| {
            if let Some(late) = super::body_error(&e, state.settings.body_timeout) {
                return late;
            }
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the zip is over 50 MiB; leave out what the handler does not need \
                 (tests, caches, large data files)",
            )
        })?;
    if zip.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the body is empty; send the zip as the body, e.g. \
             curl -X PUT --data-binary @hello.zip -H 'Content-Type: application/zip' ...",
        ));
    }

    // Every check runs in memory before anything is written.
    let max_entries = state.settings.packages.zip_max_entries;
    let limits = state.settings.packages.limits;
    let (zip, inspected) = tokio::task::spawn_blocking(move || {
        let inspected = code::inspect_upload(&zip, max_entries, &limits);
        (zip, inspected)
    })
    .await
    .map_err(ApiError::internal)?;
    let inspected = inspected.map_err(|e| {
        let code = match e {
            CodeError::NotZip(_) => "not_a_zip",
            CodeError::TooLarge(_) | CodeError::TooLargeUnzipped(_) => "too_large",
            CodeError::AbsolutePath(_) | CodeError::ParentDir(_) | CodeError::Symlink(_) => {
                "unsafe_path"
            }
            CodeError::BadEntry(..) | CodeError::Damaged(..) => "bad_zip_entry",
            CodeError::TooManyEntries { .. } => "too_many_entries",
            CodeError::Compression { .. } | CodeError::Encrypted(_) => "unsupported_zip",
            CodeError::Clash(_) => "name_clash",
            CodeError::NoHandler { .. } => "handler_not_found",
            CodeError::Manifest(_) => "invalid_manifest",
        };
        let status = match e {
            CodeError::TooLarge(_) | CodeError::TooLargeUnzipped(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, code, e.to_string())
    })?;

    // Packages: resolved and installed before anything of this deploy is
    // stored; a failure stores nothing.
    let python = inspected.manifest.runtime == crate::manifest::Runtime::Python;
    let resolved = match inspected.requirements.as_ref().filter(|_| python) {
        None => crate::packages::Resolved::default(),
        Some(requirements) => state
            .installer
            .install(name.as_str(), requirements)
            .await
            .map_err(|e| match e.status_and_code() {
                (500, _) => ApiError::internal(e),
                (status, code) => ApiError::new(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
                    code,
                    e.to_string(),
                ),
            })?,
    };

    let store_code = state.code.clone();
    let (zip, inspected, created_dir) = tokio::task::spawn_blocking(move || {
        let created = store_code.unpack(&zip, &inspected);
        (zip, inspected, created)
    })
    .await
    .map_err(ApiError::internal)?;
    let created_dir = created_dir?;

    let stored = async {
        let mut tx = state.db.begin().await?;
        let result = store::deploy(
            &mut tx,
            name.as_str(),
            &inspected.sha256,
            &zip,
            &inspected.manifest,
            &resolved.dirs,
        )
        .await?;
        crate::store::access::put(&mut *tx, name.as_str(), &access_of(&inspected.manifest)).await?;
        let events = &inspected.manifest.events;
        crate::store::events::save_settings(&mut tx, name.as_str(), events).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(result)
    }
    .await;
    let (function, created) = match stored {
        Ok(done) => done,
        Err(e) => {
            // Nothing half-stored: take back the directory this deploy made.
            if created_dir {
                state.code.remove(&inspected.sha256);
            }
            return Err(e.into());
        }
    };
    state.catalog.invalidate(name.as_str());
    state.guard.invalidate(name.as_str());
    // Containers of the old version go; the next call starts the new one.
    state.pool.retire(name.as_str());
    let action = if created { "deploy" } else { "update" };
    caller
        .audit(
            &state,
            action,
            Some(name.as_str()),
            json!({ "version": function.version, "runtime": function.runtime,
                    "auth": inspected.manifest.auth, "rate_limit": inspected.manifest.rate_limit }),
        )
        .await;
    tracing::info!(function = %name, version = %function.version, created, "deployed");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut view = serde_json::to_value(FunctionView::new(function, &base_url(&headers, &state)))
        .map_err(ApiError::internal)?;
    // What the deploy did about packages, step by step.
    view["packages"] = json!(resolved.steps);
    view["packages_ms"] = json!(resolved.ms);
    view["packages_resolution"] = json!(resolved.resolution);
    view["auth"] = json!(inspected.manifest.auth);
    view["rate_limit"] = json!(inspected.manifest.rate_limit);
    Ok((status, Json(view)))
}

/// The access settings a manifest asks for.
fn access_of(m: &crate::manifest::Manifest) -> crate::store::access::Access {
    crate::store::access::Access {
        auth: m.auth.to_string(),
        rate_per_s: m.rate_limit.map(|r| r.per_second),
        rate_burst: m.rate_limit.and_then(|r| r.burst).map(|b| b as i32),
    }
}

/// A function's view with its access settings.
async fn with_access(
    state: &AppState,
    view: FunctionView,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = crate::store::access::get(&state.db, &view.name).await?;
    let mut value = serde_json::to_value(view).map_err(ApiError::internal)?;
    value["auth"] = json!(access.auth);
    value["rate_limit"] = match access.rate_per_s {
        Some(rate) => json!({ "per_second": rate, "burst": access.rate_burst }),
        None => serde_json::Value::Null,
    };
    Ok(Json(value))
}

async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let base = base_url(&headers, &state);
    let functions: Vec<_> = store::list(&state.db)
        .await?
        .into_iter()
        .map(|f| FunctionView::new(f, &base))
        .collect();
    Ok(Json(json!({ "functions": functions })))
}

async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_name(&name)?;
    let function = store::get(&state.db, name.as_str())
        .await?
        .ok_or_else(|| ApiError::function_not_found(name.as_str()))?;
    with_access(
        &state,
        FunctionView::new(function, &base_url(&headers, &state)),
    )
    .await
}

async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    if !store::delete(&state.db, name.as_str()).await? {
        return Err(ApiError::function_not_found(name.as_str()));
    }
    crate::store::access::remove(&state.db, name.as_str()).await?;
    caller
        .audit(&state, "delete", Some(name.as_str()), json!({}))
        .await;
    state.catalog.invalidate(name.as_str());
    state.guard.invalidate(name.as_str());
    state.pool.retire(name.as_str());
    tracing::info!(function = %name, "deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH` body: the scale-out limits and the URL's access settings, the
/// settings that may change without a new code version.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    concurrency: Option<u32>,
    max_concurrency: Option<u32>,
    auth: Option<String>,
    /// `null` removes the limit.
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<crate::manifest::RateLimit>>,
}

/// Tells a key given as `null` (`Some(None)`) from a key left out (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

async fn set_limits(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_name(&name)?;
    let limits: Limits = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!(
                "expected JSON like {{\"max_concurrency\": 10, \"concurrency\": 1, \
                 \"auth\": \"key\", \"rate_limit\": {{\"per_second\": 5, \"burst\": 10}}}}: {e}"
            ),
        )
    })?;
    let check = |key, value: Option<u32>, range| {
        value
            .map(|v| in_range(key, v, range).map(|v| v as i32))
            .transpose()
            .map_err(|m| ApiError::bad_request("out_of_range", m))
    };
    let concurrency = check("concurrency", limits.concurrency, &CONCURRENCY_RANGE)?;
    let max_concurrency = check(
        "max_concurrency",
        limits.max_concurrency,
        &MAX_CONCURRENCY_RANGE,
    )?;
    let auth = limits
        .auth
        .as_deref()
        .map(crate::manifest::parse_auth)
        .transpose()
        .map_err(|m| ApiError::bad_request("invalid_auth", m))?;
    let rate_limit = limits
        .rate_limit
        .map(|r| r.map(crate::manifest::RateLimit::checked).transpose())
        .transpose()
        .map_err(|m| ApiError::bad_request("out_of_range", m))?;
    let mut db = state.db.acquire().await?;
    let function = store::set_limits(&mut db, name.as_str(), concurrency, max_concurrency)
        .await?
        .ok_or_else(|| ApiError::function_not_found(name.as_str()))?;
    if auth.is_some() || rate_limit.is_some() {
        let mut access = crate::store::access::get(&mut *db, name.as_str()).await?;
        if let Some(auth) = auth {
            access.auth = auth.to_string();
        }
        if let Some(limit) = rate_limit {
            access.rate_per_s = limit.map(|r| r.per_second);
            access.rate_burst = limit.and_then(|r| r.burst).map(|b| b as i32);
        }
        crate::store::access::put(&mut *db, name.as_str(), &access).await?;
    }
    state.catalog.invalidate(name.as_str());
    state.guard.invalidate(name.as_str());
    caller
        .audit(
            &state,
            "patch",
            Some(name.as_str()),
            serde_json::from_slice(&body).unwrap_or_default(),
        )
        .await;
    with_access(
        &state,
        FunctionView::new(function, &base_url(&headers, &state)),
    )
    .await
}

#[derive(Deserialize)]
struct RecentQuery {
    limit: Option<String>,
    /// Only calls that started before this (RFC 3339): the next page.
    before: Option<String>,
    /// `csv` for CSV (the page's records, no paging link); JSON otherwise.
    format: Option<String>,
}

/// `limit=N`, 1 to 1000 (default 20). Taken as text, so that a bad value
/// gets the API's JSON error rather than the extractor's.
pub(super) fn parse_limit(raw: Option<&str>) -> Result<i64, ApiError> {
    let limit = match raw.filter(|l| !l.is_empty()) {
        None => 20,
        Some(raw) => raw.parse::<i64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_limit",
                format!("limit={raw:?} is not a number; use 1 to 1000"),
            )
        })?,
    };
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit={limit} is out of range; use 1 to 1000"),
        ));
    }
    Ok(limit)
}

async fn recent_invocations(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<RecentQuery>,
) -> Result<axum::response::Response, ApiError> {
    let name = parse_name(&name)?;
    let limit = parse_limit(query.limit.as_deref())?;
    let csv = match query.format.as_deref() {
        None | Some("") | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_format",
                format!("format={other:?} is not known; use format=csv, or leave it out for JSON"),
            ))
        }
    };
    let before = match query.before.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(
            chrono::DateTime::parse_from_rfc3339(raw)
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_before",
                        format!(
                            "before={raw:?} is not a time; pass the next_before of the previous page \
                             (RFC 3339, e.g. 2026-11-28T12:00:00Z)"
                        ),
                    )
                })?
                .with_timezone(&chrono::Utc),
        ),
    };
    let records = invocations::recent(&state.db, name.as_str(), before, limit).await?;
    if csv {
        return Ok(super::records::csv_response(&records));
    }
    // A full page may have more behind it.
    let next_before = (records.len() as i64 == limit)
        .then(|| records.last().map(|r| r.started_at.to_rfc3339()))
        .flatten();
    Ok(Json(json!({ "invocations": records, "next_before": next_before })).into_response())
}

#[derive(Deserialize)]
struct LogsQuery {
    request_id: Option<String>,
    limit: Option<String>,
}

/// What calls printed, newest first: `{"logs": [{request_id, started_at, status, logs}]}`.
async fn call_logs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_name(&name)?;
    let limit = parse_limit(query.limit.as_deref())?;
    let request_id = match query.request_id.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(uuid::Uuid::parse_str(raw).map_err(|_| {
            ApiError::bad_request(
                "invalid_request_id",
                format!("request_id={raw:?} is not a request id; use the x-request-id of a call"),
            )
        })?),
    };
    let logs = invocations::logs(&state.db, name.as_str(), request_id, limit).await?;
    Ok(Json(json!({ "logs": logs })))
}
