//! The import cache as the rest of the manager sees it: pinning the
//! operator's sets, looking at a function's code before it may take an
//! import-cache container, and what the cache holds (for the status page,
//! tests and `ol bench`). The policy is in `state/imports.rs` and
//! `state/prewarm.rs`; the runtime's half in `sandbox::preimport`.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use super::{Inner, Pool};
use crate::function::FunctionSpec;
use crate::packages::{dir_name, Installer};
use crate::sandbox::ImportSet;

/// Entries of a code directory looked at; a code tree with more top-level
/// entries takes no import-cache container.
const MAX_CODE_ENTRIES: usize = 10_000;

/// One ready import-cache container.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CachedSet {
    /// The packages imported, e.g. `flask-3.0.3`.
    pub set: String,
    /// Every package directory on its import path.
    pub dirs: Vec<String>,
    /// The top-level modules its runtime imported.
    pub modules: Vec<String>,
    /// Its memory after the imports, from its memory cgroup (MB).
    pub memory_mb: Option<i32>,
}

impl Pool {
    /// Keeps these sets imported besides those the pool chooses
    /// (`OL_POOL_IMPORT_CACHE`, resolved to cache directories).
    pub fn pin_import_sets(&self, sets: Vec<ImportSet>) {
        self.inner.update(|state| state.pin_import_sets(sets));
        self.inner.refill.notify_one();
    }

    /// The import-cache containers ready now.
    pub fn import_cache(&self) -> Vec<CachedSet> {
        self.inner.state.lock().unwrap().import_cache_view()
    }
}

/// Resolves and installs the operator's sets (`OL_POOL_IMPORT_CACHE`)
/// through the installer, as a deploy would (the packages a set names and
/// their dependencies, at the versions the resolver picks for them), then
/// pins them. A set that cannot be installed is skipped with a warning
/// naming it; the others are kept.
pub async fn pin_configured_sets(
    pool: Pool,
    installer: Installer,
    sets: Vec<Vec<(String, String)>>,
) {
    let mut pinned = Vec::new();
    for set in sets {
        let requirements: String = set.iter().map(|(n, v)| format!("{n}=={v}\n")).collect();
        let label = requirements.trim().replace('\n', ",");
        match installer.install("import-cache", &requirements).await {
            Ok(resolved) => {
                tracing::info!(set = %label, packages = ?resolved.dirs, "import cache: pinned set installed");
                pinned.push(ImportSet {
                    dirs: resolved.dirs,
                    import: set.iter().map(|(n, v)| dir_name(n, v)).collect(),
                    env: Default::default(),
                });
            }
            Err(e) => tracing::warn!(set = %label, error = %e,
                "OL_POOL_IMPORT_CACHE: this set could not be installed, so it is not kept imported"),
        }
    }
    pool.pin_import_sets(pinned);
}

impl Inner {
    /// Looks at the top-level names of `function`'s code once per version:
    /// a name that is also a module an import-cache container imported
    /// would be shadowed there (the function's own module must win).
    pub(super) fn know_code(&self, function: &FunctionSpec, code: &Path) {
        if !self.state.lock().unwrap().needs_code_names(function) {
            return;
        }
        let names = code_names(code);
        self.state.lock().unwrap().set_code_names(function, names);
    }
}

/// The names importable from the top of a code directory: each entry's
/// name up to its first dot (`util.py`, `util/`, `util.cpython-311.so`
/// are all `util`). `None` when it cannot be read or holds too many.
fn code_names(dir: &Path) -> Option<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for (i, entry) in std::fs::read_dir(dir).ok()?.enumerate() {
        if i >= MAX_CODE_ENTRIES {
            return None;
        }
        let name = entry.ok()?.file_name();
        let name = name.to_string_lossy();
        let stem = name.split('.').next().unwrap_or_default();
        if !stem.is_empty() {
            names.insert(stem.to_string());
        }
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_what_an_import_would_find() {
        let dir = tempfile::tempdir().unwrap();
        for file in [
            "f.py",
            "six.py",
            "util.cpython-311-x86_64-linux-gnu.so",
            ".hidden",
        ] {
            std::fs::write(dir.path().join(file), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        let names = code_names(dir.path()).unwrap();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(names, ["f", "pkg", "six", "util"]);
        assert_eq!(code_names(&dir.path().join("missing")), None);
    }
}
