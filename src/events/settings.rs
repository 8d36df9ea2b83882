//! How the async queue runs on this manager (`OL_ASYNC_*`, `OL_CRON_POLL_MS`).

use std::time::Duration;

use anyhow::Context;

/// How the queue runs on this manager.
#[derive(Clone, Debug)]
pub struct QueueSettings {
    /// How long a claim holds an event without renewal; a manager that died
    /// leaves its events to others after this (`OL_ASYNC_LEASE_MS`).
    pub lease: Duration,
    /// How often Postgres is asked for due events when nothing woke the
    /// worker (`OL_ASYNC_POLL_MS`).
    pub poll: Duration,
    /// Wait before the first retry; doubled for each further one, at most
    /// five minutes (`OL_ASYNC_BACKOFF_MS`).
    pub backoff: Duration,
    /// Attempts this manager runs at once, over all functions
    /// (`OL_ASYNC_WORKERS`).
    pub workers: usize,
    /// How often schedules are checked for due ticks (`OL_CRON_POLL_MS`).
    pub cron_poll: Duration,
}

impl QueueSettings {
    /// From the settings, read through `number(key, default)` (the
    /// settings' own parser, so that this module needs nothing of them).
    pub fn from_lookup(number: impl Fn(&str, u64) -> anyhow::Result<u64>) -> anyhow::Result<Self> {
        let ms = |key: &str, default: u64| -> anyhow::Result<Duration> {
            let v = number(key, default)?;
            anyhow::ensure!(v > 0, "{key} must be at least 1");
            Ok(Duration::from_millis(v))
        };
        let lease = ms("OL_ASYNC_LEASE_MS", 30_000)?;
        anyhow::ensure!(
            lease >= Duration::from_millis(300),
            "OL_ASYNC_LEASE_MS must be at least 300 (the lease is renewed every third of it)"
        );
        let workers = usize::try_from(number("OL_ASYNC_WORKERS", 64)?)?;
        Ok(Self {
            lease,
            poll: ms("OL_ASYNC_POLL_MS", 200)?,
            backoff: ms("OL_ASYNC_BACKOFF_MS", 2_000)?,
            cron_poll: ms("OL_CRON_POLL_MS", 1_000)?,
            workers: Some(workers)
                .filter(|w| *w > 0)
                .context("OL_ASYNC_WORKERS must be at least 1")?,
        })
    }

    /// The wait before the retry that follows attempt `attempt` (1-based).
    pub fn backoff_after(&self, attempt: i32) -> Duration {
        let doublings = attempt.clamp(1, 20) as u32 - 1;
        self.backoff
            .saturating_mul(1 << doublings)
            .min(Duration::from_secs(300))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let s = QueueSettings::from_lookup(|k, d| {
            Ok(if k == "OL_ASYNC_BACKOFF_MS" { 1000 } else { d })
        })
        .unwrap();
        assert_eq!(s.backoff_after(1), Duration::from_secs(1));
        assert_eq!(s.backoff_after(2), Duration::from_secs(2));
        assert_eq!(s.backoff_after(3), Duration::from_secs(4));
        assert_eq!(s.backoff_after(30), Duration::from_secs(300));
    }

    #[test]
    fn bad_settings_are_refused() {
        let with = |k: &'static str, v: &'static str| {
            QueueSettings::from_lookup(move |key, d| {
                if key == k {
                    v.parse().map_err(|e| anyhow::anyhow!("{key}={v:?}: {e}"))
                } else {
                    Ok(d)
                }
            })
        };
        assert!(with("OL_ASYNC_LEASE_MS", "10").is_err());
        assert!(with("OL_ASYNC_WORKERS", "0").is_err());
        assert!(with("OL_ASYNC_POLL_MS", "x").is_err());
    }
}
