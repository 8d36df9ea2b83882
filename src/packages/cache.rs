//! The shared package cache and what counts as installed in it.
//!
//! `{data_dir}/packages/python/{name}-{version}/` is mounted read-only into
//! every function container. A directory there counts as installed only when
//! the manager's own marker, `{data_dir}/packages/python.verified/{dir}`,
//! exists: a directory that anyone else made (an older builder that had the
//! cache mounted read-write, a crash half-way) is replaced, never trusted.
//! The manager writes the marker only after it checked the build's result
//! and moved it into place with one rename.
//!
//! The marker also records the `--hash` values pip checked the download
//! against, one per line after its first. Before any code of the package
//! ran, pip refused a download matching none of them, so the installed
//! artifact has one of those hashes. A requirement with hashes `T` is met by
//! the cached version only when that recorded set is not empty and lies
//! within `T` (then whichever one matched is one `T` allows); otherwise the
//! version is installed again under `T`. An install without hashes (and any
//! marker written before hashes were recorded) meets only requirements
//! without hashes.
//!
//! `{data_dir}/packages/python.resolved/` holds the resolution memo
//! ([`super::memo`]), manager-only like the markers.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};

/// Files one package may hold; more is not a package.
const MAX_FILES: u64 = 200_000;
/// Bytes one package may hold.
const MAX_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// The first line of every completion marker.
const MARKER_HEAD: &str = "verified by the manager";
/// Bytes of a marker read; the manager writes far less.
const MARKER_LIMIT: u64 = 64 * 1024;

#[derive(Clone, Debug)]
pub struct Cache {
    /// Mounted at `/packages` in function containers.
    pub root: PathBuf,
    /// The manager's completion markers; never mounted anywhere.
    verified: PathBuf,
    /// Per-build directories, on the same file system as `root`.
    pub builds: PathBuf,
    /// The resolution memo's entries; never mounted anywhere.
    pub resolved: PathBuf,
}

impl Cache {
    pub fn new(data_dir: &Path) -> Self {
        let packages = data_dir.join("packages");
        Self {
            root: packages.join("python"),
            verified: packages.join("python.verified"),
            builds: packages.join("builds"),
            resolved: packages.join("python.resolved"),
        }
    }

    pub fn create_dirs(&self) -> anyhow::Result<()> {
        for dir in [&self.root, &self.verified, &self.builds, &self.resolved] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Only the manager looks into the markers, the builds and the memo.
        for dir in [&self.verified, &self.builds, &self.resolved] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// Removes build directories a crashed or killed manager left behind
    /// (at start, when no build of this manager runs).
    pub fn remove_leftover_builds(&self) {
        let Ok(entries) = std::fs::read_dir(&self.builds) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "removing a leftover build");
            }
        }
    }

    /// Whether `dir` (e.g. `six-1.16.0`) was installed and verified by the manager.
    pub fn is_installed(&self, dir: &str) -> bool {
        self.verified.join(dir).is_file() && self.root.join(dir).is_dir()
    }

    /// Whether `dir` is installed and meets a requirement pinned to
    /// `hashes` (none: any verified install will do; see the module docs).
    pub fn satisfies(&self, dir: &str, hashes: &[String]) -> bool {
        if !self.is_installed(dir) {
            return false;
        }
        if hashes.is_empty() {
            return true;
        }
        let checked = self.checked_hashes(dir);
        !checked.is_empty() && checked.iter().all(|h| hashes.contains(h))
    }

    /// The hashes `dir`'s install was checked against, from its marker.
    fn checked_hashes(&self, dir: &str) -> Vec<String> {
        let mut text = String::new();
        let read = std::fs::File::open(self.verified.join(dir))
            .and_then(|f| f.take(MARKER_LIMIT).read_to_string(&mut text));
        if read.is_err() {
            return Vec::new();
        }
        let mut lines = text.lines();
        if lines.next() != Some(MARKER_HEAD) {
            return Vec::new();
        }
        lines.map(str::to_string).collect()
    }

    /// Checks a build's result, then moves it into the cache as `dir` and
    /// marks it installed, checked against `hashes` (what pip was given).
    pub fn adopt(&self, built: &Path, dir: &str, hashes: &[String]) -> anyhow::Result<()> {
        verify_and_normalize(built)?;
        let target = self.root.join(dir);
        // An unmarked directory of that name is not ours: set it aside first.
        let _ = std::fs::remove_file(self.verified.join(dir));
        if target.symlink_metadata().is_ok() {
            let aside = built.with_file_name(format!("replaced-{dir}"));
            std::fs::rename(&target, &aside)
                .with_context(|| format!("setting aside the unverified {}", target.display()))?;
            let _ = std::fs::remove_dir_all(&aside).or_else(|_| std::fs::remove_file(&aside));
        }
        std::fs::rename(built, &target)
            .with_context(|| format!("moving the build into {}", target.display()))?;
        let marker = self.verified.join(dir);
        let tmp = self.verified.join(format!(".tmp-{dir}"));
        let body: String = std::iter::once(MARKER_HEAD)
            .chain(hashes.iter().map(String::as_str))
            .map(|line| format!("{line}\n"))
            .collect();
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, &marker))
            .with_context(|| format!("writing {}", marker.display()))?;
        Ok(())
    }
}

/// Refuses anything a package does not hold (device files, sockets, links
/// that leave the package, absurd sizes) and gives every file the manager's
/// ownership and read-only modes for everyone else.
fn verify_and_normalize(root: &Path) -> anyhow::Result<()> {
    let meta = root
        .symlink_metadata()
        .context("the builder left no result")?;
    if !meta.is_dir() {
        bail!("the builder's result is not a directory");
    }
    let me = std::fs::metadata("/proc/self").context("reading the manager's own user")?;
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            let meta = path.symlink_metadata()?;
            files += 1;
            bytes = bytes.saturating_add(meta.len());
            if files > MAX_FILES || bytes > MAX_BYTES {
                bail!("the package is larger than {MAX_FILES} files or {MAX_BYTES} bytes");
            }
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            let kind = meta.file_type();
            if kind.is_symlink() {
                let target = std::fs::read_link(&path)?;
                if !stays_inside(&relative, &target) {
                    bail!(
                        "the package holds a link {} -> {} that leaves it",
                        relative.display(),
                        target.display()
                    );
                }
            } else if !(kind.is_dir() || kind.is_file()) {
                bail!(
                    "the package holds {}, which is neither file nor folder",
                    relative.display()
                );
            }
            if meta.uid() != me.uid() || meta.gid() != me.gid() {
                std::os::unix::fs::lchown(&path, Some(me.uid()), Some(me.gid()))
                    .with_context(|| format!("taking ownership of {}", path.display()))?;
            }
            if kind.is_dir() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
                stack.push(path);
            } else if kind.is_file() {
                let mode = if meta.mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            }
        }
    }
    std::os::unix::fs::lchown(root, Some(me.uid()), Some(me.gid()))?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Whether a link at `link` (relative to the package) pointing at `target`
/// stays inside the package.
fn stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = link.components().count() as i64 - 1;
    for part in target.components() {
        match part {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_must_stay_inside() {
        assert!(stays_inside(Path::new("a/link"), Path::new("../b/file")));
        assert!(stays_inside(Path::new("link"), Path::new("b/file")));
        assert!(!stays_inside(Path::new("a/link"), Path::new("../../x")));
        assert!(!stays_inside(Path::new("link"), Path::new("/etc/passwd")));
    }

    #[test]
    fn only_the_managers_marker_counts() {
        let data = tempfile::tempdir().unwrap();
        let cache = Cache::new(data.path());
        cache.create_dirs().unwrap();
        // Pre-created by someone else: not installed.
        std::fs::create_dir_all(cache.root.join("six-1.16.0")).unwrap();
        std::fs::write(cache.root.join("six-1.16.0/six.py"), "poisoned").unwrap();
        assert!(!cache.is_installed("six-1.16.0"));

        let built = cache.builds.join("b1/out");
        std::fs::create_dir_all(built.join("pkg")).unwrap();
        std::fs::write(built.join("six.py"), "real").unwrap();
        std::os::unix::fs::symlink("../six.py", built.join("pkg/link")).unwrap();
        cache.adopt(&built, "six-1.16.0", &[]).unwrap();
        assert!(cache.is_installed("six-1.16.0"));
        let six = std::fs::read_to_string(cache.root.join("six-1.16.0/six.py")).unwrap();
        assert_eq!(six, "real");
        assert!(!built.exists());
    }

    #[test]
    fn a_hashed_requirement_needs_an_install_checked_against_its_hashes() {
        let data = tempfile::tempdir().unwrap();
        let cache = Cache::new(data.path());
        cache.create_dirs().unwrap();
        let adopt = |dir: &str, hashes: &[&str]| {
            let built = cache.builds.join(dir).join("out");
            std::fs::create_dir_all(&built).unwrap();
            let hashes: Vec<String> = hashes.iter().map(|h| h.to_string()).collect();
            cache.adopt(&built, dir, &hashes).unwrap();
        };
        let owned = |hashes: &[&str]| hashes.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        adopt("plain-1.0", &[]);
        adopt("hashed-1.0", &["sha256:aa", "sha256:bb"]);
        assert!(cache.satisfies("plain-1.0", &[]));
        assert!(!cache.satisfies("plain-1.0", &owned(&["sha256:aa"])));
        assert!(cache.satisfies("hashed-1.0", &[]));
        assert!(cache.satisfies("hashed-1.0", &owned(&["sha256:bb", "sha256:aa"])));
        assert!(cache.satisfies(
            "hashed-1.0",
            &owned(&["sha256:aa", "sha256:bb", "sha256:cc"])
        ));
        // Which of aa and bb matched is not known: aa alone is not enough.
        assert!(!cache.satisfies("hashed-1.0", &owned(&["sha256:aa"])));
        assert!(!cache.satisfies("hashed-1.0", &owned(&["sha256:cc"])));
        assert!(!cache.satisfies("missing-1.0", &[]));
        // A marker from before hashes were recorded: checked against none.
        std::fs::write(
            cache.verified.join("plain-1.0"),
            "verified by the manager\n",
        )
        .unwrap();
        assert!(cache.satisfies("plain-1.0", &[]));
        assert!(!cache.satisfies("plain-1.0", &owned(&["sha256:aa"])));
    }

    #[test]
    fn refuses_results_that_are_not_packages() {
        let data = tempfile::tempdir().unwrap();
        let cache = Cache::new(data.path());
        cache.create_dirs().unwrap();
        let built = cache.builds.join("b2/out");
        std::fs::create_dir_all(&built).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", built.join("evil")).unwrap();
        let err = cache
            .adopt(&built, "evil-1.0", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("leaves it"), "{err}");
        assert!(!cache.is_installed("evil-1.0"));
        assert!(!cache.root.join("evil-1.0").exists());
        let missing = cache.adopt(&cache.builds.join("none"), "x-1.0", &[]);
        assert!(missing.is_err());
        cache.remove_leftover_builds();
        assert_eq!(std::fs::read_dir(&cache.builds).unwrap().count(), 0);
    }
}
