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

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Context;

use crate::store::invocations::Invocation;

pub struct Journal {
    dir: PathBuf,
    current: Mutex<Current>,
    /// Records appended and not yet in Postgres.
    pending: AtomicUsize,
    /// Bytes of journal on disk.
    bytes: AtomicU64,
}

struct Current {
    seq: u64,
    /// Opened at the first record of a segment.
    file: Option<File>,
}

impl Journal {
    /// Opens the journal; segments left by an earlier run are kept for replay.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut last = 0;
        let (mut pending, mut bytes) = (0, 0);
        for (seq, path) in segments(dir)? {
            last = last.max(seq);
            bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            pending += read(&path)?.len();
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
            }),
            pending: AtomicUsize::new(pending),
            bytes: AtomicU64::new(bytes),
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
            current.file = Some(file);
        }
        current
            .file
            .as_mut()
            .expect("opened above")
            .write_all(&line)
            .context("appending to the record journal")?;
        drop(current);
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Seals the current segment (if it has records) and lists every sealed
    /// segment, oldest first.
    pub fn seal(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut current = self.current.lock().unwrap();
        if current.file.take().is_some() {
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
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:012}.jsonl"))
}

/// Segments in `dir`, oldest first.
fn segments(dir: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            found.push((seq, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The records of a segment. A torn last line (a crash mid-write) is skipped.
pub fn read(path: &Path) -> anyhow::Result<Vec<Invocation>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut records = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(record) => records.push(record),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping a torn journal line")
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            .flat_map(|p| read(p).unwrap())
            .map(|r| r.duration_ms)
            .collect();
        assert_eq!(all, [0, 1, 2, 3]);
        for path in &sealed {
            let n = read(path).unwrap().len();
            journal.done(path, n);
        }
        assert_eq!((journal.pending(), journal.bytes()), (0, 0));
        assert!(journal.seal().unwrap().is_empty());
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.append(&record(1)).unwrap();
        let path = journal.seal().unwrap().pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"request_id\": \"tor").unwrap();
        assert_eq!(read(&path).unwrap().len(), 1);
    }
}
