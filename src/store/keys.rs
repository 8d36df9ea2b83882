//! `api_keys`, `sessions` and `invoke_keys`: credentials, stored only as
//! sha256 hashes. Keys are 256 random bits, so a plain hash is enough: there
//! is nothing to guess from it, and a lookup by hash needs no secret salt.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use uuid::Uuid;

/// Every platform credential starts with this, so the manager can tell one
/// in a function call's headers without a lookup (and strip it).
pub const KEY_PREFIX: &str = "ol_";

/// A new random credential: `ol_` and 64 hex digits (256 bits).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    format!("{KEY_PREFIX}{}", hex(&bytes))
}

/// The form a credential is stored and looked up in.
pub fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A management key, as listed (never with its secret).
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct ApiKey {
    pub name: String,
    pub scopes: Vec<String>,
    pub prefix: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Stores a key; `false` when the name is taken.
pub async fn create(
    db: impl PgExecutor<'_>,
    name: &str,
    secret: &str,
    scopes: &[String],
    prefix: Option<&str>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO api_keys (name, hash, scopes, prefix) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(hash(secret))
    .bind(scopes)
    .bind(prefix)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Creates or replaces the key `name` with an admin key of `secret`; the
/// sessions opened with the old secret end (cascade on the name is not
/// enough, as the name stays).
pub async fn put_admin(db: &sqlx::PgPool, name: &str, secret: &str) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    let old: Option<String> = sqlx::query_scalar("SELECT hash FROM api_keys WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
    if old.as_deref() != Some(hash(secret).as_str()) {
        sqlx::query("DELETE FROM sessions WHERE key_name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "INSERT INTO api_keys (name, hash, scopes) VALUES ($1, $2, '{admin}') \
         ON CONFLICT (name) DO UPDATE SET hash = $2, scopes = '{admin}', prefix = NULL",
    )
    .bind(name)
    .bind(hash(secret))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The key whose secret this is.
pub async fn find(db: impl PgExecutor<'_>, secret: &str) -> sqlx::Result<Option<ApiKey>> {
    sqlx::query_as("SELECT name, scopes, prefix, created_at FROM api_keys WHERE hash = $1")
        .bind(hash(secret))
        .fetch_optional(db)
        .await
}

pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<ApiKey>> {
    sqlx::query_as("SELECT name, scopes, prefix, created_at FROM api_keys ORDER BY name")
        .fetch_all(db)
        .await
}

/// Whether any key has the admin scope.
pub async fn any_admin(db: impl PgExecutor<'_>) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE 'admin' = ANY (scopes))")
        .fetch_one(db)
        .await
}

/// Revokes a key (its sessions end with it); `false` when there is none.
pub async fn revoke(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM api_keys WHERE name = $1")
        .bind(name)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Opens a session for key `key_name`; returns its id (the cookie's value).
pub async fn open_session(
    db: impl PgExecutor<'_>,
    key_name: &str,
    ttl: std::time::Duration,
) -> sqlx::Result<String> {
    let id = new_secret();
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(12));
    sqlx::query("INSERT INTO sessions (hash, key_name, expires_at) VALUES ($1, $2, $3)")
        .bind(hash(&id))
        .bind(key_name)
        .bind(Utc::now() + ttl)
        .execute(db)
        .await?;
    Ok(id)
}

/// The key behind a session id that has not expired.
pub async fn session_key(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<Option<ApiKey>> {
    sqlx::query_as(
        "SELECT k.name, k.scopes, k.prefix, k.created_at FROM sessions s \
         JOIN api_keys k ON k.name = s.key_name \
         WHERE s.hash = $1 AND s.expires_at > now()",
    )
    .bind(hash(id))
    .fetch_optional(db)
    .await
}

/// Ends a session (logout), and clears every expired one on the way.
pub async fn close_session(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE hash = $1 OR expires_at <= now()")
        .bind(hash(id))
        .execute(db)
        .await?;
    Ok(())
}

/// A new invoke key of `function`: its id and secret.
pub async fn create_invoke_key(
    db: impl PgExecutor<'_>,
    function: &str,
) -> sqlx::Result<(Uuid, String)> {
    let id = Uuid::new_v4();
    let secret = new_secret();
    sqlx::query("INSERT INTO invoke_keys (id, function, hash) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(function)
        .bind(hash(&secret))
        .execute(db)
        .await?;
    Ok((id, secret))
}

pub async fn revoke_invoke_key(
    db: impl PgExecutor<'_>,
    function: &str,
    id: Uuid,
) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM invoke_keys WHERE function = $1 AND id = $2")
        .bind(function)
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether `secret` is one of `function`'s invoke keys.
pub async fn is_invoke_key(
    db: impl PgExecutor<'_>,
    function: &str,
    secret: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM invoke_keys WHERE function = $1 AND hash = $2)",
    )
    .bind(function)
    .bind(hash(secret))
    .fetch_one(db)
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_long_random_and_recognisable() {
        let a = super::new_secret();
        let b = super::new_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(super::KEY_PREFIX));
        assert_eq!(a.len(), 3 + 64);
        assert_eq!(super::hash(&a).len(), 64);
        assert_ne!(super::hash(&a), super::hash(&b));
    }
}
