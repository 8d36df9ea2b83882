//! The record writer: a call appends its record to the journal (a plain
//! file write, microseconds) and goes on; one task moves the journal into
//! Postgres in batches (one round trip per batch), off the request path.
//!
//! Nothing is dropped: while Postgres is away the records wait on disk and
//! the writer retries with backoff; a restart replays what is left. Inserts
//! are idempotent by request id, so a replay never bills twice.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::journal::{self, Journal};
use crate::store::invocations::{self, Invocation};

/// Records a batch holds at most.
const MAX_BATCH: usize = 1000;
/// How long the writer lets records gather before a batch: fewer, larger
/// batches cost Postgres (on the same cores as the calls) less.
const LINGER: Duration = Duration::from_millis(50);

/// Cheap handle for sending records.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

struct Shared {
    journal: Journal,
    /// Wakes the writer: a record was appended or a flush is wanted.
    wake: Notify,
    /// Wakes flushes: a batch went in.
    written: Notify,
}

impl Recorder {
    /// Opens the journal under `dir` and starts the writer.
    pub fn start(db: PgPool, dir: &Path) -> anyhow::Result<(Self, JoinHandle<()>)> {
        let shared = Arc::new(Shared {
            journal: Journal::open(dir)?,
            wake: Notify::new(),
            written: Notify::new(),
        });
        let task = tokio::spawn(write(db, shared.clone()));
        Ok((Self { shared }, task))
    }

    /// Journals one record; the writer takes it from there.
    pub fn record(&self, record: &Invocation) {
        if let Err(e) = self.shared.journal.append(record) {
            tracing::error!(request_id = %record.request_id, error = %e,
                "could not journal a record");
        }
        self.shared.wake.notify_one();
    }

    /// Waits until every record so far is in Postgres, or `limit` passes
    /// (then they stay in the journal for the writer or the next start).
    pub async fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let written = self.shared.written.notified();
            if self.depth() == 0 {
                return true;
            }
            self.shared.wake.notify_one();
            if tokio::time::timeout_at(deadline.into(), written)
                .await
                .is_err()
            {
                return self.depth() == 0;
            }
        }
    }

    /// Records journaled and not yet in Postgres.
    pub fn depth(&self) -> usize {
        self.shared.journal.pending()
    }

    pub fn journal_bytes(&self) -> u64 {
        self.shared.journal.bytes()
    }
}

async fn write(db: PgPool, shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if shared.journal.pending() == 0 {
            let _ = tokio::time::timeout(Duration::from_secs(1), shared.wake.notified()).await;
        }
        tokio::time::sleep(LINGER).await;
        match write_sealed(&db, &shared.journal).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(pending = shared.journal.pending(), error = %e,
                    "could not write records to Postgres; they wait in the journal");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        shared.written.notify_waiters();
    }
}

/// Moves every sealed segment into Postgres, oldest first.
async fn write_sealed(db: &PgPool, journal: &Journal) -> anyhow::Result<()> {
    for segment in journal.seal()? {
        let records = journal::read(&segment)?;
        for batch in records.chunks(MAX_BATCH) {
            invocations::insert_batch(db, batch).await?;
        }
        journal.done(&segment, records.len());
    }
    Ok(())
}
