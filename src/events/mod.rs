//! Calls that do not wait for their caller: async invocations, schedules,
//! and destinations, all through one durable queue in Postgres.
//!
//! - [`queue`]: the workers: claim due events (any manager sharing the
//!   database may), run each attempt through [`crate::call`], renew its
//!   lease while it runs, write its outcome, retry with backoff.
//! - [`cron`]: `triggers.cron` schedules; each tick queues one event,
//!   exactly once over every manager.
//! - [`destinations`]: the event an `on_success`/`on_failure` function gets.
//! - [`config`]: the `ol.yaml` keys.
//!
//! The SQL that makes the guarantees is in [`crate::store::events`].

pub mod config;
pub mod cron;
pub mod destinations;
pub mod queue;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use uuid::Uuid;

pub use config::EventSettings;

/// Largest async event accepted (AWS Lambda's asynchronous limit); results
/// kept for an event are bounded the same way.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

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
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        use crate::config::parse_or;
        let ms = |key: &str, default: u64| -> anyhow::Result<Duration> {
            let v: u64 = parse_or(get, key, default)?;
            anyhow::ensure!(v > 0, "{key} must be at least 1");
            Ok(Duration::from_millis(v))
        };
        let lease = ms("OL_ASYNC_LEASE_MS", 30_000)?;
        anyhow::ensure!(
            lease >= Duration::from_millis(300),
            "OL_ASYNC_LEASE_MS must be at least 300 (the lease is renewed every third of it)"
        );
        let workers: usize = parse_or(get, "OL_ASYNC_WORKERS", 64)?;
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

/// This manager's handle on the queue: wakes its worker, stops it.
#[derive(Clone)]
pub struct Events {
    shared: Arc<Shared>,
}

struct Shared {
    /// Names this manager's claims (the `owner` of its leases).
    owner: Uuid,
    /// Signalled when an event was queued here or an attempt ended, so the
    /// worker claims at once instead of at its next poll.
    wake: Notify,
    /// Set when the manager stops: no new claims.
    stopping: AtomicBool,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                owner: Uuid::new_v4(),
                wake: Notify::new(),
                stopping: AtomicBool::new(false),
            }),
        }
    }
}

impl Events {
    pub fn owner(&self) -> Uuid {
        self.shared.owner
    }

    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Stops claiming; attempts already running finish and are written.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }

    pub fn stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    async fn woken(&self) {
        self.shared.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let s = QueueSettings::from_lookup(&|k: &str| {
            (k == "OL_ASYNC_BACKOFF_MS").then(|| "1000".to_string())
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
            QueueSettings::from_lookup(&move |key: &str| (key == k).then(|| v.to_string()))
        };
        assert!(with("OL_ASYNC_LEASE_MS", "10").is_err());
        assert!(with("OL_ASYNC_WORKERS", "0").is_err());
        assert!(with("OL_ASYNC_POLL_MS", "x").is_err());
    }
}
