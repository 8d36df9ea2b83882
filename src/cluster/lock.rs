//! Jobs that exactly one node does for all, under a Postgres advisory lock.
//!
//! A transaction-scoped lock (`pg_try_advisory_xact_lock`): it is released
//! when the job's transaction ends, also when the node dies half-way (its
//! connection goes), so no node can hold it forever. A node that does not get
//! the lock skips the round: another node is doing the same job right now.

use sqlx::PgPool;

/// The lock of the hourly log expiry (an arbitrary constant, the same on
/// every node; other jobs take other keys).
pub const EXPIRE_LOGS: i64 = 0x6f6c_0001;

/// Clears call output older than `days`, unless another node is doing it:
/// `Some(rows)` when this node did, `None` when another held the lock.
pub async fn expire_logs_once(db: &PgPool, days: i64) -> sqlx::Result<Option<u64>> {
    let mut tx = db.begin().await?;
    let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(EXPIRE_LOGS)
        .fetch_one(&mut *tx)
        .await?;
    if !ours {
        tx.rollback().await?;
        return Ok(None);
    }
    let cleared = crate::store::invocations::expire_logs(&mut *tx, days).await?;
    tx.commit().await?;
    Ok(Some(cleared))
}
