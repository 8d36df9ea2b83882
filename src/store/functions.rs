//! `functions` and `code_versions`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgExecutor, Postgres, Transaction};

use crate::function::FunctionSpec;
use crate::manifest::{Manifest, Network, Runtime};

/// A deployed function, as stored (the row; the call path uses
/// [`FunctionSpec`]).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Function {
    pub name: String,
    /// sha256 of the code zip.
    pub version: String,
    pub runtime: String,
    /// `module.function`.
    pub handler: String,
    pub memory_mb: i32,
    pub timeout_ms: i64,
    pub environment: Json<BTreeMap<String, String>>,
    /// Allowed methods on the function URL; `None` means any.
    pub http_methods: Option<Vec<String>>,
    /// Calls one container serves at once.
    pub concurrency: i32,
    /// Containers the function may have at once.
    pub max_concurrency: i32,
    /// Package cache directories of its code version, e.g. `six-1.16.0`.
    pub packages: Vec<String>,
    /// `internet` or `none`.
    pub network: String,
    /// Its `/tmp`, in MiB.
    pub tmp_mb: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `SELECT` of every column of `functions`, followed by `$tail`.
macro_rules! select_functions {
    ($tail:literal) => {
        concat!(
            "SELECT f.name, f.version, f.runtime, f.handler, f.memory_mb, f.timeout_ms, ",
            "f.environment, f.http_methods, f.concurrency, f.max_concurrency, c.packages, ",
            "f.network, f.tmp_mb, ",
            "f.created_at, f.updated_at ",
            "FROM functions f JOIN code_versions c ON c.sha256 = f.version ",
            $tail
        )
    };
}

impl TryFrom<Function> for FunctionSpec {
    type Error = String;

    /// Fails only for a runtime this manager does not know (a row written
    /// by a newer version).
    fn try_from(f: Function) -> Result<Self, String> {
        Ok(FunctionSpec {
            runtime: Runtime::parse(&f.runtime)
                .map_err(|e| format!("stored function {}: {e}", f.name))?,
            network: Network::parse(&f.network)
                .map_err(|e| format!("stored function {}: {e}", f.name))?,
            name: f.name,
            version: f.version,
            handler: f.handler,
            memory_mb: f.memory_mb,
            timeout_ms: f.timeout_ms,
            environment: f.environment.0,
            http_methods: f.http_methods,
            concurrency: f.concurrency,
            max_concurrency: f.max_concurrency,
            packages: f.packages,
            tmp_mb: f.tmp_mb,
        })
    }
}

/// Stores a code version (once) and points the function at it.
/// Returns the function and whether it was created (rather than updated).
pub async fn deploy(
    tx: &mut Transaction<'_, Postgres>,
    name: &str,
    sha256: &str,
    zip: &[u8],
    manifest: &Manifest,
    packages: &[String],
) -> sqlx::Result<(Function, bool)> {
    sqlx::query(
        "INSERT INTO code_versions (sha256, zip, size_bytes, packages) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(sha256)
    .bind(zip)
    .bind(zip.len() as i64)
    .bind(packages)
    .execute(&mut **tx)
    .await?;

    let row: (bool,) = sqlx::query_as(
        "INSERT INTO functions (name, version, runtime, handler, memory_mb, timeout_ms, \
                                environment, http_methods, concurrency, max_concurrency, \
                                network, tmp_mb) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (name) DO UPDATE SET \
            version = EXCLUDED.version, runtime = EXCLUDED.runtime, \
            handler = EXCLUDED.handler, memory_mb = EXCLUDED.memory_mb, \
            timeout_ms = EXCLUDED.timeout_ms, environment = EXCLUDED.environment, \
            http_methods = EXCLUDED.http_methods, concurrency = EXCLUDED.concurrency, \
            max_concurrency = EXCLUDED.max_concurrency, network = EXCLUDED.network, \
            tmp_mb = EXCLUDED.tmp_mb, updated_at = now() \
         RETURNING (xmax = 0)",
    )
    .bind(name)
    .bind(sha256)
    .bind(manifest.runtime.as_str())
    .bind(&manifest.handler)
    .bind(manifest.memory_mb as i32)
    .bind(manifest.timeout_ms as i64)
    .bind(Json(&manifest.environment))
    .bind(&manifest.http_methods)
    .bind(manifest.concurrency as i32)
    .bind(manifest.max_concurrency as i32)
    .bind(manifest.network.as_str())
    .bind(manifest.tmp_mb as i32)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query("INSERT INTO function_versions (function, version) VALUES ($1, $2)")
        .bind(name)
        .bind(sha256)
        .execute(&mut **tx)
        .await?;
    let function = get(&mut **tx, name)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok((function, row.0))
}

pub async fn get(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<Option<Function>> {
    sqlx::query_as(select_functions!("WHERE f.name = $1"))
        .bind(name)
        .fetch_optional(db)
        .await
}

pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Function>> {
    sqlx::query_as(select_functions!("ORDER BY f.name"))
        .fetch_all(db)
        .await
}

/// Changes a function's scale-out limits; returns the function, or `None`
/// when there is no such function.
pub async fn set_limits(
    db: &mut sqlx::PgConnection,
    name: &str,
    concurrency: Option<i32>,
    max_concurrency: Option<i32>,
) -> sqlx::Result<Option<Function>> {
    let updated = sqlx::query(
        "UPDATE functions SET concurrency = coalesce($2, concurrency), \
         max_concurrency = coalesce($3, max_concurrency), updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(concurrency)
    .bind(max_concurrency)
    .execute(&mut *db)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    get(&mut *db, name).await
}

/// The versions a function has been deployed with, newest first:
/// (version, deployed at, zip size).
pub async fn versions(
    db: impl PgExecutor<'_>,
    name: &str,
) -> sqlx::Result<Vec<(String, DateTime<Utc>, i64)>> {
    sqlx::query_as(
        "SELECT v.version, v.deployed_at, c.size_bytes FROM function_versions v \
         JOIN code_versions c ON c.sha256 = v.version \
         WHERE v.function = $1 ORDER BY v.deployed_at DESC LIMIT 20",
    )
    .bind(name)
    .fetch_all(db)
    .await
}

/// Per function: calls and the last call's start, for the dashboard.
pub async fn call_summary(
    db: impl PgExecutor<'_>,
) -> sqlx::Result<Vec<(String, i64, Option<DateTime<Utc>>)>> {
    sqlx::query_as(
        "SELECT f.name, count(i.request_id)::bigint, max(i.started_at) FROM functions f \
         LEFT JOIN invocations i ON i.function = f.name GROUP BY f.name",
    )
    .fetch_all(db)
    .await
}

/// Deletes a function; its code versions and records stay. Returns whether it existed.
pub async fn delete(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM functions WHERE name = $1")
        .bind(name)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The zip of a code version, for a node that has not unpacked it yet.
pub async fn code_zip(db: impl PgExecutor<'_>, sha256: &str) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT zip FROM code_versions WHERE sha256 = $1")
        .bind(sha256)
        .fetch_optional(db)
        .await
}
