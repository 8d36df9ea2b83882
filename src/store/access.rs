//! `function_access`: a function's URL auth mode and rate limit.

use sqlx::PgExecutor;

/// How a function's URL may be called.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct Access {
    /// `none` (public) or `key` (one of its invoke keys).
    pub auth: String,
    /// Calls per second, and the burst above it; `None`: no limit.
    pub rate_per_s: Option<f64>,
    pub rate_burst: Option<i32>,
}

pub async fn get(db: impl PgExecutor<'_>, function: &str) -> sqlx::Result<Access> {
    let found: Option<Access> = sqlx::query_as(
        "SELECT auth, rate_per_s, rate_burst FROM function_access WHERE function = $1",
    )
    .bind(function)
    .fetch_optional(db)
    .await?;
    Ok(found.unwrap_or_else(|| Access {
        auth: "none".into(),
        ..Access::default()
    }))
}

pub async fn put(db: impl PgExecutor<'_>, function: &str, access: &Access) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO function_access (function, auth, rate_per_s, rate_burst) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (function) DO UPDATE \
         SET auth = $2, rate_per_s = $3, rate_burst = $4",
    )
    .bind(function)
    .bind(&access.auth)
    .bind(access.rate_per_s)
    .bind(access.rate_burst)
    .execute(db)
    .await?;
    Ok(())
}

/// A deleted function's access settings and invoke keys go with it.
pub async fn remove(db: impl PgExecutor<'_> + Copy, function: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM function_access WHERE function = $1")
        .bind(function)
        .execute(db)
        .await?;
    sqlx::query("DELETE FROM invoke_keys WHERE function = $1")
        .bind(function)
        .execute(db)
        .await?;
    Ok(())
}
