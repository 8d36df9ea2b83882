//! Records Postgres will not take: made acceptable, or set aside.
//!
//! A record carries what a handler printed, and a handler may print
//! anything. Postgres' `text` refuses the NUL character, so a record with
//! one is rejected whole; the writer then makes it acceptable here (NUL
//! becomes U+FFFD, which shows where it was and keeps the rest readable).
//! A record Postgres still refuses is appended to `quarantine.jsonl` next to
//! the journal, with the reason, for an operator to look at: it never holds
//! up the records behind it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use serde_json::json;

use crate::store::invocations::Invocation;

/// The character that stands for one Postgres `text` refuses.
const REPLACEMENT: char = '\u{FFFD}';

/// `record` with every text field made acceptable to Postgres; `None` when
/// there was nothing to change.
pub fn sanitize(record: &Invocation) -> Option<Invocation> {
    fn clean(text: &mut String) -> bool {
        if text.contains('\0') {
            *text = text.replace('\0', &REPLACEMENT.to_string());
            true
        } else {
            false
        }
    }
    let mut clean_record = record.clone();
    let mut changed = clean(&mut clean_record.function);
    changed |= clean(&mut clean_record.version);
    changed |= clean(&mut clean_record.status);
    if let Some(logs) = &mut clean_record.logs {
        changed |= clean(logs);
    }
    changed.then_some(clean_record)
}

/// Where refused records go.
pub struct Quarantine {
    path: PathBuf,
    count: AtomicU64,
}

impl Quarantine {
    /// The quarantine file sits beside the journal directory `journal`.
    pub fn beside(journal: &Path) -> Self {
        Self {
            path: journal.with_file_name("quarantine.jsonl"),
            count: AtomicU64::new(0),
        }
    }

    /// Sets `record` aside with the reason Postgres gave.
    pub fn put(&self, record: &Invocation, reason: &str) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(&json!({ "reason": reason, "record": record }))?;
        line.push(b'\n');
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&line))
            .with_context(|| format!("appending to {}", self.path.display()))?;
        self.count.fetch_add(1, Ordering::Relaxed);
        tracing::error!(request_id = %record.request_id, function = %record.function,
            reason, file = %self.path.display(),
            "Postgres refused a record; set aside in the quarantine file");
        Ok(())
    }

    /// Records set aside since the start.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(logs: Option<&str>) -> Invocation {
        Invocation {
            logs: logs.map(str::to_string),
            ..crate::testing::sample_invocation("f")
        }
    }

    #[test]
    fn nul_becomes_a_visible_replacement_and_the_rest_stays() {
        let clean = sanitize(&record(Some("a\0b\0\n"))).unwrap();
        assert_eq!(clean.logs.as_deref(), Some("a\u{FFFD}b\u{FFFD}\n"));
        assert!(sanitize(&record(Some("fine ünïcode"))).is_none());
        assert!(sanitize(&record(None)).is_none());
    }

    #[test]
    fn refused_records_are_kept_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let quarantine = Quarantine::beside(&dir.path().join("journal"));
        let r = record(Some("x"));
        quarantine.put(&r, "check violation").unwrap();
        assert_eq!(quarantine.count(), 1);
        let text = std::fs::read_to_string(dir.path().join("quarantine.jsonl")).unwrap();
        let kept: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(kept["reason"], "check violation");
        assert_eq!(kept["record"]["request_id"], r.request_id.to_string());
    }
}
