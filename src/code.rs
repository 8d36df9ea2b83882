//! Zip intake and the content-addressed code store.
//!
//! [`inspect_upload`] checks an upload entirely in memory: it writes
//! nothing, so a rejected upload leaves nothing behind, and it reads every
//! entry in full (methods, encryption, sizes, CRCs, name clashes, entry
//! count), so a zip it accepts cannot fail to unpack later. [`inspect`] is
//! the same for zips already stored, without the entry bound that may have
//! changed since. [`CodeStore::unpack`] then puts an
//! accepted zip at `{data_dir}/code/{sha256}/`, atomically (unpack into a
//! temporary directory, then rename), so a reader never sees half a tree.

use std::io::{Cursor, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use zip::{CompressionMethod, ZipArchive};

use crate::manifest::{Limits, Manifest};

pub const MAX_ZIP_BYTES: usize = 50 * 1024 * 1024;
pub const MAX_UNZIPPED_BYTES: u64 = 250 * 1024 * 1024;
const MANIFEST_FILE: &str = "ol.yaml";

/// Why an upload was refused; every message says how to fix it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CodeError {
    #[error(
        "the body is not a zip archive ({0}); upload the zip with Content-Type: application/zip"
    )]
    NotZip(String),
    #[error("the zip is {0} bytes; the limit is 50 MiB zipped")]
    TooLarge(usize),
    #[error("the zip unpacks to {0} bytes; the limit is 250 MiB unzipped")]
    TooLargeUnzipped(u64),
    #[error("zip entry {0:?} has an absolute path; zip the folder's contents with relative paths")]
    AbsolutePath(String),
    #[error("zip entry {0:?} leaves the folder with '..'; zip the folder's contents with relative paths")]
    ParentDir(String),
    #[error(
        "zip entry {0:?} is a symlink; symlinks are not allowed, put the file itself in the zip"
    )]
    Symlink(String),
    #[error("zip entry {0:?} is not readable: {1}")]
    BadEntry(String, String),
    #[error("the zip has {count} entries; the limit is {limit} (OL_ZIP_MAX_ENTRIES). Leave out what the handler does not need (tests, caches, unused modules), or ask the operator to raise the limit")]
    TooManyEntries { count: usize, limit: usize },
    #[error("zip entry {entry:?} is compressed with {method}; only stored and deflate entries are accepted. Re-create the zip with deflate (the default of `zip -r`, `ol deploy` and most tools)")]
    Compression { entry: String, method: String },
    #[error("zip entry {0:?} is encrypted; re-create the zip without a password")]
    Encrypted(String),
    #[error("zip entry {0:?} is damaged: {1}. Re-create the zip and upload it again")]
    Damaged(String, String),
    #[error("the zip holds {0:?} both as a file and as a folder (or twice); rename one of them and zip again")]
    Clash(String),
    #[error("handler file {wanted} not found in the zip; found: {found}. Add {wanted}, or name your handler in ol.yaml (handler: module.function)")]
    NoHandler { wanted: String, found: String },
    #[error("{0}")]
    Manifest(String),
}

/// An upload that passed every check.
#[derive(Debug)]
pub struct Inspected {
    /// sha256 of the zip, hex: the code version.
    pub sha256: String,
    pub manifest: Manifest,
    /// A folder every entry sits in (`hello/` when the folder itself was
    /// zipped), stripped when unpacking; empty when the files are at the top.
    pub strip_prefix: String,
    /// `requirements.txt`, when the zip has one with any requirement in it.
    pub requirements: Option<String>,
}

/// Checks a stored zip (accepted at upload once) without writing anything.
pub fn inspect(zip: &[u8]) -> Result<Inspected, CodeError> {
    inspect_upload(zip, usize::MAX, &Limits::NONE)
}

/// Checks an uploaded zip without writing anything: everything that could
/// fail when unpacking it fails here, before packages are installed or
/// anything is stored. Every entry is read in full (bounded by the declared
/// sizes), so a damaged or lying entry is found now.
pub fn inspect_upload(
    zip: &[u8],
    max_entries: usize,
    limits: &Limits,
) -> Result<Inspected, CodeError> {
    if zip.len() > MAX_ZIP_BYTES {
        return Err(CodeError::TooLarge(zip.len()));
    }
    let mut archive =
        ZipArchive::new(Cursor::new(zip)).map_err(|e| CodeError::NotZip(e.to_string()))?;
    if archive.len() > max_entries {
        return Err(CodeError::TooManyEntries {
            count: archive.len(),
            limit: max_entries,
        });
    }
    let mut names = Vec::with_capacity(archive.len());
    let mut tree = Tree::default();
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| CodeError::NotZip(e.to_string()))?;
        let name = entry
            .name()
            .map_err(|e| CodeError::BadEntry(format!("#{i}"), e.to_string()))?
            .into_owned();
        check_entry_path(&name)?;
        if entry.is_symlink() {
            return Err(CodeError::Symlink(name));
        }
        if entry.encrypted() {
            return Err(CodeError::Encrypted(name));
        }
        check_method(&name, entry.compression())?;
        total = total.saturating_add(entry.size());
        if total > MAX_UNZIPPED_BYTES {
            return Err(CodeError::TooLargeUnzipped(total));
        }
        tree.add(&name, entry.is_dir())?;
        if !entry.is_dir() {
            names.push(name);
        }
    }
    for i in 0..archive.len() {
        read_fully(&mut archive, i)?;
    }
    let strip_prefix = common_folder(&names);
    let files: Vec<&str> = names.iter().map(|n| &n[strip_prefix.len()..]).collect();

    // No ol.yaml reads as an empty one: the operator's defaults.
    let yaml = match files.iter().position(|f| *f == MANIFEST_FILE) {
        None => String::new(),
        Some(i) => String::from_utf8(read_entry(&mut archive, &names[i], 1024 * 1024)?)
            .map_err(|_| CodeError::Manifest("ol.yaml is not UTF-8 text".into()))?,
    };
    let mut manifest = Manifest::parse_within(&yaml, limits).map_err(CodeError::Manifest)?;
    manifest.pick_handler(&files);
    let wanted = manifest.handler_file();
    if !files.contains(&wanted.as_str()) {
        let mut found: Vec<&str> = files.clone();
        found.sort_unstable();
        found.truncate(20);
        let found = if found.is_empty() {
            "nothing (the zip is empty)".to_string()
        } else {
            found.join(", ")
        };
        return Err(CodeError::NoHandler { wanted, found });
    }
    let requirements = match files.iter().position(|f| *f == "requirements.txt") {
        None => None,
        Some(i) => {
            let text = String::from_utf8(read_entry(&mut archive, &names[i], 1024 * 1024)?)
                .map_err(|_| {
                    CodeError::BadEntry("requirements.txt".into(), "not UTF-8 text".into())
                })?;
            let meaningful = text
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .any(|l| !l.is_empty());
            meaningful.then_some(text)
        }
    };
    Ok(Inspected {
        sha256: hex_sha256(zip),
        manifest,
        strip_prefix,
        requirements,
    })
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Only the methods the manager can unpack; told from the entry's header.
fn check_method(name: &str, method: CompressionMethod) -> Result<(), CodeError> {
    if method == CompressionMethod::Stored || method == CompressionMethod::Deflated {
        return Ok(());
    }
    let known = [
        (CompressionMethod::BZIP2, "bzip2"),
        (CompressionMethod::LZMA, "LZMA"),
        (CompressionMethod::ZSTD, "zstd"),
        (CompressionMethod::XZ, "xz"),
        (CompressionMethod::DEFLATE64, "deflate64"),
    ];
    let method = known
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| format!("{method:?}"));
    Err(CodeError::Compression {
        entry: name.to_string(),
        method,
    })
}

/// Reads entry `i` to its end: the decompressor and the CRC-32 check run,
/// and the size must be the declared one.
fn read_fully(archive: &mut ZipArchive<Cursor<&[u8]>>, i: usize) -> Result<(), CodeError> {
    let entry = archive
        .by_index(i)
        .map_err(|e| CodeError::Damaged(format!("#{i}"), e.to_string()))?;
    let name = entry.name().unwrap_or_default().into_owned();
    let declared = entry.size();
    let mut limited = entry.take(declared.saturating_add(1));
    let read = std::io::copy(&mut limited, &mut std::io::sink()).map_err(|e| {
        let reason = if e.to_string().contains("checksum") {
            "its CRC-32 does not match its data".to_string()
        } else {
            e.to_string()
        };
        CodeError::Damaged(name.clone(), reason)
    })?;
    if read != declared {
        return Err(CodeError::Damaged(
            name,
            format!("it holds {read} or more bytes but declares {declared}"),
        ));
    }
    Ok(())
}

/// Files and folders seen so far, to find a name that is both.
#[derive(Default)]
struct Tree {
    files: std::collections::HashSet<String>,
    folders: std::collections::HashSet<String>,
}

impl Tree {
    fn add(&mut self, name: &str, is_dir: bool) -> Result<(), CodeError> {
        let parts: Vec<&str> = name
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        for end in 1..parts.len() {
            let folder = parts[..end].join("/");
            if self.files.contains(&folder) {
                return Err(CodeError::Clash(folder));
            }
            self.folders.insert(folder);
        }
        let path = parts.join("/");
        if path.is_empty() {
            return Ok(());
        }
        if is_dir {
            if self.files.contains(&path) {
                return Err(CodeError::Clash(path));
            }
            self.folders.insert(path);
        } else if self.folders.contains(&path) || !self.files.insert(path.clone()) {
            return Err(CodeError::Clash(path));
        }
        Ok(())
    }
}

fn check_entry_path(name: &str) -> Result<(), CodeError> {
    if name.contains('\0') {
        return Err(CodeError::BadEntry(
            name.replace('\0', "?"),
            "its name holds a NUL byte; rename the file".into(),
        ));
    }
    if name.split('/').any(|part| part.len() > 255) {
        return Err(CodeError::BadEntry(
            name.to_string(),
            "a part of its path is longer than 255 bytes; shorten the name".into(),
        ));
    }
    let looks_absolute =
        name.starts_with('/') || name.starts_with('\\') || name.as_bytes().get(1) == Some(&b':');
    if looks_absolute {
        return Err(CodeError::AbsolutePath(name.to_string()));
    }
    if name.split(['/', '\\']).any(|part| part == "..") {
        return Err(CodeError::ParentDir(name.to_string()));
    }
    Ok(())
}

/// The single folder that holds every file, with its trailing `/`, if any.
fn common_folder(files: &[String]) -> String {
    let Some(first) = files.first() else {
        return String::new();
    };
    let Some((top, _)) = first.split_once('/') else {
        return String::new();
    };
    let prefix = format!("{top}/");
    if files.iter().all(|f| f.starts_with(&prefix)) {
        prefix
    } else {
        String::new()
    }
}

fn read_entry(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>, CodeError> {
    let entry = archive
        .by_name(name)
        .map_err(|e| CodeError::BadEntry(name.to_string(), e.to_string()))?;
    let mut buf = Vec::new();
    entry
        .take(limit)
        .read_to_end(&mut buf)
        .map_err(|e| CodeError::BadEntry(name.to_string(), e.to_string()))?;
    Ok(buf)
}

/// Unpacked code versions under `{data_dir}/code/{sha256}/`.
#[derive(Clone, Debug)]
pub struct CodeStore {
    root: PathBuf,
}

impl CodeStore {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("code"),
        }
    }

    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root.join(sha256)
    }

    /// Unpacks a zip that [`inspect`] accepted. Returns whether this call
    /// created the directory (so a failed deploy can take it back).
    pub fn unpack(&self, zip: &[u8], inspected: &Inspected) -> anyhow::Result<bool> {
        use anyhow::Context;
        let dest = self.path(&inspected.sha256);
        if dest.is_dir() {
            return Ok(false);
        }
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        let tmp = self.root.join(format!(
            ".tmp-{}-{}",
            &inspected.sha256[..12],
            uuid::Uuid::new_v4().simple()
        ));
        let result = unpack_into(zip, inspected, &tmp).and_then(|()| {
            match std::fs::rename(&tmp, &dest) {
                Ok(()) => Ok(true),
                // Another deploy of the same zip won the race: same content.
                Err(_) if dest.is_dir() => Ok(false),
                Err(e) => Err(e).with_context(|| format!("renaming into {}", dest.display())),
            }
        });
        if tmp.exists() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Removes an unpacked version (after a deploy that failed later on).
    pub fn remove(&self, sha256: &str) {
        let _ = std::fs::remove_dir_all(self.path(sha256));
    }
}

fn unpack_into(zip: &[u8], inspected: &Inspected, dest: &Path) -> anyhow::Result<()> {
    use anyhow::{bail, Context};
    use std::os::unix::fs::PermissionsExt;
    let mut archive = ZipArchive::new(Cursor::new(zip))?;
    std::fs::create_dir_all(dest)?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))?;
    let mut written: u64 = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i)?;
        let name = entry.name()?.into_owned();
        let Some(rel) = name.strip_prefix(&inspected.strip_prefix) else {
            continue;
        };
        let rel = Path::new(rel);
        // Already checked by inspect(); checked again where it matters.
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            if rel.as_os_str().is_empty() {
                continue;
            }
            bail!("zip entry {name:?} has an unsafe path");
        }
        let path = dest.join(rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&path)?;
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        // The declared size may lie (zip bombs): count what is really written.
        let n = std::io::copy(
            &mut (&mut entry).take(MAX_UNZIPPED_BYTES - written + 1),
            &mut out,
        )?;
        written += n;
        if written > MAX_UNZIPPED_BYTES {
            bail!(CodeError::TooLargeUnzipped(written));
        }
        // Readable by the container's unprivileged user; never writable by it.
        let exec = entry.unix_mode().is_some_and(|m| m & 0o111 != 0);
        std::fs::set_permissions(
            &path,
            std::fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, body) in files {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(body.as_bytes()).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn accepts_a_plain_handler() {
        let zip = zip_of(&[("f.py", "def f(event):\n    return event\n")]);
        let i = inspect(&zip).unwrap();
        assert_eq!(i.sha256, hex_sha256(&zip));
        assert_eq!(i.strip_prefix, "");
    }

    #[test]
    fn strips_a_zipped_folder() {
        let zip = zip_of(&[("hello/f.py", "x"), ("hello/lib/u.py", "y")]);
        assert_eq!(inspect(&zip).unwrap().strip_prefix, "hello/");
    }

    #[test]
    fn refuses_bad_archives() {
        assert!(matches!(inspect(b"hello"), Err(CodeError::NotZip(_))));
        let err = inspect(&zip_of(&[("main.py", "x"), ("util.py", "y")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "handler file f.py not found in the zip; found: main.py, util.py. \
             Add f.py, or name your handler in ol.yaml (handler: module.function)"
        );
        assert!(matches!(
            inspect(&zip_of(&[("f.py", "x"), ("../evil", "x")])),
            Err(CodeError::ParentDir(_))
        ));
        assert!(matches!(
            inspect(&zip_of(&[("f.py", "x"), ("/etc/evil", "x")])),
            Err(CodeError::AbsolutePath(_))
        ));
        assert!(matches!(
            inspect(&zip_of(&[("f.py", "x"), ("ol.yaml", "memory_mb: 1")])),
            Err(CodeError::Manifest(_))
        ));
    }

    #[test]
    fn refuses_symlinks() {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file("f.py", SimpleFileOptions::default()).unwrap();
        w.add_symlink("link", "/etc/passwd", SimpleFileOptions::default())
            .unwrap();
        let zip = w.finish().unwrap().into_inner();
        assert_eq!(
            inspect(&zip).unwrap_err(),
            CodeError::Symlink("link".into())
        );
    }

    #[test]
    fn the_entry_file_picks_the_style() {
        let zip = zip_of(&[("lambda_function.py", "x")]);
        assert_eq!(
            inspect(&zip).unwrap().manifest.handler,
            "lambda_function.lambda_handler"
        );
        let zip = zip_of(&[("lambda_function.py", "x"), ("f.py", "y")]);
        assert_eq!(inspect(&zip).unwrap().manifest.handler, "f.f");
        let zip = zip_of(&[("requirements.txt", "# nothing\n\n"), ("f.py", "y")]);
        assert_eq!(inspect(&zip).unwrap().requirements, None);
        let zip = zip_of(&[("requirements.txt", "six\n"), ("f.py", "y")]);
        assert_eq!(
            inspect(&zip).unwrap().requirements.as_deref(),
            Some("six\n")
        );
    }

    #[test]
    fn refuses_what_would_fail_when_unpacking() {
        let err = inspect_upload(
            &zip_of(&[("f.py", "x"), ("g.py", "y")]),
            1,
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(err, CodeError::TooManyEntries { count: 2, limit: 1 });
        let clash = zip_of(&[("f.py", "x"), ("lib", "x"), ("lib/u.py", "y")]);
        assert_eq!(inspect(&clash).unwrap_err(), CodeError::Clash("lib".into()));
        let twice = zip_of(&[("f.py", "x"), ("./f.py", "y")]);
        assert_eq!(
            inspect(&twice).unwrap_err(),
            CodeError::Clash("f.py".into())
        );
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        w.start_file("f.py", stored).unwrap();
        w.write_all(b"def f(e): return 1").unwrap();
        let mut crc = w.finish().unwrap().into_inner();
        let at = crc.windows(6).position(|w| w == b"return").unwrap();
        crc[at] = b'R';
        let err = inspect(&crc).unwrap_err();
        assert!(err.to_string().contains("CRC-32"), "{err}");
    }

    #[test]
    fn names_the_compression_method_to_avoid() {
        let err = check_method("f.py", CompressionMethod::BZIP2).unwrap_err();
        assert!(err.to_string().contains("bzip2"), "{err}");
        assert!(
            err.to_string().contains("Re-create the zip with deflate"),
            "{err}"
        );
        assert!(check_method("f.py", CompressionMethod::Deflated).is_ok());
    }

    #[test]
    fn manifest_names_the_handler() {
        let zip = zip_of(&[("ol.yaml", "handler: main.handle"), ("main.py", "x")]);
        assert_eq!(inspect(&zip).unwrap().manifest.handler, "main.handle");
    }

    #[test]
    fn unpacks_atomically_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = CodeStore::new(dir.path());
        let zip = zip_of(&[("app/f.py", "def f(e): return 1"), ("app/sub/x.txt", "x")]);
        let i = inspect(&zip).unwrap();
        assert!(store.unpack(&zip, &i).unwrap());
        assert!(!store.unpack(&zip, &i).unwrap());
        let root = store.path(&i.sha256);
        assert!(root.join("f.py").is_file());
        assert!(root.join("sub/x.txt").is_file());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("code"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(&i.sha256)]);
    }
}
