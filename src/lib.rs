//! openlambda: a serverless platform on Docker, after the OpenLambda paper
//! ("Serverless Computation with OpenLambda", HotCloud 2016).
//!
//! A developer uploads a zip holding a handler and gets a URL; every call
//! runs the handler in an isolated container, kept warm (then paused)
//! between calls, and is metered and billed by memory and time.
//!
//! # Layout
//!
//! - [`app`]: wiring; builds every part from the [`config`] and serves HTTP.
//! - [`state`]: `AppState`, the parts every handler and call shares.
//! - [`api`]: the HTTP API: `/api/v1` management, function URLs, health.
//! - [`call`]: one call end to end: lease, invoke, meter; its
//!   [`call::CallStatus`] (status word, billing, HTTP status) is what `api`
//!   renders.
//! - [`cluster`]: one node of several behind HAProxy: "node full" spill,
//!   drain on stop, packages prepared on first use, advisory-locked jobs.
//! - [`catalog`]: function metadata for the call path, cached over Postgres.
//! - [`code`]: zip intake (every check before anything is written) and the
//!   content-addressed code store.
//! - [`function`]: a deployed function as the call path sees it.
//! - [`manifest`]: function names and `ol.yaml`.
//! - [`events`]: async calls, cron schedules and destinations, on a durable
//!   Postgres queue that every manager sharing the database serves.
//! - [`images`]: runtime images, built from embedded contexts, tagged by digest.
//! - [`packages`]: requirements resolved and installed once per host into
//!   the shared, read-only package cache.
//! - [`function`]: a deployed function as the call path sees it (no sqlx).
//! - [`labels`]: the labels on every container the manager creates.
//! - [`sandbox`]: one container: the [`sandbox::Engine`] trait and its Docker
//!   implementation, the runtime protocol (`images/PROTOCOL.md`), crash
//!   diagnosis, cgroup memory reads, sandbox directories.
//! - [`pool`]: leases on containers, scale-out, pause after grace, keep-alive;
//!   talks to the container engine only through [`sandbox::Engine`].
//! - [`meter`]: the billing formula, the record journal and its writer.
//! - [`metrics`]: `/metrics` in Prometheus' text format.
//! - [`store`]: Postgres tables, one file per table family.
//! - [`serve`]: the HTTP server of both listeners, with connection and
//!   header-time bounds.
//! - [`ratelimit`]: function rate limits and the failed-login limit.
//! - [`bench`]: `ol bench`, the pool's figures measured side by side.
//! - [`testing`]: what tests and `ol bench` share: zips, throwaway databases.
//! - [`cli`]: the `ol` command.

pub mod api;
pub mod app;
pub mod bench;
pub mod call;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod code;
pub mod config;
pub mod events;
pub mod function;
pub mod images;
pub mod labels;
pub mod manifest;
pub mod meter;
pub mod metrics;
pub mod packages;
pub mod pool;
pub mod ratelimit;
pub mod sandbox;
pub mod serve;
pub mod state;
pub mod store;
pub mod testing;
