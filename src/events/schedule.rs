//! One cron expression of `triggers.cron`: standard five fields (minute
//! hour day-of-month month day-of-week, UTC, POSIX rules) parsed by
//! `croner`, or six with a leading seconds field (the tests' short ticks).
//! No state here: `ol.yaml` checks and the pages use it too.

use chrono::{DateTime, Utc};

/// One parsed cron expression.
#[derive(Clone, Debug)]
pub struct Schedule {
    expr: String,
    cron: croner::Cron,
}

impl Schedule {
    /// Errors name the expression and say what a valid one looks like.
    pub fn parse(expr: &str) -> Result<Self, String> {
        let fields = expr.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "triggers.cron {expr:?} has {fields} fields; use five (minute hour day month \
                 weekday, UTC), e.g. \"*/5 * * * *\""
            ));
        }
        let cron = croner::Cron::new(expr)
            .with_seconds_optional()
            .parse()
            .map_err(|e| {
                format!(
                    "triggers.cron {expr:?} is not a cron expression ({e}); use five fields \
                     (minute hour day month weekday, UTC), e.g. \"*/5 * * * *\""
                )
            })?;
        Ok(Self {
            expr: expr.to_string(),
            cron,
        })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The first tick strictly after `time`.
    pub fn next_after(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&time, false).ok()
    }

    /// The next `n` ticks after `time`, for `ol info`, the API and the
    /// dashboard.
    pub fn next_ticks(&self, time: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut ticks = Vec::with_capacity(n);
        let mut t = time;
        while ticks.len() < n {
            let Some(tick) = self.next_after(t) else {
                break;
            };
            ticks.push(tick);
            t = tick;
        }
        ticks
    }
}

/// The next `n` ticks of the stored expression `expr` (none if it no longer
/// parses).
pub fn next_ticks_of(expr: &str, time: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    Schedule::parse(expr)
        .map(|s| s.next_ticks(time, n))
        .unwrap_or_default()
}
