//! Postgres: the source of truth for functions, code versions and records.
//!
//! One file per table family; each function takes the executor it runs on,
//! so callers choose between the pool and a transaction.

pub mod access;
pub mod audit;
pub mod functions;
pub mod invocations;
pub mod keys;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// Connects to Postgres and brings the schema up to date.
pub async fn connect(database_url: &str) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(database_url)
        .context("DATABASE_URL is not a valid Postgres URL")?;
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("connecting to Postgres (DATABASE_URL); is the server running?")?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .context("running database migrations")?;
    Ok(pool)
}
