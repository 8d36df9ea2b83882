//! The record writer: calls hand their records to a bounded queue and go on;
//! one task inserts them in batches (one round trip per batch), off the
//! request path.
//!
//! Nothing is dropped: a full queue makes callers wait (backpressure), and a
//! batch that fails to insert is kept and retried until Postgres takes it.
//! Inserts are idempotent by request id, so a retry never counts twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::invocations::{self, Invocation};

/// Records a batch holds at most.
const MAX_BATCH: usize = 1000;
/// Records that may wait in memory before callers wait.
const QUEUE: usize = 16_384;

enum Message {
    Record(Box<Invocation>),
    /// Answered once everything sent before it is in Postgres.
    Flush(oneshot::Sender<()>),
}

/// Cheap handle for sending records.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Message>,
    depth: Arc<AtomicUsize>,
}

impl Recorder {
    /// Starts the writer; it ends when every `Recorder` is dropped and the
    /// queue is written.
    pub fn spawn(db: PgPool) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let depth = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(write(db, rx, depth.clone()));
        (Self { tx, depth }, task)
    }

    pub async fn record(&self, record: Invocation) {
        self.depth.fetch_add(1, Ordering::Relaxed);
        if self
            .tx
            .send(Message::Record(Box::new(record)))
            .await
            .is_err()
        {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("the record writer has stopped; a record was not written");
        }
    }

    /// Waits until every record sent so far is in Postgres.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Records queued and not yet written.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

async fn write(db: PgPool, mut rx: mpsc::Receiver<Message>, depth: Arc<AtomicUsize>) {
    let mut batch: Vec<Invocation> = Vec::with_capacity(MAX_BATCH);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Take what is already queued, up to a batch.
        while let Some(message) = next.take().or_else(|| rx.try_recv().ok()) {
            match message {
                Message::Record(r) => batch.push(*r),
                Message::Flush(done) => waiting.push(done),
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
        }
        let mut delay = Duration::from_millis(100);
        while !batch.is_empty() {
            match invocations::insert_batch(&db, &batch).await {
                Ok(()) => {
                    depth.fetch_sub(batch.len(), Ordering::Relaxed);
                    batch.clear();
                }
                Err(e) => {
                    tracing::warn!(records = batch.len(), error = %e,
                        "could not write records; keeping them and retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}
