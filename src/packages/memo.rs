//! The resolution memo: what a fully pinned requirement set resolved to,
//! so that deploying it again needs no builder and no package index.
//!
//! A requirement set is memoizable when every line pins one exact version
//! (`name==version`, no wildcard, no other specifier). Its transitive
//! dependencies are not in requirements.txt, so the first deploy of the set
//! still runs pip's resolver in a builder; once that resolution succeeded
//! and every package it named is installed, the manager writes the memo
//! entry. A later deploy of the same set reads it back, and if every
//! package it lists is installed (and meets the requirement's hashes, see
//! [`super::cache`]) it answers at once; otherwise it resolves through the
//! builder as before.
//!
//! The key is the set in a canonical form, one line per requirement, sorted
//! and without duplicates: the PEP 503 name, its extras (normalized and
//! sorted), `==version` (lower case), the environment marker as written
//! (trimmed), and the `--hash` values (sorted); plus the runtime image's tag,
//! which is a digest of the image's build context and base image: another
//! Python, or another pip, may resolve the same lines differently. Extras
//! and markers are kept in the key rather than refused, since the builder
//! evaluates them in that same image: the same lines in the same image
//! resolve alike. Hashes are kept too, so an entry exists only for a set
//! whose hash-checked resolution pip accepted as a whole (pip's hash mode
//! requires every dependency to be listed with hashes).
//!
//! Entries are files, `{data_dir}/packages/python.resolved/{sha256 of key}.json`,
//! written atomically (a temporary file, then a rename) and readable only by
//! the manager. They live beside the cache they describe rather than in
//! Postgres: an entry is only of use on the node whose cache holds its
//! packages, it goes when that cache is wiped, and reading it costs no
//! database round trip. An entry is trusted only after it is checked: it
//! must parse, name this key's image and lines, list valid names and
//! versions without duplicates, and include every pinned requirement at its
//! pinned version. Anything else is logged and ignored (the builder
//! resolves, and a fresh entry replaces it), never an error of the deploy.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::requirements::{self, Requirement};

/// Bytes of an entry read; a real one is a few KiB.
const ENTRY_LIMIT: u64 = 1024 * 1024;
/// Packages one resolution may list.
const MAX_PACKAGES: usize = 2000;

/// A fully pinned requirement set in the runtime image that resolves it.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    image: String,
    lines: Vec<String>,
    /// The normalized name and pinned version of each requirement without
    /// a marker: what any resolution of the set must list.
    pins: Vec<(String, String)>,
}

impl Key {
    /// The key of `parsed` in `image`; `None` when some requirement is not
    /// pinned to one exact version.
    pub fn of(parsed: &[Requirement], image: &str) -> Option<Self> {
        let mut lines = Vec::with_capacity(parsed.len());
        let mut pins = Vec::with_capacity(parsed.len());
        for requirement in parsed {
            let version = pinned_version(requirement)?;
            lines.push(canonical_line(requirement, version));
            // A marker may leave its requirement out of the resolution here.
            if requirement.marker.is_none() {
                pins.push((requirement.key(), version.to_string()));
            }
        }
        lines.sort();
        lines.dedup();
        Some(Self {
            image: image.to_string(),
            lines,
            pins,
        })
    }

    /// The entry's file name: a digest of the image and the lines.
    fn file_name(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.image.as_bytes());
        for line in &self.lines {
            hash.update(b"\n");
            hash.update(line.as_bytes());
        }
        let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}.json")
    }
}

/// The version `requirement` pins exactly, if that is all it says.
fn pinned_version(requirement: &Requirement) -> Option<&str> {
    match requirement.specifiers.as_slice() {
        [only] => only
            .strip_prefix("==")
            .filter(|v| !v.starts_with('=') && requirements::valid_version(v)),
        _ => None,
    }
}

fn canonical_line(requirement: &Requirement, version: &str) -> String {
    let mut line = requirement.key();
    let mut extras: Vec<String> = requirement
        .extras
        .iter()
        .map(|e| requirements::normalize(e))
        .collect();
    extras.sort();
    extras.dedup();
    if !extras.is_empty() {
        line.push_str(&format!("[{}]", extras.join(",")));
    }
    line.push_str(&format!("=={}", version.to_ascii_lowercase()));
    if let Some(marker) = &requirement.marker {
        line.push_str(&format!(" ; {}", marker.trim()));
    }
    let mut hashes = requirement.hashes.clone();
    hashes.sort();
    hashes.dedup();
    for hash in hashes {
        line.push_str(&format!(" --hash={hash}"));
    }
    line
}

/// One entry as stored.
#[derive(Serialize, Deserialize)]
struct Entry {
    image: String,
    requirements: Vec<String>,
    /// `name==version`, in the resolver's order.
    packages: Vec<String>,
}

/// The memo of one node's package cache.
#[derive(Clone, Debug)]
pub struct Memo {
    dir: PathBuf,
}

impl Memo {
    /// Entries live in `dir`, which the cache creates (manager-only).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The resolution recorded for `key` (names and versions), or `None`
    /// when there is none or it does not pass the checks (logged).
    pub fn lookup(&self, key: &Key) -> Option<Vec<(String, String)>> {
        let path = self.dir.join(key.file_name());
        let mut text = String::new();
        match std::fs::File::open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            opened => {
                let read = opened.and_then(|f| f.take(ENTRY_LIMIT + 1).read_to_string(&mut text));
                if let Err(e) = read {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable resolution memo entry; resolving anew");
                    return None;
                }
            }
        }
        match parse_entry(&text, key) {
            Ok(packages) => Some(packages),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "ignoring a resolution memo entry; resolving anew");
                None
            }
        }
    }

    /// Records that `key` resolved to `packages`, replacing any entry.
    pub fn record(&self, key: &Key, packages: &[(String, String)]) -> anyhow::Result<()> {
        let entry = Entry {
            image: key.image.clone(),
            requirements: key.lines.clone(),
            packages: packages.iter().map(|(n, v)| format!("{n}=={v}")).collect(),
        };
        let body = serde_json::to_vec_pretty(&entry)?;
        let name = key.file_name();
        let tmp = self.dir.join(format!(
            ".tmp-{}-{name}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(&name)))
            .with_context(|| format!("writing the resolution memo entry {name}"))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
    }
}

/// Checks an entry's text against the key it was looked up by.
fn parse_entry(text: &str, key: &Key) -> anyhow::Result<Vec<(String, String)>> {
    if text.len() as u64 > ENTRY_LIMIT {
        bail!("larger than {ENTRY_LIMIT} bytes");
    }
    let entry: Entry = serde_json::from_str(text).context("not a memo entry")?;
    if entry.image != key.image || entry.requirements != key.lines {
        bail!("it records another image or requirement set");
    }
    if entry.packages.len() > MAX_PACKAGES {
        bail!("it lists more than {MAX_PACKAGES} packages");
    }
    let mut packages: Vec<(String, String)> = Vec::with_capacity(entry.packages.len());
    for package in &entry.packages {
        let (name, version) = package
            .split_once("==")
            .filter(|(n, v)| requirements::valid_name(n) && requirements::valid_version(v))
            .with_context(|| format!("{package:?} is not name==version"))?;
        if packages.iter().any(|(n, _)| same_name(n, name)) {
            bail!("it lists {name} twice");
        }
        packages.push((name.to_string(), version.to_string()));
    }
    for (name, version) in &key.pins {
        let listed = packages
            .iter()
            .any(|(n, v)| same_name(n, name) && v.eq_ignore_ascii_case(version));
        if !listed {
            bail!("it does not list the pinned {name}=={version}");
        }
    }
    Ok(packages)
}

fn same_name(a: &str, b: &str) -> bool {
    requirements::normalize(a) == requirements::normalize(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = "openlambda/python:0123456789abcdef";

    fn key(text: &str) -> Option<Key> {
        Key::of(&requirements::parse(text).unwrap(), IMAGE)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_exact_pins_have_a_key() {
        assert!(key("six==1.16.0\n").is_some());
        assert!(key("six==1.16.0 --hash=sha256:ab\nidna==3.7 ; python_version >= '3'\n").is_some());
        for unpinned in [
            "six\n",
            "six>=1.0\n",
            "six==1.*\n",
            "six===1.16.0\n",
            "six==1.16.0,!=1.15\n",
            "six~=1.16\n",
            "six==1.16.0\nidna\n",
        ] {
            assert_eq!(key(unpinned), None, "{unpinned}");
        }
    }

    #[test]
    fn the_key_ignores_order_case_spelling_comments_and_duplicates() {
        let a = key("# deps\nFlask==3.0.3\nzope.interface==6.4 # why\n").unwrap();
        let b = key("zope_Interface==6.4\n\nflask==3.0.3\nflask==3.0.3\n").unwrap();
        assert_eq!(a.lines, b.lines);
        assert_eq!(a.file_name(), b.file_name());
        assert_eq!(a.lines, ["flask==3.0.3", "zope-interface==6.4"]);
        let extras = key("Requests[SOCKS,security]==2.32.3\n").unwrap();
        let reordered = key("requests[security,socks]==2.32.3\n").unwrap();
        assert_eq!(extras.lines, ["requests[security,socks]==2.32.3"]);
        assert_eq!(extras.file_name(), reordered.file_name());
        let hashed = key("six==1.16.0 --hash=sha256:bb --hash=sha256:AA\n").unwrap();
        assert_eq!(
            hashed.lines,
            ["six==1.16.0 --hash=sha256:aa --hash=sha256:bb"]
        );
    }

    #[test]
    fn what_changes_the_resolution_changes_the_key() {
        let base = key("six==1.16.0\n").unwrap().file_name();
        for other in [
            "six==1.17.0\n",
            "six[x]==1.16.0\n",
            "six==1.16.0 ; python_version >= '3'\n",
            "six==1.16.0 --hash=sha256:aa\n",
            "six==1.16.0\nidna==3.7\n",
        ] {
            assert_ne!(key(other).unwrap().file_name(), base, "{other}");
        }
        let parsed = requirements::parse("six==1.16.0\n").unwrap();
        let elsewhere = Key::of(&parsed, "openlambda/python:ffff").unwrap();
        assert_ne!(elsewhere.file_name(), base, "another image");
    }

    #[test]
    fn entries_round_trip_and_bad_ones_are_ignored() {
        let data = tempfile::tempdir().unwrap();
        let memo = Memo::new(data.path().to_path_buf());
        let k = key("Flask==3.0.3\n").unwrap();
        assert_eq!(memo.lookup(&k), None, "no entry yet");
        let resolved = pairs(&[("flask", "3.0.3"), ("werkzeug", "3.0.4")]);
        memo.record(&k, &resolved).unwrap();
        assert_eq!(memo.lookup(&k), Some(resolved.clone()));
        let files: Vec<_> = std::fs::read_dir(data.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "no temporary file left");

        let path = data.path().join(k.file_name());
        let entry = |packages: &str| {
            format!(
                r#"{{"image": "{IMAGE}", "requirements": ["flask==3.0.3"], "packages": {packages}}}"#
            )
        };
        let bad = [
            "{not json".to_string(),
            String::new(),
            entry(r#"["flask==3.0.3", "../evil==1.0"]"#),
            entry(r#"["flask==3.0.3", "werkzeug==../1"]"#),
            entry(r#"["flask==3.0.3", "werkzeug"]"#),
            entry(r#"["flask==3.0.3", "flask==3.0.3"]"#),
            entry(r#"["werkzeug==3.0.4"]"#),
            entry(r#"["flask==2.0.0"]"#),
            entry(r#""flask==3.0.3""#),
            entry(r#"["flask==3.0.3"]"#).replace(IMAGE, "openlambda/python:other"),
            entry(r#"["flask==3.0.3"]"#).replace("\"flask==3.0.3\"]", "\"flask==3.0.2\"]"),
            format!(
                "{}{}",
                entry(r#"["flask==3.0.3"]"#),
                " ".repeat(ENTRY_LIMIT as usize)
            ),
        ];
        for text in bad {
            std::fs::write(&path, &text).unwrap();
            assert_eq!(memo.lookup(&k), None, "{}", &text[..text.len().min(200)]);
        }
        std::fs::write(&path, entry(r#"["Flask==3.0.3", "MarkupSafe==2.1.5"]"#)).unwrap();
        assert_eq!(
            memo.lookup(&k),
            Some(pairs(&[("Flask", "3.0.3"), ("MarkupSafe", "2.1.5")])),
            "names as pip spells them"
        );
        std::fs::write(
            &path,
            entry(r#"["flask==3.0.3", "Mark_upSafe==1", "mark.upsafe==2"]"#),
        )
        .unwrap();
        assert_eq!(memo.lookup(&k), None, "one package twice, spelled apart");
        let windows = key("six==1.16.0\npywin32==306 ; sys_platform == 'win32'\n").unwrap();
        memo.record(&windows, &pairs(&[("six", "1.16.0")])).unwrap();
        assert!(
            memo.lookup(&windows).is_some(),
            "a requirement its marker leaves out need not be listed"
        );
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert_eq!(memo.lookup(&k), None, "unreadable");
    }
}
