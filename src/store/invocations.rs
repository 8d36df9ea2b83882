//! `invocations`: one record per call, and the billing sums over them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::meter::Usage;

/// What one call did and what it is billed.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Invocation {
    pub request_id: Uuid,
    pub function: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub billed_ms: i64,
    pub memory_mb: i32,
    /// Time to load the code on a cold start; `None` on a warm call.
    pub init_ms: Option<i64>,
    pub cold: bool,
    /// success, error, timeout, oom, crashed
    pub status: String,
    pub http_status: i32,
    /// False for calls that never reached a handler.
    pub billed: bool,
}

/// Inserts many records in one round trip; a request id already stored is
/// skipped, so writing a batch twice counts it once.
pub async fn insert_batch(db: impl PgExecutor<'_>, records: &[Invocation]) -> sqlx::Result<()> {
    fn column<T>(records: &[Invocation], f: impl Fn(&Invocation) -> T) -> Vec<T> {
        records.iter().map(f).collect()
    }
    sqlx::query(
        "INSERT INTO invocations (request_id, function, version, started_at, duration_ms, \
             billed_ms, memory_mb, init_ms, cold, status, http_status, billed) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], \
             $5::int8[], $6::int8[], $7::int4[], $8::int8[], $9::bool[], $10::text[], \
             $11::int4[], $12::bool[]) \
         ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(column(records, |r| r.request_id))
    .bind(column(records, |r| r.function.clone()))
    .bind(column(records, |r| r.version.clone()))
    .bind(column(records, |r| r.started_at))
    .bind(column(records, |r| r.duration_ms))
    .bind(column(records, |r| r.billed_ms))
    .bind(column(records, |r| r.memory_mb))
    .bind(column(records, |r| r.init_ms))
    .bind(column(records, |r| r.cold))
    .bind(column(records, |r| r.status.clone()))
    .bind(column(records, |r| r.http_status))
    .bind(column(records, |r| r.billed))
    .execute(db)
    .await?;
    Ok(())
}

/// Newest first.
pub async fn recent(
    db: impl PgExecutor<'_>,
    function: &str,
    limit: i64,
) -> sqlx::Result<Vec<Invocation>> {
    sqlx::query_as(
        "SELECT request_id, function, version, started_at, duration_ms, billed_ms, memory_mb, \
                init_ms, cold, status, http_status, billed \
         FROM invocations WHERE function = $1 ORDER BY started_at DESC LIMIT $2",
    )
    .bind(function)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Exact billing sums per function over `[from, to)`.
pub async fn usage_by_function(
    db: impl PgExecutor<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    function: Option<&str>,
) -> sqlx::Result<Vec<(String, Usage)>> {
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT function, count(*)::bigint, \
                coalesce(sum(billed_ms), 0)::bigint, \
                coalesce(sum(memory_mb::bigint * billed_ms), 0)::bigint \
         FROM invocations \
         WHERE billed AND started_at >= $1 AND started_at < $2 \
           AND ($3::text IS NULL OR function = $3) \
         GROUP BY function ORDER BY function",
    )
    .bind(from)
    .bind(to)
    .bind(function)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, invocations, billed_ms, mb_ms)| {
            (
                name,
                Usage {
                    invocations,
                    billed_ms,
                    mb_ms,
                },
            )
        })
        .collect())
}
