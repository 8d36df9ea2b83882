//! `function_schedules` and `cron_ticks`: each function's cron schedules,
//! and one row per tick fired, whose primary key makes a tick fire once
//! over every manager.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::events::config::CronTrigger;
use crate::store::events::{enqueue, NewEvent};

/// Replaces a function's schedules (at each deploy); an unchanged schedule
/// keeps its row, so its ticks go on from where they were.
pub async fn save(
    tx: &mut sqlx::PgConnection,
    function: &str,
    triggers: &[CronTrigger],
) -> sqlx::Result<()> {
    let schedules: Vec<String> = triggers.iter().map(|t| t.schedule.clone()).collect();
    let catch_up: Vec<bool> = triggers.iter().map(|t| t.catch_up).collect();
    sqlx::query("DELETE FROM function_schedules WHERE function = $1 AND schedule <> ALL($2)")
        .bind(function)
        .bind(&schedules)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO function_schedules (function, schedule, catch_up) \
         SELECT $1, * FROM UNNEST($2::text[], $3::bool[]) \
         ON CONFLICT (function, schedule) DO UPDATE SET catch_up = EXCLUDED.catch_up",
    )
    .bind(function)
    .bind(&schedules)
    .bind(&catch_up)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A schedule and the latest tick fired for it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ScheduleRow {
    pub function: String,
    pub schedule: String,
    pub catch_up: bool,
    pub created_at: DateTime<Utc>,
    pub last_tick: Option<DateTime<Utc>>,
}

/// Every schedule, or one function's.
pub async fn all(
    db: impl PgExecutor<'_>,
    function: Option<&str>,
) -> sqlx::Result<Vec<ScheduleRow>> {
    sqlx::query_as(
        "SELECT s.function, s.schedule, s.catch_up, s.created_at, \
                (SELECT max(tick) FROM cron_ticks t \
                 WHERE t.function = s.function AND t.schedule = s.schedule) AS last_tick \
         FROM function_schedules s WHERE ($1::text IS NULL OR s.function = $1) \
         ORDER BY s.function, s.schedule",
    )
    .bind(function)
    .fetch_all(db)
    .await
}

/// Fires one tick: its row and its event in one transaction; false when
/// another manager fired it first.
pub async fn fire(
    db: &PgPool,
    function: &str,
    schedule: &str,
    tick: DateTime<Utc>,
    payload: &[u8],
) -> sqlx::Result<bool> {
    let mut tx = db.begin().await?;
    let request_id = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO cron_ticks (function, schedule, tick, request_id) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(function)
    .bind(schedule)
    .bind(tick)
    .bind(request_id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if inserted {
        let event = NewEvent {
            request_id,
            function,
            trigger: "cron",
            payload,
            origin: None,
            depth: 0,
        };
        enqueue(&mut *tx, &event).await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// A tick fired, with its event's state.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Fired {
    pub schedule: String,
    pub tick: DateTime<Utc>,
    pub request_id: Uuid,
    pub state: Option<String>,
}

/// A function's latest ticks fired, newest first.
pub async fn recent(
    db: impl PgExecutor<'_>,
    function: &str,
    limit: i64,
) -> sqlx::Result<Vec<Fired>> {
    sqlx::query_as(
        "SELECT t.schedule, t.tick, t.request_id, e.state FROM cron_ticks t \
         LEFT JOIN events e ON e.request_id = t.request_id \
         WHERE t.function = $1 ORDER BY t.tick DESC LIMIT $2",
    )
    .bind(function)
    .bind(limit)
    .fetch_all(db)
    .await
}
