//! Schedules: `triggers.cron` in `ol.yaml`.
//!
//! Standard five-field cron (minute hour day-of-month month day-of-week,
//! UTC, POSIX rules: Sunday is 0 or 7, and a day matches when either day
//! field does) parsed by `croner`; a leading seconds field is accepted too
//! (six fields), which the tests use for short ticks.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::schedule::Schedule;
use crate::state::AppState;
use crate::store::schedules::{self, ScheduleRow};

/// A tick older than this when a manager first sees it due counts as
/// missed (no manager ran at the time), and `missed: skip` drops it.
pub const GRACE: Duration = Duration::from_secs(30);

/// Ticks one schedule fires in one pass at most (a seconds schedule after
/// a pause of Postgres, say); the rest count as missed.
const MAX_PER_PASS: usize = 30;

/// The ticks of `schedule` to fire now, oldest first: those in
/// `(since, now]` no older than [`GRACE`], and with `catch_up` the latest
/// older one too (it fires once for all the missed ones).
pub fn due(
    schedule: &Schedule,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    catch_up: bool,
) -> Vec<DateTime<Utc>> {
    let recent_from = now - chrono::Duration::from_std(GRACE).expect("small");
    let mut ticks = Vec::new();
    if catch_up && since < recent_from {
        // The latest tick in (since, recent_from], if any; bounded walk.
        let mut latest = None;
        let mut t = since.max(now - chrono::Duration::days(7));
        for _ in 0..1_000_000 {
            match schedule.next_after(t) {
                Some(next) if next <= recent_from => {
                    latest = Some(next);
                    t = next;
                }
                _ => break,
            }
        }
        ticks.extend(latest);
    }
    let first_recent = ticks.len();
    let mut t = since.max(recent_from);
    while let Some(next) = schedule.next_after(t).filter(|n| *n <= now) {
        ticks.push(next);
        t = next;
        if ticks.len() > MAX_PER_PASS {
            ticks.remove(first_recent);
        }
    }
    ticks
}

/// The event a scheduled call gets.
pub fn event(function: &str, schedule: &str, tick: DateTime<Utc>, missed: bool) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "trigger": "cron",
        "function": function,
        "schedule": schedule,
        "tick": tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "missed": missed,
    }))
    .expect("JSON of plain values")
}

/// Fires due ticks of every schedule, once a second (`OL_CRON_POLL_MS`),
/// until the manager stops. Every manager runs it; the tick rows decide.
pub async fn run(state: AppState) {
    let mut parsed: HashMap<String, Option<Schedule>> = HashMap::new();
    let mut poll = tokio::time::interval(state.settings.events.cron_poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !state.events.stopping() {
        poll.tick().await;
        let rows = match schedules::all(&state.db, None).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cron: could not read the schedules");
                continue;
            }
        };
        let now = chrono::Utc::now();
        for row in rows {
            let schedule = parsed
                .entry(row.schedule.clone())
                .or_insert_with(|| Schedule::parse(&row.schedule).ok());
            if let Some(schedule) = schedule {
                fire_due(&state, &row, schedule, now).await;
            }
        }
    }
}

async fn fire_due(state: &AppState, row: &ScheduleRow, schedule: &Schedule, now: DateTime<Utc>) {
    let since = row.last_tick.unwrap_or(row.created_at);
    let recent_from = now - chrono::Duration::from_std(GRACE).expect("small");
    let mut fired = false;
    for tick in due(schedule, since, now, row.catch_up) {
        let payload = event(&row.function, &row.schedule, tick, tick <= recent_from);
        match schedules::fire(&state.db, &row.function, &row.schedule, tick, &payload).await {
            Ok(true) => {
                tracing::debug!(function = %row.function, schedule = %row.schedule, %tick, "cron tick fired");
                fired = true;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(function = %row.function, error = %e, "cron: could not fire a tick");
                return;
            }
        }
    }
    if fired {
        state.events.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_ticks_fire_once_and_missed_ones_follow_the_rule() {
        let s = Schedule::parse("*/10 * * * * *").unwrap();
        let now = at("2026-11-29T10:00:05Z");
        // Live: the one tick since the last.
        assert_eq!(
            due(&s, at("2026-11-29T09:59:50Z"), now, false),
            [at("2026-11-29T10:00:00Z")]
        );
        assert!(due(&s, at("2026-11-29T10:00:00Z"), now, false).is_empty());
        // Down for an hour: skip keeps only the ticks within the grace;
        // once adds the latest missed one.
        let since = at("2026-11-29T09:00:00Z");
        let recent = [
            at("2026-11-29T09:59:40Z"),
            at("2026-11-29T09:59:50Z"),
            at("2026-11-29T10:00:00Z"),
        ];
        assert_eq!(due(&s, since, now, false), recent);
        let mut with_missed = vec![at("2026-11-29T09:59:30Z")];
        with_missed.extend(recent);
        assert_eq!(due(&s, since, now, true), with_missed);
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_fields_are_standard_cron_in_utc() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(
            s.next_after(at("2026-11-29T10:02:30Z")),
            Some(at("2026-11-29T10:05:00Z"))
        );
        // 1-5 is Monday to Friday; 2026-11-29 is a Sunday.
        let weekdays = Schedule::parse("0 9 * * 1-5").unwrap();
        assert_eq!(
            weekdays.next_after(at("2026-11-29T10:00:00Z")),
            Some(at("2026-11-30T09:00:00Z"))
        );
        let seconds = Schedule::parse("*/2 * * * * *").unwrap();
        assert_eq!(
            seconds.next_after(at("2026-11-29T10:00:01Z")),
            Some(at("2026-11-29T10:00:02Z"))
        );
    }

    #[test]
    fn bad_expressions_say_how_to_fix() {
        assert!(Schedule::parse("* * *")
            .unwrap_err()
            .contains("has 3 fields"));
        assert!(Schedule::parse("61 * * * *")
            .unwrap_err()
            .contains("not a cron expression"));
    }
}
