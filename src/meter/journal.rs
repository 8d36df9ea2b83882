//! The record journal: every call's record is appended to a file under
//! `{data_dir}/journal/` before the call is answered, and removed only after
//! Postgres has it. A manager that is killed, or a Postgres that is away,
//! loses nothing: the writer replays what is left.
//!
//! Records go to the current segment (`{seq}.jsonl`, one JSON line each).
//! The writer seals it (the next record opens a new one), inserts the sealed
//! segments in batches, and deletes each once it is in. Appends are plain
//! writes without fsync: a killed process loses nothing (the data is in the
//! kernel), a power cut may lose the last moments.
//!
//! Nothing in the journal can stop a start: a line that is not valid UTF-8
//! or not a record (a disk that filled mid-write, a crash) is skipped and
//! counted. A write that fails half-way is cut back to the last whole line
//! before anything else is appended, so one bad write never spoils the next.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

use crate::store::invocations::Invocation;

pub struct Journal {
    dir: PathBuf,
    current: Mutex<Current>,
    /// Records appended and not yet in Postgres.
    pending: AtomicUsize,
    /// Bytes of journal on disk.
    bytes: AtomicU64,
    /// Lines skipped at the start because they were not whole records.
    skipped: AtomicU64,
    /// When each segment's oldest record was made, by sequence number; for
    /// the age of the oldest record not yet in Postgres.
    oldest: Mutex<BTreeMap<u64, DateTime<Utc>>>,
}

struct Current {
    seq: u64,
    /// Opened at the first record of a segment.
    file: Option<File>,
    /// Length of the segment up to its last whole line.
    whole: u64,
    /// A write failed part-way: the file must be cut back to `whole`.
    torn: bool,
}

impl Journal {
    /// Opens the journal; segments left by an earlier run are kept for replay.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut last = 0;
        let (mut pending, mut bytes, mut skipped) = (0, 0, 0);
        let mut oldest = BTreeMap::new();
        for (seq, path) in segments(dir)? {
            last = last.max(seq);
            bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let segment = read(&path)?;
            pending += segment.records.len();
            skipped += segment.skipped;
            if let Some(first) = segment.records.iter().map(|r| r.started_at).min() {
                oldest.insert(seq, first);
            }
        }
        if skipped > 0 {
            tracing::warn!(
                lines = skipped,
                dir = %dir.display(),
                "skipped journal lines that are not whole records (torn by a crash or a full disk)"
            );
        }
        if pending > 0 {
            tracing::info!(
                records = pending,
                "journal holds records of an earlier run; replaying"
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            current: Mutex::new(Current {
                seq: last + 1,
                file: None,
                whole: 0,
                torn: false,
            }),
            pending: AtomicUsize::new(pending),
            bytes: AtomicU64::new(bytes),
            skipped: AtomicU64::new(skipped),
            oldest: Mutex::new(oldest),
        })
    }

    pub fn append(&self, record: &Invocation) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let mut current = self.current.lock().unwrap();
        if current.file.is_none() {
            let path = segment_path(&self.dir, current.seq);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            current.whole = file.metadata().map(|m| m.len()).unwrap_or(0);
            current.file = Some(file);
        }
        let current = &mut *current;
        let file = current.file.as_mut().expect("opened above");
        if current.torn {
            truncate(file, current.whole).context("cutting a torn line off the record journal")?;
            current.torn = false;
        }
        if let Err(e) = write_line(file, &line) {
            // Cut the partial line now if the disk lets us; else before
            // the next append.
            current.torn = truncate(file, current.whole).is_err();
            return Err(e).context("appending to the record journal");
        }
        current.whole += line.len() as u64;
        let seq = current.seq;
        self.oldest
            .lock()
            .unwrap()
            .entry(seq)
            .or_insert(record.started_at);
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Seals the current segment (if it has records) and lists every sealed
    /// segment, oldest first.
    pub fn seal(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut current = self.current.lock().unwrap();
        if let Some(file) = current.file.take() {
            if current.torn && truncate(&file, current.whole).is_err() {
                // Left for the reader, which skips a torn line.
                tracing::warn!("could not cut a torn line off a sealed journal segment");
            }
            current.torn = false;
            current.seq += 1;
        }
        let open = current.seq;
        drop(current);
        Ok(segments(&self.dir)?
            .into_iter()
            .filter(|(seq, _)| *seq < open)
            .map(|(_, path)| path)
            .collect())
    }

    /// Deletes a segment whose `records` are all in Postgres.
    pub fn done(&self, path: &Path, records: usize) {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a written journal segment");
            return;
        }
        self.pending.fetch_sub(records, Ordering::Relaxed);
        self.bytes.fetch_sub(size, Ordering::Relaxed);
        if let Some(seq) = sequence(path) {
            self.oldest.lock().unwrap().remove(&seq);
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// When the oldest record not yet in Postgres was made.
    pub fn oldest(&self) -> Option<DateTime<Utc>> {
        self.oldest.lock().unwrap().values().min().copied()
    }

    /// Lines skipped at the start (torn or not records).
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:012}.jsonl"))
}

/// One write of a whole line; a test can make it fail (as a full disk
/// would) part-way through.
fn write_line(file: &mut File, line: &[u8]) -> std::io::Result<()> {
    #[cfg(test)]
    if let Some(cut) = tests::FAIL_AFTER.with(|f| f.get()) {
        file.write_all(&line[..cut.min(line.len())])?;
        return Err(std::io::Error::other("no space left on device (test)"));
    }
    file.write_all(line)
}

/// Cuts `file` back to `len` bytes; a test can make it fail.
fn truncate(file: &File, len: u64) -> std::io::Result<()> {
    #[cfg(test)]
    if tests::FAIL_TRUNCATE.with(|f| f.get()) {
        return Err(std::io::Error::other("no space left on device (test)"));
    }
    file.set_len(len)
}

fn sequence(path: &Path) -> Option<u64> {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".jsonl"))
        .and_then(|n| n.parse::<u64>().ok())
}

/// Segments in `dir`, oldest first.
fn segments(dir: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if let Some(seq) = sequence(&path) {
            found.push((seq, path));
        }
    }
    found.sort();
    Ok(found)
}

/// What a segment holds.
pub struct Segment {
    pub records: Vec<Invocation>,
    /// Lines that were not whole records: invalid UTF-8, not JSON, torn.
    pub skipped: u64,
}

/// The records of a segment; lines that are not records are skipped.
pub fn read(path: &Path) -> anyhow::Result<Segment> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", path.display()))?;
    let mut segment = Segment {
        records: Vec::new(),
        skipped: 0,
    };
    for line in bytes.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(record) => segment.records.push(record),
            Err(e) => {
                segment.skipped += 1;
                tracing::debug!(path = %path.display(), error = %e, "skipping a journal line that is not a record");
            }
        }
    }
    Ok(segment)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Makes this thread's appends fail after writing that many bytes.
        pub static FAIL_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
        /// Makes this thread's truncations fail.
        pub static FAIL_TRUNCATE: Cell<bool> = const { Cell::new(false) };
    }

    fn record(n: i64) -> Invocation {
        Invocation {
            duration_ms: n,
            ..crate::testing::sample_invocation("f")
        }
    }

    #[test]
    fn records_survive_a_reopen_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        for n in 0..3 {
            journal.append(&record(n)).unwrap();
        }
        assert_eq!(journal.pending(), 3);
        drop(journal); // as if killed

        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.pending(), 3);
        journal.append(&record(3)).unwrap();
        let sealed = journal.seal().unwrap();
        assert_eq!(sealed.len(), 2, "the old segment and the one just sealed");
        let all: Vec<i64> = sealed
            .iter()
            .flat_map(|p| read(p).unwrap().records)
            .map(|r| r.duration_ms)
            .collect();
        assert_eq!(all, [0, 1, 2, 3]);
        for path in &sealed {
            let n = read(path).unwrap().records.len();
            journal.done(path, n);
        }
        assert_eq!((journal.pending(), journal.bytes()), (0, 0));
        assert!(journal.seal().unwrap().is_empty());
    }

    #[test]
    fn lines_of_an_older_manager_replay_without_the_newer_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.jsonl");
        // A line as written before records had trigger, attempt and start.
        let old = serde_json::json!({
            "request_id": uuid::Uuid::new_v4(), "function": "f", "version": "v",
            "started_at": "2026-11-01T00:00:00Z", "duration_ms": 5, "billed_ms": 100,
            "memory_mb": 128, "max_memory_used_mb": null, "init_ms": 30, "wait_ms": 0,
            "cold": true, "status": "success", "http_status": 200, "billed": true,
        });
        std::fs::write(&path, format!("{old}\n")).unwrap();
        let segment = read(&path).unwrap();
        assert_eq!(segment.skipped, 0);
        let record = &segment.records[0];
        assert_eq!((record.trigger.as_str(), record.attempt), ("http", 1));
        assert_eq!(record.start, None);
        assert!(record.cold);
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.append(&record(1)).unwrap();
        let path = journal.seal().unwrap().pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"request_id\": \"tor").unwrap();
        assert_eq!(read(&path).unwrap().records.len(), 1);
    }

    #[test]
    fn garbage_lines_are_skipped_and_counted_and_do_not_stop_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.append(&record(1)).unwrap();
        journal.append(&record(2)).unwrap();
        let path = journal.seal().unwrap().pop().unwrap();
        drop(journal);
        let good = std::fs::read(&path).unwrap();
        let mut bytes = b"\xff\xfe not utf-8 \x80\n{not json}\n\"a string\"\n".to_vec();
        bytes.extend_from_slice(&good);
        bytes.extend_from_slice(b"{\"request_id\":\"\xc3");
        std::fs::write(&path, bytes).unwrap();

        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.pending(), 2);
        assert_eq!(journal.skipped(), 4);
        let durations: Vec<i64> = read(&path)
            .unwrap()
            .records
            .iter()
            .map(|r| r.duration_ms)
            .collect();
        assert_eq!(durations, [1, 2]);
    }

    #[test]
    fn a_failed_append_leaves_no_torn_line_behind() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.append(&record(1)).unwrap();
        FAIL_AFTER.with(|f| f.set(Some(20)));
        assert!(journal.append(&record(2)).is_err());
        FAIL_AFTER.with(|f| f.set(None));
        journal.append(&record(3)).unwrap();
        assert_eq!(journal.pending(), 2);
        let path = journal.seal().unwrap().pop().unwrap();
        let segment = read(&path).unwrap();
        assert_eq!(segment.skipped, 0, "no torn line between whole ones");
        let durations: Vec<i64> = segment.records.iter().map(|r| r.duration_ms).collect();
        assert_eq!(durations, [1, 3]);
    }

    #[test]
    fn a_torn_tail_that_could_not_be_cut_is_cut_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.append(&record(1)).unwrap();
        FAIL_AFTER.with(|f| f.set(Some(20)));
        FAIL_TRUNCATE.with(|f| f.set(true));
        assert!(journal.append(&record(2)).is_err());
        FAIL_AFTER.with(|f| f.set(None));
        // Still no room to cut it: nothing is appended after a torn line.
        assert!(journal.append(&record(3)).is_err());
        FAIL_TRUNCATE.with(|f| f.set(false));
        journal.append(&record(4)).unwrap();
        let path = journal.seal().unwrap().pop().unwrap();
        let segment = read(&path).unwrap();
        assert_eq!(segment.skipped, 0);
        let durations: Vec<i64> = segment.records.iter().map(|r| r.duration_ms).collect();
        assert_eq!(durations, [1, 4]);
    }

    #[test]
    fn the_oldest_pending_record_is_known_until_written() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert!(journal.oldest().is_none());
        let first = record(1);
        journal.append(&first).unwrap();
        journal.append(&record(2)).unwrap();
        assert_eq!(journal.oldest(), Some(first.started_at));
        for path in journal.seal().unwrap() {
            journal.done(&path, 2);
        }
        assert!(journal.oldest().is_none());
    }
}
