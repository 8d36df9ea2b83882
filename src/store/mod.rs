//! Postgres: the source of truth for functions, code versions and records.
//!
//! One file per table family; each function takes the executor it runs on,
//! so callers choose between the pool and a transaction.

pub mod access;
pub mod audit;
pub mod events;
pub mod functions;
pub mod invocations;
pub mod keys;
pub mod schedules;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// How long a request waits for a database connection before giving up.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);

/// Whether `e` means Postgres could not be reached (down, restarting, the
/// connection lost, no connection to be had in time), as opposed to
/// Postgres refusing what it was sent. The first is worth a retry.
pub fn is_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        // Class 08: connection exception; 57P0x: the server is shutting
        // down or starting; 53300: too many connections.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300"),
        _ => false,
    }
}

/// Connects to Postgres and brings the schema up to date.
pub async fn connect(database_url: &str) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(database_url)
        .context("DATABASE_URL is not a valid Postgres URL")?;
    let pool = PgPoolOptions::new()
        .max_connections(16)
        // Short: with Postgres away, a management call answers 503 at once
        // instead of hanging (calls of known functions do not need it).
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .context("connecting to Postgres (DATABASE_URL); is the server running?")?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .context("running database migrations")?;
    Ok(pool)
}
