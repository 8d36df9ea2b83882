//! `invocations`: one record per call, and the billing sums over them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::meter::Usage;

/// What one call did and what it is billed.
#[derive(Clone, Debug, Serialize, Deserialize, sqlx::FromRow)]
pub struct Invocation {
    pub request_id: Uuid,
    pub function: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub billed_ms: i64,
    pub memory_mb: i32,
    /// Peak memory of the container during the call (from its cgroup).
    pub max_memory_used_mb: Option<i32>,
    /// Time to make the container ready on a cold start; `None` when warm.
    pub init_ms: Option<i64>,
    /// Time the call waited for a container, cold-start time excluded.
    pub wait_ms: i64,
    pub cold: bool,
    /// `crate::call::CallStatus::word`: success, error, timeout, oom, crashed,
    /// throttled, platform_error, not_found
    pub status: String,
    pub http_status: i32,
    /// False for calls that never reached a handler.
    pub billed: bool,
    /// The handler's stdout and stderr (capped), where kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
    /// What started the call: http, async, cron or destination.
    #[serde(default = "http_trigger")]
    pub trigger: String,
    /// Which attempt of its event this was (1 for a synchronous call).
    #[serde(default = "first_attempt")]
    pub attempt: i32,
    /// How the call's container was had (`crate::pool::Start`: running,
    /// paused, prewarmed, import-cache or new); `None` when it got none,
    /// and in journal lines and rows read without it (older managers).
    #[serde(default)]
    #[sqlx(default)]
    pub start: Option<String>,
}

/// The columns of a record as read back (output left out: it is read on
/// its own, by `logs`); a macro, so that queries stay literals.
macro_rules! record_columns {
    () => {
        "request_id, function, version, started_at, duration_ms, billed_ms, memory_mb, \
         max_memory_used_mb, init_ms, wait_ms, cold, status, http_status, billed, \
         NULL::text AS logs, trigger, attempt, start"
    };
}
pub(crate) use record_columns;

/// Journal lines written before records had a trigger were HTTP calls.
fn http_trigger() -> String {
    "http".into()
}

fn first_attempt() -> i32 {
    1
}

/// Inserts many records in one round trip; a request id already stored is
/// skipped (per attempt), so writing a batch twice counts it once.
pub async fn insert_batch(db: impl PgExecutor<'_>, records: &[Invocation]) -> sqlx::Result<()> {
    fn column<T>(records: &[Invocation], f: impl Fn(&Invocation) -> T) -> Vec<T> {
        records.iter().map(f).collect()
    }
    sqlx::query(
        "INSERT INTO invocations (request_id, function, version, started_at, duration_ms, \
             billed_ms, memory_mb, init_ms, cold, status, http_status, billed, \
             max_memory_used_mb, wait_ms, logs, trigger, attempt, start) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], \
             $5::int8[], $6::int8[], $7::int4[], $8::int8[], $9::bool[], $10::text[], \
             $11::int4[], $12::bool[], $13::int4[], $14::int8[], $15::text[], $16::text[], \
             $17::int4[], $18::text[]) \
         ON CONFLICT (request_id, attempt) DO NOTHING",
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
    .bind(column(records, |r| r.max_memory_used_mb))
    .bind(column(records, |r| r.wait_ms))
    .bind(column(records, |r| r.logs.clone()))
    .bind(column(records, |r| r.trigger.clone()))
    .bind(column(records, |r| r.attempt))
    .bind(column(records, |r| r.start.clone()))
    .execute(db)
    .await?;
    Ok(())
}

/// Newest first; with `before`, only calls that started before it (paging).
pub async fn recent(
    db: impl PgExecutor<'_>,
    function: &str,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> sqlx::Result<Vec<Invocation>> {
    sqlx::query_as(concat!(
        "SELECT ",
        record_columns!(),
        " FROM invocations \
         WHERE function = $1 AND ($2::timestamptz IS NULL OR started_at < $2) \
         ORDER BY started_at DESC LIMIT $3"
    ))
    .bind(function)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A call's output, as kept.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct LogEntry {
    pub request_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub status: String,
    pub logs: String,
}

/// Newest first: one call's output, or the latest calls' that printed.
pub async fn logs(
    db: impl PgExecutor<'_>,
    function: &str,
    request_id: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<LogEntry>> {
    sqlx::query_as(
        "SELECT request_id, started_at, status, logs FROM invocations \
         WHERE function = $1 AND logs IS NOT NULL AND ($2::uuid IS NULL OR request_id = $2) \
         ORDER BY started_at DESC LIMIT $3",
    )
    .bind(function)
    .bind(request_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Clears output older than `days` (the records stay, for billing).
pub async fn expire_logs(db: impl PgExecutor<'_>, days: i64) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE invocations SET logs = NULL \
         WHERE logs IS NOT NULL AND started_at < now() - make_interval(days => $1::int)",
    )
    .bind(days)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Exact billing sums per function (and per UTC day, with `by_day`) over
/// `[from, to)`, ordered by function and day.
pub async fn usage(
    db: impl PgExecutor<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    function: Option<&str>,
    by_day: bool,
) -> sqlx::Result<Vec<(String, Option<chrono::NaiveDate>, Usage)>> {
    let rows: Vec<(String, Option<chrono::NaiveDate>, i64, i64, i64)> = sqlx::query_as(
        "SELECT function, CASE WHEN $4 THEN (started_at AT TIME ZONE 'UTC')::date END AS day, \
                count(*)::bigint, coalesce(sum(billed_ms), 0)::bigint, \
                coalesce(sum(memory_mb::bigint * billed_ms), 0)::bigint \
         FROM invocations \
         WHERE billed AND started_at >= $1 AND started_at < $2 \
           AND ($3::text IS NULL OR function = $3) \
         GROUP BY function, day ORDER BY function, day",
    )
    .bind(from)
    .bind(to)
    .bind(function)
    .bind(by_day)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, day, invocations, billed_ms, mb_ms)| {
            let usage = Usage {
                invocations,
                billed_ms,
                mb_ms,
            };
            (name, day, usage)
        })
        .collect())
}
