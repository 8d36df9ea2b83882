//! Packages: each package version installed once per host into the shared
//! cache, `{data_dir}/packages/python/{name}-{version}/`, which every
//! function container sees read-only at `/packages`.
//!
//! A deploy's requirements.txt is parsed here first ([`requirements`]):
//! anything but package requirements is refused before a container starts.
//! A set whose every requirement pins one exact version, resolved before in
//! this runtime image and all installed, is answered from the resolution
//! memo ([`memo`]) without any container or the index. Otherwise one builder
//! container resolves the requirements to exact versions (and, for such a
//! pinned set, the memo records the result), and each version the cache
//! lacks is installed by a builder of its own
//! into a per-build directory ([`builder`]); the manager checks the result
//! and moves it into the cache ([`cache`]). Every builder has a deadline
//! (`OL_PACKAGES_TIMEOUT_S`); at most `OL_PACKAGES_PARALLEL` run at once;
//! a `name==version` that is being installed is installed once, and other
//! deploys that need it wait for that install instead of starting their own.

pub mod builder;
pub mod cache;
pub mod memo;
pub mod requirements;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use bollard::Docker;
use futures_util::future::{FutureExt, Shared};
use serde::Serialize;

use crate::config::Settings;
use builder::{BuildDir, Job, Outcome};
use cache::Cache;
use memo::Memo;
use requirements::Requirement;

/// One package of a deploy, as the deploy reports it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PackageStep {
    pub name: String,
    pub version: String,
    /// `installed` now, or found `cached`.
    pub status: String,
    pub ms: u64,
}

impl PackageStep {
    fn new(name: &str, version: &str, status: &str, ms: u64) -> Self {
        Self {
            name: name.to_string(),
            version: version.to_string(),
            status: status.to_string(),
            ms,
        }
    }
}

/// Where a deploy's exact versions came from.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// From the resolution memo: no builder, no index.
    Cached,
    /// pip's resolver, in a builder.
    Resolved,
}

/// What a deploy's requirements came to.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Resolved {
    /// Cache directory names, in install order, e.g. `six-1.16.0`.
    pub dirs: Vec<String>,
    pub steps: Vec<PackageStep>,
    pub ms: u64,
    /// `None` when there were no requirements.
    pub resolution: Option<Resolution>,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum PackageError {
    /// requirements.txt has a line that is not a package requirement.
    #[error(transparent)]
    Refused(#[from] requirements::RequirementError),
    /// The requirements cannot be met (pip's own words); the user's to fix.
    #[error("{0}")]
    Requirements(String),
    /// A builder ran past `OL_PACKAGES_TIMEOUT_S` and was stopped.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Platform(String),
}

impl PackageError {
    /// The HTTP status and error code a deploy answers with.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            Self::Refused(_) => (422, "invalid_requirements"),
            Self::Requirements(_) => (422, "package_install_failed"),
            Self::Timeout(_) => (504, "package_install_timeout"),
            Self::Platform(_) => (500, "internal"),
        }
    }
}

impl From<anyhow::Error> for PackageError {
    fn from(e: anyhow::Error) -> Self {
        Self::Platform(format!("{e:#}"))
    }
}

/// One install that other deploys may wait for: `Ok(ms)` when it is done.
type InFlight = Shared<futures_util::future::BoxFuture<'static, Result<u64, PackageError>>>;

/// Tests only: per manager instance, a package whose install runs another command.
#[allow(clippy::type_complexity)]
static INSTALL_OVERRIDES: Mutex<BTreeMap<String, (String, Vec<String>)>> =
    Mutex::new(BTreeMap::new());

/// Cheap to clone; clones share the in-flight installs and the slots.
#[derive(Clone)]
pub struct Installer {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    settings: Arc<Settings>,
    image: String,
    cache: Cache,
    memo: Memo,
    /// Builder containers that may run at once (`OL_PACKAGES_PARALLEL`).
    slots: tokio::sync::Semaphore,
    /// Installs under way, by cache directory name; removed when they end.
    in_flight: Mutex<HashMap<String, InFlight>>,
}

impl Installer {
    pub fn new(docker: Docker, settings: Arc<Settings>, image: String) -> Self {
        let cache = Cache::new(&settings.data_dir);
        cache.remove_leftover_builds();
        Self {
            inner: Arc::new(Inner {
                docker,
                slots: tokio::sync::Semaphore::new(settings.packages.parallel),
                settings,
                image,
                memo: Memo::new(cache.resolved.clone()),
                cache,
                in_flight: Mutex::default(),
            }),
        }
    }

    /// The host directory mounted at `/packages` in function containers.
    pub fn cache_dir(data_dir: &Path) -> PathBuf {
        Cache::new(data_dir).root
    }

    /// Tests only: in the manager of `instance`, installs of `package` run
    /// `command` in the builder instead of pip (to show what a hung build
    /// does to the platform). Keyed by instance, so tests side by side in one
    /// process do not see each other's overrides.
    #[doc(hidden)]
    pub fn override_install_for_tests(instance: &str, package: &str, command: Vec<String>) {
        INSTALL_OVERRIDES
            .lock()
            .unwrap()
            .insert(instance.to_string(), (package.to_string(), command));
    }

    /// Checks, resolves and installs `requirements` (the text of
    /// requirements.txt): from the memo when it can, else through builders.
    pub async fn install(
        &self,
        function: &str,
        requirements: &str,
    ) -> Result<Resolved, PackageError> {
        let started = Instant::now();
        let parsed = requirements::parse(requirements)?;
        self.inner.cache.create_dirs()?;
        let key = memo::Key::of(&parsed, &self.inner.image);
        let remembered = key.as_ref().and_then(|key| self.inner.memo.lookup(key));
        let cached = remembered.and_then(|pinned| {
            let steps = self.cached_steps(function, &pinned, &parsed)?;
            Some((pinned, steps))
        });
        let (pinned, steps, resolution) = match cached {
            Some((pinned, steps)) => (pinned, steps, Resolution::Cached),
            None => {
                let pinned = self.resolve(function, &parsed).await?;
                let installs = pinned.iter().map(|(name, version)| {
                    self.ensure(function, name, version, hashes_of(&parsed, name))
                });
                let steps = futures_util::future::join_all(installs)
                    .await
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()?;
                if let Some(key) = &key {
                    if let Err(e) = self.inner.memo.record(key, &pinned) {
                        tracing::warn!(function, error = %format!("{e:#}"), "recording the resolution");
                    }
                }
                (pinned, steps, Resolution::Resolved)
            }
        };
        let ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            function,
            ?resolution,
            packages = pinned.len(),
            ms,
            "requirements ready"
        );
        Ok(Resolved {
            dirs: pinned.iter().map(|(n, v)| dir_name(n, v)).collect(),
            steps,
            ms,
            resolution: Some(resolution),
        })
    }

    /// A remembered resolution's steps, when every package of it is in the
    /// cache and meets its requirement's hashes; `None` sends the deploy to
    /// the builder (which installs what is missing).
    fn cached_steps(
        &self,
        function: &str,
        pinned: &[(String, String)],
        parsed: &[Requirement],
    ) -> Option<Vec<PackageStep>> {
        let mut steps = Vec::with_capacity(pinned.len());
        for (name, version) in pinned {
            let dir = dir_name(name, version);
            if !self.inner.cache.satisfies(&dir, &hashes_of(parsed, name)) {
                tracing::info!(function, package = %dir, "a remembered package is not in the cache; resolving through the builder");
                return None;
            }
            steps.push(PackageStep::new(name, version, "cached", 0));
        }
        Some(steps)
    }

    /// Makes a version's stored resolution (`dirs`, e.g. `six-1.16.0`)
    /// installed in this node's cache without resolving again: what a node
    /// that never saw the deploy does before the version's first call there.
    /// `requirements` (the version's requirements.txt) gives the hashes the
    /// deploy checked, when it pinned them.
    pub async fn install_pinned(
        &self,
        function: &str,
        dirs: &[String],
        requirements: Option<&str>,
    ) -> Result<Vec<PackageStep>, PackageError> {
        let parsed = requirements
            .and_then(|text| requirements::parse(text).ok())
            .unwrap_or_default();
        self.inner.cache.create_dirs()?;
        let installs = dirs.iter().map(|dir| {
            let parsed = &parsed;
            async move {
                let (name, version) = split_dir(dir).ok_or_else(|| {
                    PackageError::Platform(format!(
                        "the stored package {dir:?} is not a name-version pair"
                    ))
                })?;
                self.ensure(function, name, version, hashes_of(parsed, name))
                    .await
            }
        });
        futures_util::future::join_all(installs)
            .await
            .into_iter()
            .collect()
    }

    /// Runs pip's resolver in a builder: the exact versions to install.
    async fn resolve(
        &self,
        function: &str,
        parsed: &[Requirement],
    ) -> Result<Vec<(String, String)>, PackageError> {
        let text: String = parsed.iter().map(|r| format!("{r}\n")).collect();
        let command = install_script("resolve");
        // A task of its own: a deploy whose caller left still removes its builder.
        let (this, owner) = (self.clone(), function.to_string());
        let events =
            tokio::spawn(async move { this.run_builder(&owner, &text, command, None).await })
                .await
                .map_err(|e| PackageError::Platform(format!("package resolve task: {e}")))??;
        let resolved = events
            .iter()
            .find(|e| e["event"] == "resolved")
            .context("the package builder reported no resolution")?;
        let mut pinned = Vec::new();
        for package in resolved["packages"].as_array().into_iter().flatten() {
            let name = package["name"].as_str().unwrap_or_default();
            let version = package["version"].as_str().unwrap_or_default();
            // Names become directory names: only what a package can be called.
            if !requirements::valid_name(name) || !requirements::valid_version(version) {
                return Err(PackageError::Platform(format!(
                    "the package builder reported an impossible package {name:?} {version:?}"
                )));
            }
            pinned.push((name.to_string(), version.to_string()));
        }
        tracing::info!(function, packages = ?pinned, "requirements resolved");
        Ok(pinned)
    }

    /// Makes `name==version` installed (checked against `hashes`, when
    /// given): found in the cache, installed now, or installed by another
    /// deploy that this one waits for. When that other install was checked
    /// against other hashes, this deploy installs the version again under
    /// its own.
    async fn ensure(
        &self,
        function: &str,
        name: &str,
        version: &str,
        hashes: Vec<String>,
    ) -> Result<PackageStep, PackageError> {
        let dir = dir_name(name, version);
        let step = |status, ms| PackageStep::new(name, version, status, ms);
        loop {
            if self.inner.cache.satisfies(&dir, &hashes) {
                return Ok(step("cached", 0));
            }
            let (install, ours) = {
                let mut in_flight = self.inner.in_flight.lock().unwrap();
                // An install that ended since the check above marked it first.
                if self.inner.cache.satisfies(&dir, &hashes) {
                    return Ok(step("cached", 0));
                }
                match in_flight.get(&dir) {
                    Some(install) => (install.clone(), false),
                    None => {
                        let install = self.spawn_install(function, name, version, hashes.clone());
                        in_flight.insert(dir.clone(), install.clone());
                        (install, true)
                    }
                }
            };
            let ms = install.await?;
            if ours || self.inner.cache.satisfies(&dir, &hashes) {
                tracing::info!(function, package = name, version, ms, ours, "package ready");
                return Ok(step(if ours { "installed" } else { "cached" }, ms));
            }
        }
    }

    /// Starts one package's install as a task of its own, so that it ends
    /// (and its container goes) even when every deploy waiting for it left.
    fn spawn_install(
        &self,
        function: &str,
        name: &str,
        version: &str,
        hashes: Vec<String>,
    ) -> InFlight {
        let this = self.clone();
        let (function, name, version) =
            (function.to_string(), name.to_string(), version.to_string());
        let task = tokio::spawn(async move {
            let dir = dir_name(&name, &version);
            let result = this.install_one(&function, &name, &version, &hashes).await;
            this.inner.in_flight.lock().unwrap().remove(&dir);
            result
        });
        async move {
            task.await.unwrap_or_else(|e| {
                Err(PackageError::Platform(format!("package install task: {e}")))
            })
        }
        .boxed()
        .shared()
    }

    async fn install_one(
        &self,
        function: &str,
        name: &str,
        version: &str,
        hashes: &[String],
    ) -> Result<u64, PackageError> {
        let started = Instant::now();
        let pin = Requirement {
            name: name.to_string(),
            extras: Vec::new(),
            specifiers: vec![format!("=={version}")],
            marker: None,
            hashes: hashes.to_vec(),
        };
        let override_command = INSTALL_OVERRIDES
            .lock()
            .unwrap()
            .get(&self.inner.settings.instance)
            .cloned()
            .filter(|(package, _)| {
                requirements::normalize(package) == requirements::normalize(name)
            })
            .map(|(_, command)| command);
        let command = override_command.unwrap_or_else(|| install_script("install"));
        let dir = dir_name(name, version);
        let target = dir.clone();
        self.run_builder(
            function,
            &format!("{pin}\n"),
            command,
            Some((name, &target, hashes)),
        )
        .await?;
        Ok(started.elapsed().as_millis() as u64)
    }

    /// Runs one builder in a fresh build directory, within a slot and the
    /// deadline. With `adopt`, the build's `out/` then becomes that package's
    /// cache directory.
    async fn run_builder(
        &self,
        function: &str,
        requirements_text: &str,
        command: Vec<String>,
        adopt: Option<(&str, &str, &[String])>,
    ) -> Result<Vec<serde_json::Value>, PackageError> {
        let settings = &self.inner.settings;
        let _slot = self
            .inner
            .slots
            .acquire()
            .await
            .map_err(|_| PackageError::Platform("the installer is shutting down".into()))?;
        let build = BuildDir(
            self.inner
                .cache
                .builds
                .join(uuid::Uuid::new_v4().simple().to_string()),
        );
        builder::prepare_dir(&build.0, requirements_text)?;
        let index = settings.pip_index_url.clone();
        let pip_config = match &index {
            Some(url) => {
                let path = build.0.with_extension("pip.conf");
                std::fs::write(&path, format!("[global]\nindex-url = {url}\n"))
                    .context("writing the builder's pip config")?;
                Some(path)
            }
            None => None,
        };
        let outcome = builder::run(Job {
            docker: &self.inner.docker,
            image: &self.inner.image,
            instance: &settings.instance,
            function,
            dir: &build.0,
            command,
            ca_bundle: settings.ca_bundle.as_deref(),
            pip_config: pip_config.as_deref(),
            deadline: settings.packages.timeout,
        })
        .await;
        if let Some(path) = &pip_config {
            let _ = std::fs::remove_file(path);
        }
        let what = match adopt {
            Some((name, ..)) => format!("installing {name}"),
            None => "resolving requirements.txt".to_string(),
        };
        let (code, events, output) = match outcome? {
            Outcome::TimedOut => {
                return Err(PackageError::Timeout(format!(
                    "{what} did not finish within OL_PACKAGES_TIMEOUT_S={} s; the builder was \
                     stopped and nothing was stored. A package that builds from source may \
                     hang or take long: pin a version that has a wheel, or ask the operator \
                     to raise OL_PACKAGES_TIMEOUT_S",
                    settings.packages.timeout.as_secs()
                )))
            }
            Outcome::Exited {
                code,
                events,
                output,
            } => (code, events, output),
        };
        if let Some(error) = events.iter().find(|e| e["event"] == "error") {
            let message =
                builder::redact(error["message"].as_str().unwrap_or(""), index.as_deref());
            return Err(PackageError::Requirements(format!(
                "{}; pip said:\n{}\nFix requirements.txt (check the names and versions on \
                 the package index) and deploy again",
                if adopt.is_some() {
                    format!("could not install a package ({what})")
                } else {
                    "could not resolve requirements.txt".to_string()
                },
                message.trim()
            )));
        }
        if code != 0 {
            let output = builder::redact(&output, index.as_deref());
            return Err(PackageError::Platform(format!(
                "the package builder ({what}) exited with {code}: {}",
                output.trim()
            )));
        }
        if let Some((_, dir, hashes)) = adopt {
            let cache = self.inner.cache.clone();
            let (out, dir, hashes) = (build.0.join("out"), dir.to_string(), hashes.to_vec());
            tokio::task::spawn_blocking(move || cache.adopt(&out, &dir, &hashes))
                .await
                .map_err(|e| PackageError::Platform(e.to_string()))?
                .map_err(|e| {
                    PackageError::Requirements(format!(
                        "{what}: its files were refused ({e:#}); nothing was stored"
                    ))
                })?;
        }
        Ok(events)
    }
}

/// The `--hash` values requirements.txt gives for package `name` (none for
/// a dependency it does not list).
fn hashes_of(parsed: &[Requirement], name: &str) -> Vec<String> {
    parsed
        .iter()
        .find(|r| r.key() == requirements::normalize(name))
        .map(|r| r.hashes.clone())
        .unwrap_or_default()
}

/// The cache directory of a package version, e.g. `six-1.16.0`.
pub fn dir_name(name: &str, version: &str) -> String {
    format!("{}-{version}", requirements::normalize(name))
}

/// Splits a cache directory name into the package's normalized name and
/// its version: at the first `-` followed by a digit (a normalized name's
/// parts are letters first; a version begins with a digit).
fn split_dir(dir: &str) -> Option<(&str, &str)> {
    let at = dir
        .char_indices()
        .find(|&(i, c)| c == '-' && dir[i + 1..].starts_with(|d: char| d.is_ascii_digit()))?
        .0;
    let (name, version) = (&dir[..at], &dir[at + 1..]);
    (requirements::valid_name(name) && requirements::valid_version(version))
        .then_some((name, version))
}

fn install_script(mode: &str) -> Vec<String> {
    ["python3", "-u", "/opt/openlambda/install.py", mode]
        .map(String::from)
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let pairs: HashMap<String, String> = [("DATABASE_URL", "postgres://x")]
            .iter()
            .chain(pairs)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| pairs.get(k).cloned())
    }

    #[test]
    fn limits_have_their_documented_defaults_and_names() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.packages.timeout.as_secs(), 300);
        assert_eq!(s.packages.parallel, 4);
        assert_eq!(s.packages.zip_max_entries, 10_000);
        for key in [
            "OL_PACKAGES_TIMEOUT_S",
            "OL_PACKAGES_PARALLEL",
            "OL_ZIP_MAX_ENTRIES",
        ] {
            let err = settings(&[(key, "0")]).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        assert_eq!(dir_name("Zope.Interface", "5.0"), "zope-interface-5.0");
        for (dir, split) in [
            ("six-1.16.0", Some(("six", "1.16.0"))),
            ("zope-interface-5.0", Some(("zope-interface", "5.0"))),
            ("py3-dns-3.2.1", Some(("py3-dns", "3.2.1"))),
            ("six", None),
            ("-1.0", None),
        ] {
            assert_eq!(split_dir(dir), split, "{dir}");
        }
    }

    #[test]
    fn errors_map_to_statuses() {
        let refused = requirements::parse("-r x").unwrap_err();
        assert_eq!(
            PackageError::from(refused).status_and_code(),
            (422, "invalid_requirements")
        );
        assert_eq!(
            PackageError::Timeout(String::new()).status_and_code().0,
            504
        );
    }
}
