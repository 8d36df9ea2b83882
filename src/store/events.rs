//! `events` (the durable async queue) and `function_events` (each
//! function's event settings).
//!
//! The queue's guarantees live in these statements: a claim takes a row
//! with `FOR UPDATE SKIP LOCKED` under the function's settings row lock (so
//! the async concurrency holds over every manager), sets a lease its owner
//! renews, and counts an attempt; an outcome is written only by the owner
//! of that very attempt, in one transaction with any destination event it
//! causes. A succeeded or failed row is never claimed again.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor, PgPool};
use std::time::Duration;
use uuid::Uuid;

use crate::events::EventSettings;
use crate::meter::Usage;
use crate::store::invocations::Invocation;

/// Stores a function's event settings and schedules (at each deploy, in
/// its transaction).
pub async fn save_settings(
    db: &mut PgConnection,
    function: &str,
    s: &EventSettings,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO function_events (function, concurrency, retries, max_age_s, on_success, \
             on_failure) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (function) DO UPDATE SET concurrency = $2, retries = $3, max_age_s = $4, \
             on_success = $5, on_failure = $6",
    )
    .bind(function)
    .bind(s.concurrency as i32)
    .bind(s.retries as i32)
    .bind(s.max_age_s as i32)
    .bind(s.on_success.as_ref().map(|n| n.as_str()))
    .bind(s.on_failure.as_ref().map(|n| n.as_str()))
    .execute(&mut *db)
    .await?;
    crate::store::schedules::save(db, function, &s.cron).await
}

/// A new event to queue.
#[derive(Clone, Debug)]
pub struct NewEvent<'a> {
    pub request_id: Uuid,
    pub function: &'a str,
    /// async, cron or destination.
    pub trigger: &'a str,
    /// The handler's event, JSON.
    pub payload: &'a [u8],
    pub origin: Option<Uuid>,
    pub depth: i32,
}

pub async fn enqueue(db: impl PgExecutor<'_>, e: &NewEvent<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO events (request_id, function, trigger, payload, origin, depth) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(e.request_id)
    .bind(e.function)
    .bind(e.trigger)
    .bind(e.payload)
    .bind(e.origin)
    .bind(e.depth)
    .execute(db)
    .await?;
    Ok(())
}

/// Functions with an event to claim now: queued and due, or running under
/// a lease that ran out (its manager died or lost Postgres).
pub async fn ready_functions(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT DISTINCT function FROM events \
         WHERE (state = 'queued' AND run_after <= now()) \
            OR (state = 'running' AND lease_until <= now())",
    )
    .fetch_all(db)
    .await
}

/// An attempt this manager now owns.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Claimed {
    pub request_id: Uuid,
    pub function: String,
    pub trigger: String,
    pub payload: Vec<u8>,
    /// This attempt's number (1 for the first).
    pub attempts: i32,
    pub depth: i32,
}

/// What a claim also found: events that waited past their maximum age,
/// now failed (their `on_failure` destination is due).
pub struct Claim {
    pub claimed: Vec<Claimed>,
    pub expired: usize,
}

/// Claims up to `max` due events of `function`, never more than its async
/// concurrency running at once (leases still live count, whoever holds
/// them). Events past their maximum age fail here, unrun.
pub async fn claim(
    db: &PgPool,
    function: &str,
    owner: Uuid,
    lease: Duration,
    max: i64,
) -> sqlx::Result<Claim> {
    let mut tx = db.begin().await?;
    // Serialises claims of this function over every manager.
    let settings: Option<(i32, i32)> = sqlx::query_as(
        "SELECT concurrency, max_age_s FROM function_events WHERE function = $1 FOR UPDATE",
    )
    .bind(function)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((concurrency, max_age_s)) = settings else {
        // The function was deleted: its waiting events cannot run.
        let error = error_json(
            "function_not_found",
            &format!("function {function} was deleted before its event ran"),
        );
        let gone = fail_waiting(&mut tx, function, None, &error).await?;
        tx.commit().await?;
        return Ok(Claim {
            claimed: Vec::new(),
            expired: gone,
        });
    };
    let error = error_json(
        "expired",
        &format!(
            "the event waited longer than {function}'s async.max_age_s of {max_age_s} s \
             and was not run; raise it or async.concurrency, or re-drive the event"
        ),
    );
    let expired = fail_waiting(&mut tx, function, Some(max_age_s), &error).await?;
    let running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events \
         WHERE function = $1 AND state = 'running' AND lease_until > now()",
    )
    .bind(function)
    .fetch_one(&mut *tx)
    .await?;
    let room = (i64::from(concurrency) - running).min(max);
    let claimed = if room <= 0 {
        Vec::new()
    } else {
        sqlx::query_as(
            "UPDATE events SET state = 'running', attempts = attempts + 1, owner = $2, \
                 lease_until = now() + make_interval(secs => $3), updated_at = now() \
             WHERE request_id IN (SELECT request_id FROM events \
                 WHERE function = $1 AND ((state = 'queued' AND run_after <= now()) \
                     OR (state = 'running' AND lease_until <= now())) \
                 ORDER BY run_after, created_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING request_id, function, trigger, payload, attempts, depth",
        )
        .bind(function)
        .bind(owner)
        .bind(lease.as_secs_f64())
        .bind(room)
        .fetch_all(&mut *tx)
        .await?
    };
    tx.commit().await?;
    Ok(Claim { claimed, expired })
}

/// Fails the function's waiting events queued more than `max_age_s` ago
/// (all of them with `None`).
async fn fail_waiting(
    tx: &mut PgConnection,
    function: &str,
    max_age_s: Option<i32>,
    error: &serde_json::Value,
) -> sqlx::Result<usize> {
    let rows: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE events SET state = 'failed', error = $2, owner = NULL, lease_until = NULL, \
             updated_at = now() \
         WHERE function = $1 AND state = 'queued' \
           AND ($3::int IS NULL OR enqueued_at < now() - make_interval(secs => $3::int)) \
         RETURNING request_id",
    )
    .bind(function)
    .bind(error)
    .bind(max_age_s)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.len())
}

/// `{"code", "message"}`, the shape of an event's error.
pub fn error_json(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({ "code": code, "message": message })
}

/// Extends the lease of an attempt this manager still owns; false when it
/// lost it (another manager may be running the event again).
pub async fn renew(
    db: impl PgExecutor<'_>,
    c: &Claimed,
    owner: Uuid,
    lease: Duration,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE events SET lease_until = now() + make_interval(secs => $4) \
         WHERE request_id = $1 AND owner = $2 AND attempts = $3 AND state = 'running'",
    )
    .bind(c.request_id)
    .bind(owner)
    .bind(c.attempts)
    .bind(lease.as_secs_f64())
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How an attempt ended, for the queue.
#[derive(Clone, Debug)]
pub enum Finish {
    Succeeded(serde_json::Value),
    /// The handler failed; retried after `backoff` unless its retries are
    /// spent.
    Failed {
        error: serde_json::Value,
        backoff: Duration,
    },
    /// The attempt never started (the manager is stopping, or the function
    /// is throttled): back in the queue, not counted.
    NotStarted(Duration),
}

/// What [`finish`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finished {
    /// Another manager owns the event now (this attempt's lease ran out).
    LeaseLost,
    Succeeded,
    Retrying,
    Requeued,
    /// Failed for good.
    Failed,
}

/// Writes an attempt's outcome, in one transaction with the destination
/// event it causes (`destination` builds its payload; `None` sends none),
/// so a succeeded event is marked once and its destination queued once.
pub async fn finish(
    db: &PgPool,
    c: &Claimed,
    owner: Uuid,
    finish: &Finish,
    destination: impl FnOnce(&Finish) -> Option<Vec<u8>>,
) -> sqlx::Result<Finished> {
    let mut tx = db.begin().await?;
    let owned: Option<(i32,)> = sqlx::query_as(
        "SELECT attempt_base FROM events \
         WHERE request_id = $1 AND owner = $2 AND attempts = $3 AND state = 'running' FOR UPDATE",
    )
    .bind(c.request_id)
    .bind(owner)
    .bind(c.attempts)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((base,)) = owned else {
        return Ok(Finished::LeaseLost);
    };
    let settings: Option<(i32, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT retries, on_success, on_failure FROM function_events WHERE function = $1",
    )
    .bind(&c.function)
    .fetch_optional(&mut *tx)
    .await?;
    let (retries, on_success, on_failure) = settings.unwrap_or((0, None, None));
    let (state, delay, result, error, uncount, outcome, target) = match finish {
        Finish::Succeeded(result) => (
            "succeeded",
            Duration::ZERO,
            Some(result.clone()),
            None,
            0,
            Finished::Succeeded,
            on_success,
        ),
        Finish::Failed { error, backoff } if c.attempts - base <= retries => (
            "queued",
            *backoff,
            None,
            Some(error.clone()),
            0,
            Finished::Retrying,
            None,
        ),
        Finish::Failed { error, .. } => (
            "failed",
            Duration::ZERO,
            None,
            Some(error.clone()),
            0,
            Finished::Failed,
            on_failure,
        ),
        Finish::NotStarted(delay) => ("queued", *delay, None, None, 1, Finished::Requeued, None),
    };
    sqlx::query(
        "UPDATE events SET state = $6, owner = NULL, lease_until = NULL, \
             updated_at = now(), run_after = now() + make_interval(secs => $2), \
             result = $3, error = $4, attempts = attempts - $5 \
         WHERE request_id = $1",
    )
    .bind(c.request_id)
    .bind(delay.as_secs_f64())
    .bind(result)
    .bind(error)
    .bind(uncount)
    .bind(state)
    .execute(&mut *tx)
    .await?;
    if let Some(target) = target {
        if let Some(payload) = destination(finish) {
            enqueue(
                &mut *tx,
                &NewEvent {
                    request_id: Uuid::new_v4(),
                    function: &target,
                    trigger: "destination",
                    payload: &payload,
                    origin: Some(c.request_id),
                    depth: c.depth + 1,
                },
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(outcome)
}

/// An event as `GET /api/v1/invocations/{id}` shows it.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct EventView {
    pub request_id: Uuid,
    pub function: String,
    pub trigger: String,
    pub state: String,
    pub attempts: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When a queued event runs next (its backoff).
    pub run_after: DateTime<Utc>,
}

pub async fn get(db: impl PgExecutor<'_>, request_id: Uuid) -> sqlx::Result<Option<EventView>> {
    sqlx::query_as(
        "SELECT request_id, function, trigger, state, attempts, result, error, origin, \
                created_at, updated_at, run_after \
         FROM events WHERE request_id = $1",
    )
    .bind(request_id)
    .fetch_optional(db)
    .await
}

/// Queues a failed event again with its retries afresh and its age reset;
/// `None` when there is no such event, else the state it was in (only a
/// failed one is re-driven).
pub async fn redrive(db: impl PgExecutor<'_>, request_id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "WITH old AS (SELECT request_id, state FROM events WHERE request_id = $1 FOR UPDATE) \
         UPDATE events e SET state = CASE WHEN old.state = 'failed' THEN 'queued' ELSE e.state END, \
             attempt_base = CASE WHEN old.state = 'failed' THEN e.attempts ELSE e.attempt_base END, \
             enqueued_at = CASE WHEN old.state = 'failed' THEN now() ELSE e.enqueued_at END, \
             run_after = CASE WHEN old.state = 'failed' THEN now() ELSE e.run_after END, \
             updated_at = now() \
         FROM old WHERE e.request_id = old.request_id RETURNING old.state",
    )
    .bind(request_id)
    .fetch_optional(db)
    .await
}

/// The records of an event's attempts, first attempt first.
pub async fn records(db: impl PgExecutor<'_>, request_id: Uuid) -> sqlx::Result<Vec<Invocation>> {
    sqlx::query_as(concat!(
        "SELECT ",
        crate::store::invocations::record_columns!(),
        " FROM invocations WHERE request_id = $1 ORDER BY attempt"
    ))
    .bind(request_id)
    .fetch_all(db)
    .await
}

/// Exact billing sums per function and trigger over `[from, to)`, ordered
/// by function and trigger (`GET /api/v1/billing?group=trigger`).
pub async fn usage_by_trigger(
    db: impl PgExecutor<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    function: Option<&str>,
) -> sqlx::Result<Vec<(String, String, Usage)>> {
    let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT function, trigger, count(*)::bigint, coalesce(sum(billed_ms), 0)::bigint, \
                coalesce(sum(memory_mb::bigint * billed_ms), 0)::bigint \
         FROM invocations \
         WHERE billed AND started_at >= $1 AND started_at < $2 \
           AND ($3::text IS NULL OR function = $3) \
         GROUP BY function, trigger ORDER BY function, trigger",
    )
    .bind(from)
    .bind(to)
    .bind(function)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, trigger, invocations, billed_ms, mb_ms)| {
            let usage = Usage {
                invocations,
                billed_ms,
                mb_ms,
            };
            (name, trigger, usage)
        })
        .collect())
}
