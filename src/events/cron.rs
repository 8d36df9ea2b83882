//! Schedules: `triggers.cron` in `ol.yaml`.
//!
//! Standard five-field cron (minute hour day-of-month month day-of-week,
//! UTC, POSIX rules: Sunday is 0 or 7, and a day matches when either day
//! field does) parsed by `croner`; a leading seconds field is accepted too
//! (six fields), which the tests use for short ticks.

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
