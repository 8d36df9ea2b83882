//! What the integration tests and `ol bench` both stand on: zips built in
//! memory, sample records, throwaway databases that are dropped even when the test or run
//! fails half-way, and the address helpers, so the two never drift apart.
//!
//! Part of the library (not `#[cfg(test)]`) because `ol bench` ships in the
//! binary and the integration tests are a separate crate.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use sqlx::{Connection, Executor, PgConnection};

use crate::store::invocations::Invocation;

/// The base image tests and benchmarks build on when `OL_BASE_IMAGE` is unset
/// (what `images/bootstrap-base.sh` tags).
pub const DEFAULT_BASE_IMAGE: &str = "openlambda/base:bookworm";

/// `OL_BASE_IMAGE`, or [`DEFAULT_BASE_IMAGE`].
pub fn base_image() -> String {
    crate::config::env("OL_BASE_IMAGE").unwrap_or_else(|| DEFAULT_BASE_IMAGE.into())
}

/// `DATABASE_URL`: the Postgres server where throwaway databases are made.
pub fn admin_database_url() -> anyhow::Result<String> {
    crate::config::env("DATABASE_URL").context(
        "DATABASE_URL is not set: run through scripts/test.sh or scripts/bench.sh, \
         or point it at a Postgres server (postgres://user@host:port/postgres)",
    )
}

/// `http://{addr}`: the base URL of a manager listening on `addr`.
pub fn base_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// A zip holding `files` (name, content), as `ol deploy` would upload.
///
/// Panics on a repeated file name: that is a mistake in the caller's list,
/// never a condition to handle.
pub fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in files {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap_or_else(|e| panic!("adding {name} to a test zip: {e}"));
        w.write_all(body.as_bytes())
            .expect("writing to memory cannot fail");
    }
    w.finish()
        .expect("finishing an in-memory zip cannot fail")
        .into_inner()
}

/// A record of a plain successful warm call of `function` (128 MB, 5 ms,
/// billed 100 ms), for tests and benchmarks that write records without
/// making calls; change the fields that matter to them.
pub fn sample_invocation(function: &str) -> Invocation {
    Invocation {
        request_id: uuid::Uuid::new_v4(),
        function: function.into(),
        version: "0".repeat(64),
        started_at: chrono::Utc::now(),
        duration_ms: 5,
        billed_ms: 100,
        memory_mb: 128,
        max_memory_used_mb: Some(20),
        init_ms: None,
        wait_ms: 0,
        cold: false,
        status: "success".into(),
        http_status: 200,
        billed: true,
        logs: None,
        trigger: "http".into(),
        attempt: 1,
        start: Some("running".into()),
    }
}

/// An empty database of one test or benchmark run, named `{prefix}_{id}` on
/// the server of `DATABASE_URL`. Dropped by [`ThrowawayDatabase::drop_now`],
/// or, when the owner forgets or panics, by `Drop` (which terminates any
/// connection still open, so a leftover pool cannot keep it alive).
/// `scripts/test.sh` sweeps `ol_test_*` at the end for processes that were
/// killed before either ran.
pub struct ThrowawayDatabase {
    name: String,
    url: String,
    admin_url: String,
    dropped: AtomicBool,
}

impl ThrowawayDatabase {
    /// Creates the database; `prefix` must be a plain identifier (`ol_test`).
    pub async fn create(admin_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{prefix}_{}", &id[..16]).replace('-', "_");
        let (server, _) = admin_url
            .rsplit_once('/')
            .context("DATABASE_URL names no database (postgres://user@host:port/postgres)")?;
        let mut admin = PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url} to create {name}"))?;
        admin
            .execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .await
            .with_context(|| format!("creating database {name}"))?;
        Ok(Self {
            url: format!("{server}/{name}"),
            name,
            admin_url: admin_url.to_string(),
            dropped: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of this database (for `DATABASE_URL` of a manager).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database now, ending any connection still open to it.
    pub async fn drop_now(&self) -> anyhow::Result<()> {
        if self.dropped.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        drop_database(&self.admin_url, &self.name).await
    }
}

impl Drop for ThrowawayDatabase {
    fn drop(&mut self) {
        if self.dropped.swap(true, Ordering::SeqCst) {
            return;
        }
        // Drop runs inside a runtime (or while a test unwinds), where
        // blocking on it is not allowed: a thread of its own does the work.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(drop_database(&admin_url, &name))
        })
        .join();
        if let Ok(Err(e)) = done {
            eprintln!("could not drop database {}: {e:#}", self.name);
        }
    }
}

async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("connecting to {admin_url} to drop {name}"))?;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
        )))
        .await
        .with_context(|| format!("dropping database {name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_of_holds_each_file() {
        let zip = zip_of(&[("f.py", "def f(e):\n    return e\n"), ("ol.yaml", "")]);
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        assert_eq!(archive.len(), 2);
        assert!(archive.by_name("ol.yaml").is_ok());
        let mut body = String::new();
        std::io::Read::read_to_string(&mut archive.by_name("f.py").unwrap(), &mut body).unwrap();
        assert_eq!(body, "def f(e):\n    return e\n");
    }

    #[test]
    #[should_panic(expected = "adding f.py")]
    fn a_repeated_name_is_a_caller_mistake() {
        zip_of(&[("f.py", "a"), ("f.py", "b")]);
    }
}
