//! The import cache's bookkeeping: which package sets to keep imported in
//! prewarmed containers, and which container a function may take.
//!
//! The rule (why a function may take a container that imported packages
//! before its code was loaded): every package directory the container put
//! on its import path is one the function resolved itself, at the very
//! same version (the set is a subset of the function's packages, which are
//! directories named `name-version`), so no import of the function can
//! find another version than it would alone; the environment the imports
//! ran with is the function's own (a package may read it when imported);
//! and no top-level name in the function's code shadows a module imported
//! (its own `six.py` must win over the package `six`). What is left is that
//! a package of its own was imported before its handler asked for it:
//! what a handler importing its dependencies at the top does anyway.
//! A container that imported anything else is never handed to it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::demand::{Demand, Score};
use super::*;
use crate::sandbox::ImportSet;

/// A set whose container failed is not tried again for this long.
const FAILED_BACKOFF: Duration = Duration::from_secs(600);
/// Scores below this are forgotten (two half-lives after one cold start).
const FORGET_BELOW: f64 = 0.25;

#[derive(Default)]
pub(crate) struct ImportCache {
    /// Sets the operator pinned (`OL_POOL_IMPORT_CACHE`), resolved.
    pinned: Vec<Arc<ImportSet>>,
    /// The package sets of functions started cold, by how often.
    scores: HashMap<Arc<ImportSet>, Score>,
    /// Sets whose container could not import them, and when.
    failed: HashMap<Arc<ImportSet>, Instant>,
}

/// A function's packages as a set to keep imported: all of them, with its
/// environment. `None` for a function with no packages, or whose runtime
/// has no import cache (Node).
pub(crate) fn set_of(function: &FunctionSpec) -> Option<ImportSet> {
    (function.runtime == Runtime::Python && !function.packages.is_empty()).then(|| ImportSet {
        dirs: function.packages.clone(),
        import: function.packages.clone(),
        env: function.environment.clone(),
    })
}

impl ImportCache {
    pub fn pin(&mut self, sets: Vec<ImportSet>) {
        self.pinned = sets.into_iter().map(Arc::new).collect();
    }

    pub fn failed(&mut self, set: &Arc<ImportSet>, now: Instant) {
        self.failed.insert(set.clone(), now);
    }

    /// The sets to keep imported, pinned ones first, then those of
    /// functions started cold, most often first, at most `automatic` of
    /// them.
    pub fn wanted(
        &mut self,
        now: Instant,
        half_life: Duration,
        automatic: usize,
    ) -> Vec<Arc<ImportSet>> {
        self.failed
            .retain(|_, at| now.saturating_duration_since(*at) < FAILED_BACKOFF);
        self.scores
            .retain(|_, score| score.at_time(now, half_life) >= FORGET_BELOW);
        let usable = |set: &Arc<ImportSet>| !self.failed.contains_key(set);
        let mut wanted: Vec<Arc<ImportSet>> =
            self.pinned.iter().filter(|s| usable(s)).cloned().collect();
        let mut ranked: Vec<(&Arc<ImportSet>, f64)> = self
            .scores
            .iter()
            .filter(|(set, _)| usable(set))
            // The same packages and environment as a pinned set: that one serves.
            .filter(|(set, _)| {
                !self
                    .pinned
                    .iter()
                    .any(|p| p.dirs == set.dirs && p.env == set.env)
            })
            .map(|(set, score)| (set, score.at_time(now, half_life)))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        wanted.extend(
            ranked
                .into_iter()
                .take(automatic)
                .map(|(set, _)| set.clone()),
        );
        wanted
    }
}

/// Whether `function` may take a container whose runtime imported `set`
/// (and so `imported`): see the module's doc for why this is safe.
pub(crate) fn serves(
    set: &ImportSet,
    imported: &Imported,
    function: &FunctionSpec,
    code_names: &BTreeSet<String>,
) -> bool {
    function.runtime == Runtime::Python
        && set.env == function.environment
        && set.dirs.iter().all(|d| function.packages.contains(d))
        && !imported.modules.iter().any(|m| code_names.contains(m))
        && imported.memory_mb.is_none_or(|mb| mb < function.memory_mb)
}

impl State {
    /// A call of `function` needs a container made ready: a prewarmed one
    /// specialised, or (`waits`) a new one, for which it waits in line
    /// (a part of one when containers serve several calls at once). The
    /// demand that sizes the prewarmed pool and chooses the import cache.
    pub(super) fn record_cold(
        &mut self,
        function: &FunctionSpec,
        waits: bool,
        settings: &PoolSettings,
    ) {
        if !function.fits_generic(settings.tmpfs_mb) {
            return;
        }
        let now = Instant::now();
        let half_life = settings.keep_alive;
        let containers = if waits {
            1.0 / f64::from(function.concurrency.max(1))
        } else {
            1.0
        };
        self.demand
            .entry(function.runtime)
            .or_insert_with(|| Demand::new(now))
            .record(now, containers, half_life);
        if let Some(set) = set_of(function) {
            self.imports
                .scores
                .entry(Arc::new(set))
                .or_insert_with(|| Score::new(now))
                .add(now, half_life);
        }
    }

    /// The prewarmed container `function` should take: of those of its
    /// runtime, one that imported the most of its packages (and may serve
    /// it), else the newest plain one.
    pub(super) fn best_prewarmed(&self, function: &FunctionSpec) -> Option<usize> {
        let code_names = self.code_names(function);
        let cached = self
            .prewarmed
            .iter()
            .enumerate()
            .filter(|(_, p)| p.kind.runtime == function.runtime)
            .filter_map(|(i, p)| {
                let set = p.kind.set.as_ref()?;
                let imported = p.imported.as_ref()?;
                let names = code_names?;
                serves(set, imported, function, names).then_some((i, set.dirs.len()))
            })
            .max_by_key(|(_, dirs)| *dirs)
            .map(|(i, _)| i);
        cached.or_else(|| {
            self.prewarmed
                .iter()
                .rposition(|p| p.kind.runtime == function.runtime && p.kind.set.is_none())
        })
    }

    fn code_names(&self, function: &FunctionSpec) -> Option<&BTreeSet<String>> {
        let (version, names) = self.functions.get(&function.name)?.code_names.as_ref()?;
        (*version == function.version).then_some(names.as_deref()?)
    }

    /// Whether the top-level names of `function`'s code are still to be
    /// looked at (once per version).
    pub fn needs_code_names(&self, function: &FunctionSpec) -> bool {
        self.functions
            .get(&function.name)
            .and_then(|f| f.code_names.as_ref())
            .is_none_or(|(version, _)| *version != function.version)
    }

    /// The top-level names of `function`'s code, or `None` when there were
    /// too many to look at (then it takes no import-cache container).
    pub fn set_code_names(&mut self, function: &FunctionSpec, names: Option<BTreeSet<String>>) {
        let f = self.functions.entry(function.name.clone()).or_default();
        f.code_names = Some((function.version.clone(), names.map(Arc::new)));
    }

    /// The operator's sets (`OL_POOL_IMPORT_CACHE`), resolved.
    pub fn pin_import_sets(&mut self, sets: Vec<ImportSet>) {
        self.imports.pin(sets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::testing::function;

    fn with_packages(packages: &[&str]) -> FunctionSpec {
        FunctionSpec {
            packages: packages.iter().map(|p| p.to_string()).collect(),
            ..(*function("f", 128, 1, 1)).clone()
        }
    }

    fn set(dirs: &[&str]) -> ImportSet {
        let dirs: Vec<String> = dirs.iter().map(|d| d.to_string()).collect();
        ImportSet {
            import: dirs.clone(),
            dirs,
            env: Default::default(),
        }
    }

    fn imported(modules: &[&str], mb: i32) -> Imported {
        Imported {
            modules: modules.iter().map(|m| m.to_string()).collect(),
            memory_mb: Some(mb),
            took: Duration::ZERO,
        }
    }

    #[test]
    fn only_the_exact_versions_the_function_pins_serve_it() {
        let none = BTreeSet::new();
        let six16 = set(&["six-1.16.0"]);
        let six = imported(&["six"], 20);
        assert!(serves(&six16, &six, &with_packages(&["six-1.16.0"]), &none));
        assert!(serves(
            &six16,
            &six,
            &with_packages(&["idna-3.7", "six-1.16.0"]),
            &none
        ));
        assert!(
            !serves(&six16, &six, &with_packages(&["six-1.15.0"]), &none),
            "another version of a package it pins"
        );
        assert!(
            !serves(&six16, &six, &with_packages(&[]), &none),
            "a package it does not have"
        );
        let both = set(&["six-1.16.0", "idna-3.7"]);
        assert!(!serves(&both, &six, &with_packages(&["six-1.16.0"]), &none));
    }

    #[test]
    fn environment_shadowing_code_and_memory_are_respected() {
        let none = BTreeSet::new();
        let six16 = set(&["six-1.16.0"]);
        let six = imported(&["six"], 20);
        let f = with_packages(&["six-1.16.0"]);
        let with_env = FunctionSpec {
            environment: [("A".to_string(), "1".to_string())].into(),
            ..f.clone()
        };
        assert!(
            !serves(&six16, &six, &with_env, &none),
            "imported without its environment"
        );
        let same_env = ImportSet {
            env: with_env.environment.clone(),
            ..six16.clone()
        };
        assert!(serves(&same_env, &six, &with_env, &none));
        let own_six: BTreeSet<String> = ["six".to_string()].into();
        assert!(
            !serves(&six16, &six, &f, &own_six),
            "its own six.py must win"
        );
        assert!(
            !serves(&six16, &imported(&["six"], 128), &f, &none),
            "no room left"
        );
    }

    #[test]
    fn pinned_sets_come_first_then_the_most_often_cold() {
        let t0 = Instant::now();
        let half = Duration::from_secs(600);
        let mut cache = ImportCache::default();
        cache.pin(vec![set(&["flask-3.0.3"])]);
        let mut add = |dirs: &[&str], times: usize| {
            let s = cache
                .scores
                .entry(Arc::new(set(dirs)))
                .or_insert_with(|| Score::new(t0));
            for _ in 0..times {
                s.add(t0, half);
            }
        };
        add(&["a-1"], 1);
        add(&["b-1"], 5);
        add(&["flask-3.0.3"], 9);
        let wanted = cache.wanted(t0, half, 1);
        let labels: Vec<String> = wanted.iter().map(|s| s.label()).collect();
        assert_eq!(
            labels,
            ["flask-3.0.3", "b-1"],
            "the pinned one, then the top automatic one"
        );
        cache.failed(&wanted[1], t0);
        let labels: Vec<String> = cache
            .wanted(t0, half, 1)
            .iter()
            .map(|s| s.label())
            .collect();
        assert_eq!(
            labels,
            ["flask-3.0.3", "a-1"],
            "a failed set is left out for a while"
        );
        assert_eq!(
            cache.wanted(t0 + half * 5, half, 5).len(),
            1,
            "scores are forgotten"
        );
    }
}
