//! The import cache's sandbox half: a generic Python container whose
//! runtime server has imported a set of packages before any function is
//! loaded (`POST /preimport`, images/PROTOCOL.md).
//!
//! Why a pre-imported interpreter rather than a forked zygote (SOCK's
//! way): Docker gives each container its own PID namespace and cgroup, so
//! a process forked from a zygote in one container cannot become another
//! container; a zygote per container would be the same interpreter with an
//! extra process. The container itself is the unit the pool already
//! prewarms, pauses and specialises, so the cache is a prewarmed container
//! whose server did the imports at start: specialising it (`/load`) then
//! finds those modules in `sys.modules`. The cost is memory: each cached
//! set is a whole container, measured after the imports.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde::{Deserialize, Serialize};

use super::protocol::{self, error_parts, request};
use super::{Failure, Sandbox, Sandboxes};

/// Module names a reply may list, and their length: a runtime that ran
/// package code is trusted no further than it must be.
const MAX_MODULES: usize = 256;
const MAX_MODULE_NAME: usize = 100;

/// Packages a generic container imports before any function is loaded.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImportSet {
    /// Package cache directories (`flask-3.0.3`), in install order: all of
    /// them go on the import path.
    pub dirs: Vec<String>,
    /// Those of `dirs` whose top-level modules are imported: the packages
    /// a pinned set names, or every package of a function's set.
    pub import: Vec<String>,
    /// The environment set before the imports: a package may read it when
    /// imported, so a set serves only functions with this very environment.
    pub env: BTreeMap<String, String>,
}

impl ImportSet {
    /// `flask-3.0.3+werkzeug-3.1.3`: the packages imported, for logs and
    /// reports.
    pub fn label(&self) -> String {
        self.import.join("+")
    }
}

/// What the runtime imported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Top-level modules now in `sys.modules`.
    pub modules: Vec<String>,
    /// The container's memory after the imports (its cgroup's peak), MB.
    pub memory_mb: Option<i32>,
    /// Time the imports took in the runtime.
    pub took: Duration,
}

#[derive(Serialize)]
struct PreimportSpec<'a> {
    protocol: u32,
    paths: Vec<String>,
    import: Vec<String>,
    env: &'a BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct PreimportReply {
    modules: Vec<String>,
    #[serde(default)]
    failed: Vec<serde_json::Value>,
    #[serde(default)]
    ms: f64,
}

fn in_container(dir: &str) -> String {
    format!("/packages/{dir}")
}

impl Sandboxes {
    /// Makes a generic container's runtime import `set`.
    pub async fn preimport(&self, sandbox: &Sandbox, set: &ImportSet) -> Result<Imported, Failure> {
        let spec = PreimportSpec {
            protocol: protocol::PROTOCOL_VERSION,
            paths: set.dirs.iter().map(|d| in_container(d)).collect(),
            import: set.import.iter().map(|d| in_container(d)).collect(),
            env: &set.env,
        };
        let body = serde_json::to_vec(&spec).context("encoding the preimport spec")?;
        let limit = self.settings.pool.start_timeout;
        let socket = sandbox.socket();
        let exchange = request(
            &sandbox.conns,
            &socket,
            "POST",
            "/preimport",
            None,
            body.into(),
            64 * 1024,
        );
        let reply = tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| anyhow!("importing {} took longer than {limit:?}", set.label()))?;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => return Err(self.diagnose(sandbox, e).await),
        };
        reply.check_protocol()?;
        if reply.status != 200 {
            let (kind, message) = error_parts(&reply.body);
            return Err(Failure::Platform(anyhow!(
                "the runtime refused to import {}: {kind}: {message}",
                set.label()
            )));
        }
        let parsed: PreimportReply =
            serde_json::from_slice(&reply.body).context("reading the preimport reply")?;
        if !parsed.failed.is_empty() {
            tracing::warn!(set = %set.label(), failed = %serde_json::Value::from(parsed.failed),
                "some modules of an import-cache set did not import; cached without them");
        }
        Ok(Imported {
            modules: valid_modules(parsed.modules)?,
            memory_mb: sandbox.memory_peak.read_mb(),
            took: Duration::from_secs_f64(parsed.ms.max(0.0) / 1000.0),
        })
    }
}

/// The reply's module names, refused unless each is a plain identifier.
fn valid_modules(modules: Vec<String>) -> anyhow::Result<Vec<String>> {
    if modules.len() > MAX_MODULES {
        anyhow::bail!("the runtime reported {} modules imported", modules.len());
    }
    for m in &modules {
        let plain = !m.is_empty()
            && m.len() <= MAX_MODULE_NAME
            && m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !m.starts_with(|c: char| c.is_ascii_digit());
        if !plain {
            anyhow::bail!("the runtime reported an impossible module name {m:?}");
        }
    }
    Ok(modules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_module_names_are_taken() {
        let ok = vec!["flask".to_string(), "yaml_2".to_string()];
        assert_eq!(valid_modules(ok.clone()).unwrap(), ok);
        for bad in ["", "os.path", "../x", "1abc", "a b"] {
            assert!(valid_modules(vec![bad.to_string()]).is_err(), "{bad:?}");
        }
        let many = vec!["m".to_string(); MAX_MODULES + 1];
        assert!(valid_modules(many).is_err());
    }
}
