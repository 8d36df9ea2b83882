//! A function's event settings from `ol.yaml`: `async`, `triggers.cron`,
//! `on_success`, `on_failure`. Parsed with the rest of the manifest, so a
//! deploy with a bad setting is refused before anything is stored.

use serde::{Deserialize, Serialize};

use crate::manifest::{in_range, FunctionName};

pub const ASYNC_CONCURRENCY_RANGE: std::ops::RangeInclusive<u32> = 1..=1000;
pub const RETRIES_RANGE: std::ops::RangeInclusive<u32> = 0..=10;
/// Six hours, as AWS Lambda allows at most.
pub const MAX_AGE_S_RANGE: std::ops::RangeInclusive<u32> = 1..=21_600;
/// Schedules one function may have.
pub const MAX_SCHEDULES: usize = 20;

/// The settings after the defaults are applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventSettings {
    /// Async events of the function that run at once, over every manager.
    pub concurrency: u32,
    /// Attempts after the first when an attempt fails (AWS's default is 2).
    pub retries: u32,
    /// An event still waiting this long after it was queued fails unrun.
    pub max_age_s: u32,
    /// Schedules (`triggers.cron`).
    pub cron: Vec<CronTrigger>,
    /// Gets the result of each async or scheduled call that succeeded.
    pub on_success: Option<FunctionName>,
    /// Gets the error of each async or scheduled call that failed for good.
    pub on_failure: Option<FunctionName>,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            concurrency: 10,
            retries: 2,
            max_age_s: *MAX_AGE_S_RANGE.end(),
            cron: Vec::new(),
            on_success: None,
            on_failure: None,
        }
    }
}

/// `async:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAsync {
    concurrency: Option<u32>,
    retries: Option<u32>,
    max_age_s: Option<u32>,
}

/// One schedule: a cron expression, and what to do about ticks missed
/// while no manager ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CronTrigger {
    pub schedule: String,
    /// `true` (`missed: once`): the latest missed tick fires once on
    /// recovery; `false` (`missed: skip`, the default): missed ticks are
    /// skipped.
    pub catch_up: bool,
}

/// `- "*/5 * * * *"` or `- {schedule: "0 * * * *", missed: once}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawCron {
    Expr(String),
    Detailed {
        schedule: String,
        missed: Option<String>,
    },
}

/// The event keys of `ol.yaml` as written.
#[derive(Debug, Default)]
pub struct RawEvents {
    pub async_: Option<RawAsync>,
    pub cron: Option<Vec<RawCron>>,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
}

impl EventSettings {
    /// Errors say which key to change and how.
    pub fn parse(raw: RawEvents) -> Result<Self, String> {
        let mut s = Self::default();
        if let Some(a) = raw.async_ {
            if let Some(c) = a.concurrency {
                s.concurrency = in_range("async.concurrency", c, &ASYNC_CONCURRENCY_RANGE)?;
            }
            if let Some(r) = a.retries {
                s.retries = in_range("async.retries", r, &RETRIES_RANGE)?;
            }
            if let Some(m) = a.max_age_s {
                s.max_age_s = in_range("async.max_age_s", m, &MAX_AGE_S_RANGE)?;
            }
        }
        let destination = |key: &str, raw: Option<String>| {
            raw.map(|name| FunctionName::parse(&name).map_err(|e| format!("{key}: {e}")))
                .transpose()
        };
        s.on_success = destination("on_success", raw.on_success)?;
        s.on_failure = destination("on_failure", raw.on_failure)?;
        let cron = raw.cron.unwrap_or_default();
        if cron.len() > MAX_SCHEDULES {
            return Err(format!(
                "triggers.cron has {} schedules; use at most {MAX_SCHEDULES}",
                cron.len()
            ));
        }
        for raw in cron {
            let (schedule, missed) = match raw {
                RawCron::Expr(e) => (e, None),
                RawCron::Detailed { schedule, missed } => (schedule, missed),
            };
            super::schedule::Schedule::parse(&schedule)?;
            let catch_up = match missed.as_deref() {
                None | Some("skip") => false,
                Some("once") => true,
                Some(other) => {
                    return Err(format!(
                        "triggers.cron {schedule:?}: missed: {other:?} is not known; \
                         use missed: skip (the default) or missed: once"
                    ))
                }
            };
            if !s.cron.iter().any(|c| c.schedule == schedule) {
                s.cron.push(CronTrigger { schedule, catch_up });
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<EventSettings, String> {
        crate::manifest::Manifest::parse(yaml).map(|m| m.events)
    }

    #[test]
    fn defaults_and_settings() {
        assert_eq!(parse("").unwrap(), EventSettings::default());
        let s = parse(
            "async: {concurrency: 4, retries: 0, max_age_s: 60}\n\
             on_success: next\non_failure: errors\n",
        )
        .unwrap();
        assert_eq!((s.concurrency, s.retries, s.max_age_s), (4, 0, 60));
        assert_eq!(s.on_success.unwrap().as_str(), "next");
        assert_eq!(s.on_failure.unwrap().as_str(), "errors");
    }

    #[test]
    fn bad_settings_say_what_to_change() {
        let err = |yaml: &str| parse(yaml).unwrap_err();
        assert!(err("async: {concurrency: 0}").contains("async.concurrency 0 is out of range"));
        assert!(err("async: {retries: 11}").contains("async.retries"));
        assert!(err("async: {max_age_s: 999999}").contains("async.max_age_s"));
        assert!(err("async: {speed: 1}").contains("unknown field"));
        assert!(err("on_failure: Bad/Name").contains("on_failure"));
        assert!(err("triggers: {cron: [\"* *\"]}").contains("has 2 fields"));
        assert!(
            err("triggers: {cron: [{schedule: \"* * * * *\", missed: all}]}")
                .contains("missed: \"all\" is not known")
        );
    }

    #[test]
    fn schedules_with_their_missed_tick_rule() {
        let s = parse(
            "triggers:\n  cron:\n    - \"*/5 * * * *\"\n    - {schedule: \"0 * * * *\", missed: once}\n",
        )
        .unwrap();
        assert_eq!(
            s.cron,
            [
                CronTrigger {
                    schedule: "*/5 * * * *".into(),
                    catch_up: false
                },
                CronTrigger {
                    schedule: "0 * * * *".into(),
                    catch_up: true
                }
            ]
        );
    }
}
