//! The record writer: a call appends its record to the journal (a plain
//! file write, microseconds) and goes on; one task moves the journal into
//! Postgres in batches (one round trip per batch), off the request path.
//!
//! Nothing is dropped: while Postgres is away the records wait on disk and
//! the writer retries with backoff; a restart replays what is left. Inserts
//! are idempotent by request id, so a replay never bills twice.
//!
//! Nothing wedges it either. A batch Postgres refuses (not a lost
//! connection: a record it will not take) is split in halves until the
//! refused records are alone; each is made acceptable or set aside (see
//! `quarantine`), and the rest go in. A record the journal cannot take (a
//! full disk) waits in a bounded memory buffer and is journaled, or written
//! straight to Postgres, as soon as either works.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::journal::{self, Journal};
use super::quarantine::{sanitize, Quarantine};
use crate::store::invocations::{self, Invocation};
use crate::store::is_unreachable;

/// Records a batch holds at most.
const MAX_BATCH: usize = 1000;
/// Records kept in memory at most while the journal cannot be written; past
/// this a record is lost, loudly (a log line and a metric).
const MAX_UNJOURNALED: usize = 10_000;
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
    /// Records the journal refused, oldest first, until it or Postgres
    /// takes them.
    unjournaled: Mutex<VecDeque<Invocation>>,
    quarantine: Quarantine,
    /// Appends the journal refused.
    append_failures: AtomicU64,
    /// Records lost because the memory buffer was full as well.
    lost: AtomicU64,
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
            unjournaled: Mutex::default(),
            quarantine: Quarantine::beside(dir),
            append_failures: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            wake: Notify::new(),
            written: Notify::new(),
        });
        let task = tokio::spawn(write(db, shared.clone()));
        Ok((Self { shared }, task))
    }

    /// Journals one record; the writer takes it from there. A record the
    /// journal refuses waits in memory (the call is answered all the same).
    pub fn record(&self, record: &Invocation) {
        if let Err(e) = self.shared.journal.append(record) {
            self.shared.append_failures.fetch_add(1, Ordering::Relaxed);
            let mut unjournaled = self.shared.unjournaled.lock().unwrap();
            if unjournaled.len() < MAX_UNJOURNALED {
                unjournaled.push_back(record.clone());
                tracing::error!(request_id = %record.request_id, error = format!("{e:#}"),
                    in_memory = unjournaled.len(),
                    "could not journal a record; it waits in memory (lost if the manager dies now)");
            } else {
                self.shared.lost.fetch_add(1, Ordering::Relaxed);
                tracing::error!(request_id = %record.request_id, error = format!("{e:#}"),
                    "could not journal a record and the memory buffer is full: record LOST");
            }
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

    /// Records not yet in Postgres (journaled or in memory).
    pub fn depth(&self) -> usize {
        self.shared.depth()
    }

    /// The writer's figures, for the metrics.
    pub fn stats(&self) -> RecordStats {
        let shared = &self.shared;
        let unjournaled = shared.unjournaled.lock().unwrap();
        let oldest = unjournaled
            .front()
            .map(|r| r.started_at)
            .into_iter()
            .chain(shared.journal.oldest())
            .min();
        RecordStats {
            pending: shared.journal.pending() + unjournaled.len(),
            oldest_pending_seconds: oldest.map_or(0.0, |t| {
                (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
            }),
            unjournaled: unjournaled.len(),
            quarantined: shared.quarantine.count(),
            append_failures: shared.append_failures.load(Ordering::Relaxed),
            lost: shared.lost.load(Ordering::Relaxed),
            skipped_lines: shared.journal.skipped(),
        }
    }

    pub fn journal_bytes(&self) -> u64 {
        self.shared.journal.bytes()
    }
}

/// The writer's figures, read when the metrics are scraped.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordStats {
    /// Records not yet in Postgres.
    pub pending: usize,
    /// Age of the oldest of them (0 when there are none).
    pub oldest_pending_seconds: f64,
    /// Of `pending`, those only in memory (the journal refused them).
    pub unjournaled: usize,
    /// Records Postgres refused even made acceptable, set aside.
    pub quarantined: u64,
    pub append_failures: u64,
    pub lost: u64,
    /// Journal lines skipped at the start (not whole records).
    pub skipped_lines: u64,
}

impl Shared {
    fn depth(&self) -> usize {
        self.journal.pending() + self.unjournaled.lock().unwrap().len()
    }

    /// Moves what waits in memory into the journal, while it takes them.
    fn rejournal(&self) {
        loop {
            let Some(record) = self.unjournaled.lock().unwrap().pop_front() else {
                return;
            };
            if self.journal.append(&record).is_err() {
                self.unjournaled.lock().unwrap().push_front(record);
                return;
            }
        }
    }

    /// Writes what the journal still refuses straight to Postgres.
    async fn write_unjournaled(&self, db: &PgPool) -> anyhow::Result<()> {
        let batch: Vec<Invocation> = {
            let unjournaled = self.unjournaled.lock().unwrap();
            unjournaled.iter().take(MAX_BATCH).cloned().collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        insert(db, &batch, &self.quarantine).await?;
        // Only this task takes from the front, so these are the ones written.
        self.unjournaled.lock().unwrap().drain(..batch.len());
        tracing::info!(
            records = batch.len(),
            "wrote records the journal had refused"
        );
        Ok(())
    }
}

async fn write(db: PgPool, shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if shared.depth() == 0 {
            let _ = tokio::time::timeout(Duration::from_secs(1), shared.wake.notified()).await;
        }
        tokio::time::sleep(LINGER).await;
        shared.rejournal();
        let done = match shared.write_unjournaled(&db).await {
            Ok(()) => write_sealed(&db, &shared.journal, &shared.quarantine).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(
                    pending = shared.depth(),
                    error = format!("{e:#}"),
                    "could not write records to Postgres; they wait in the journal"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        shared.written.notify_waiters();
    }
}

/// Moves every sealed segment into Postgres, oldest first.
async fn write_sealed(
    db: &PgPool,
    journal: &Journal,
    quarantine: &Quarantine,
) -> anyhow::Result<()> {
    for segment in journal.seal()? {
        let records = journal::read(&segment)?.records;
        insert(db, &records, quarantine).await?;
        journal.done(&segment, records.len());
    }
    Ok(())
}

/// Inserts `records` in batches. A batch Postgres refuses is halved until
/// each refused record is alone, so one bad record costs a few round
/// trips, not one per record. Fails only when Postgres cannot be reached
/// (or a refused record cannot be set aside): then the caller retries it
/// all, which is safe, since inserts skip request ids already stored.
async fn insert(
    db: &PgPool,
    records: &[Invocation],
    quarantine: &Quarantine,
) -> anyhow::Result<()> {
    let mut todo: Vec<&[Invocation]> = records.chunks(MAX_BATCH).rev().collect();
    while let Some(part) = todo.pop() {
        match invocations::insert_batch(db, part).await {
            Ok(()) => {}
            Err(e) if is_unreachable(&e) => return Err(e.into()),
            Err(e) if part.len() == 1 => refused(db, &part[0], e, quarantine).await?,
            Err(e) => {
                tracing::warn!(records = part.len(), error = %e,
                    "Postgres refused a batch of records; finding the refused ones");
                let (first, second) = part.split_at(part.len() / 2);
                todo.push(second);
                todo.push(first);
            }
        }
    }
    Ok(())
}

/// One record Postgres refused: stored made acceptable, or set aside.
async fn refused(
    db: &PgPool,
    record: &Invocation,
    error: sqlx::Error,
    quarantine: &Quarantine,
) -> anyhow::Result<()> {
    let mut reason = error.to_string();
    if let Some(clean) = sanitize(record) {
        match invocations::insert_batch(db, std::slice::from_ref(&clean)).await {
            Ok(()) => {
                tracing::warn!(request_id = %record.request_id, error = %reason,
                    "stored a record with the characters Postgres refused replaced by U+FFFD");
                return Ok(());
            }
            Err(e) if is_unreachable(&e) => return Err(e.into()),
            Err(e) => reason = e.to_string(),
        }
    }
    quarantine.put(record, &reason)
}
