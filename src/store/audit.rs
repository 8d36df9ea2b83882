//! `audit_log`: who changed what, when and from where.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;

/// One management change.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct Entry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The name of the key (or session's key) that made the change.
    pub actor: String,
    /// The caller's address.
    pub source: String,
    /// `deploy`, `update`, `delete`, `patch`, `key_created`, ...
    pub action: String,
    pub function: Option<String>,
    /// What changed, e.g. the new version or the settings patched.
    pub detail: sqlx::types::Json<Value>,
}

pub async fn record(
    db: impl PgExecutor<'_>,
    actor: &str,
    source: &str,
    action: &str,
    function: Option<&str>,
    detail: Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (actor, source, action, function, detail) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(actor)
    .bind(source)
    .bind(action)
    .bind(function)
    .bind(sqlx::types::Json(detail))
    .execute(db)
    .await?;
    Ok(())
}

/// Newest first; only `function`'s when given.
pub async fn recent(
    db: impl PgExecutor<'_>,
    function: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<Entry>> {
    sqlx::query_as(
        "SELECT id, at, actor, source, action, function, detail FROM audit_log \
         WHERE $1::text IS NULL OR function = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(function)
    .bind(limit)
    .fetch_all(db)
    .await
}
