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
pub mod schedule;

pub mod handle;
pub mod settings;

pub use config::EventSettings;
pub use handle::Events;
pub use settings::QueueSettings;

/// Largest async event accepted (AWS Lambda's asynchronous limit); results
/// kept for an event are bounded the same way.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
