//! Settings, read from the environment (`OL_*`, `DATABASE_URL`): the only
//! module that reads it, so every variable the platform knows is listed here.
//!
//! Every setting has a default that works on a developer's machine; a bad
//! value is an error that names the variable, never a silent fallback. A
//! variable set to an empty string counts as unset.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};

/// Everything the manager can be told, in one place.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Postgres connection string (`DATABASE_URL`).
    pub database_url: String,
    /// Address the HTTP server binds (`OL_LISTEN`); port 0 picks a free port.
    pub listen: SocketAddr,
    /// Root of everything on disk: code store, sandboxes, packages (`OL_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Image the runtime images are built from (`OL_BASE_IMAGE`).
    pub base_image: String,
    /// When set, every management call needs `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// CA bundle handed to package installs (`OL_CA_BUNDLE`).
    pub ca_bundle: Option<PathBuf>,
    /// Package index that package installs use instead of pip's default
    /// (`OL_PIP_INDEX_URL`), e.g. a mirror inside a closed network.
    pub pip_index_url: Option<String>,
    /// Names this manager's containers (label `openlambda.instance`), so that a
    /// restarted manager finds what it left and two managers sharing a Docker
    /// engine never touch each other's containers (`OL_INSTANCE`).
    pub instance: String,
    /// Docker network the function containers join (`OL_NETWORK`).
    pub network: String,
    pub pool: PoolSettings,
    pub billing: BillingSettings,
    /// Days a call's output is kept (`OL_LOG_RETENTION_DAYS`).
    pub log_retention_days: i64,
    /// Package builds: deadline, parallelism; uploads: entry bound.
    pub packages: PackageSettings,
    /// The async queue: lease, poll, backoff (`OL_ASYNC_*`).
    pub events: crate::events::QueueSettings,
}

/// Limits on untrusted package builds and zips.
#[derive(Clone, Debug)]
pub struct PackageSettings {
    /// One builder container's deadline; past it, it is killed (`OL_PACKAGES_TIMEOUT_S`).
    pub timeout: Duration,
    /// Builder containers at once on this host (`OL_PACKAGES_PARALLEL`).
    pub parallel: usize,
    /// Entries an uploaded zip may hold (`OL_ZIP_MAX_ENTRIES`).
    pub zip_max_entries: usize,
}

/// Knobs of the container pool (`OL_POOL_*`).
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// An idle container is paused this long after its last call.
    pub pause_grace: Duration,
    /// An idle container is removed this long after its last call.
    pub keep_alive: Duration,
    /// How long a new container may take to start and load its code.
    pub start_timeout: Duration,
    /// How long a call may wait for a container before it gets 429.
    pub queue_timeout: Duration,
    /// Processes a container may run (contains fork bombs).
    pub pids_limit: i64,
    /// Size of each container's `/tmp` tmpfs, in MiB.
    pub tmpfs_mb: u64,
    /// Memory the pool may hand out, counted by containers' memory limits.
    pub memory_budget_mb: u64,
    /// Generic containers per runtime kept started and paused.
    pub prewarm: usize,
    /// The runtimes that are prewarmed.
    pub prewarm_runtimes: Vec<String>,
    /// Memory limit of a prewarmed container until it is specialised.
    pub prewarm_memory_mb: i32,
    /// Calls that may wait for one function's containers; more get 429 at once.
    pub queue_length: usize,
}

/// The billing formula's parameters (`OL_BILLING_*`).
#[derive(Clone, Debug, PartialEq)]
pub struct BillingSettings {
    /// Durations are rounded up to a multiple of this.
    pub granularity_ms: u64,
    /// USD per GB-second.
    pub price_gb_second: f64,
    /// USD per request.
    pub price_request: f64,
    /// Whether a cold start's init time is billed with the call.
    pub bill_init: bool,
}

impl Default for BillingSettings {
    fn default() -> Self {
        Self {
            granularity_ms: 100,
            price_gb_second: 0.000_016_666_7,
            price_request: 0.000_000_2,
            bill_init: false,
        }
    }
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(env)
    }

    /// Reads the settings through `get`, so tests can pass their own values.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let text = |key: &str| get(key).filter(|v| !v.trim().is_empty());
        let data_dir = match text("OL_DATA_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => default_data_dir(),
        };
        let billing_defaults = BillingSettings::default();
        Ok(Self {
            database_url: text("DATABASE_URL").context(
                "DATABASE_URL is not set; point it at Postgres, e.g. \
                 postgres://openlambda:openlambda@127.0.0.1:5432/openlambda",
            )?,
            listen: parse_or(&get, "OL_LISTEN", "127.0.0.1:8080".parse()?)?,
            data_dir,
            base_image: base_image(&get),
            admin_token: text("OL_ADMIN_TOKEN"),
            ca_bundle: text("OL_CA_BUNDLE").map(PathBuf::from),
            pip_index_url: text("OL_PIP_INDEX_URL"),
            instance: text("OL_INSTANCE").unwrap_or_else(|| "default".to_string()),
            network: text("OL_NETWORK").unwrap_or_else(|| "openlambda".to_string()),
            pool: PoolSettings {
                pause_grace: Duration::from_millis(parse_or(
                    &get,
                    "OL_POOL_PAUSE_GRACE_MS",
                    1_000,
                )?),
                keep_alive: Duration::from_secs(parse_or(&get, "OL_POOL_KEEP_ALIVE_S", 600)?),
                start_timeout: Duration::from_millis(parse_or(
                    &get,
                    "OL_POOL_START_TIMEOUT_MS",
                    60_000,
                )?),
                queue_timeout: Duration::from_millis(parse_or(
                    &get,
                    "OL_POOL_QUEUE_TIMEOUT_MS",
                    30_000,
                )?),
                pids_limit: parse_or(&get, "OL_POOL_PIDS_LIMIT", 128)?,
                tmpfs_mb: parse_or(&get, "OL_POOL_TMPFS_MB", 64)?,
                memory_budget_mb: parse_or(&get, "OL_POOL_MEMORY_MB", default_memory_budget_mb())?,
                prewarm: parse_or(&get, "OL_POOL_PREWARM", 2)?,
                prewarm_runtimes: text("OL_POOL_PREWARM_RUNTIMES")
                    .unwrap_or_else(|| "python,node".into())
                    .split(',')
                    .map(|r| r.trim())
                    .filter(|r| !r.is_empty())
                    .map(|r| {
                        crate::manifest::Runtime::parse(r)
                            .map(|r| r.as_str().to_string())
                            .map_err(|e| anyhow::anyhow!("OL_POOL_PREWARM_RUNTIMES: {e}"))
                    })
                    .collect::<anyhow::Result<_>>()?,
                prewarm_memory_mb: parse_or(&get, "OL_POOL_PREWARM_MEMORY_MB", 128)?,
                queue_length: parse_or(&get, "OL_POOL_QUEUE_LENGTH", 1000)?,
            },
            billing: BillingSettings {
                granularity_ms: positive(parse_or(
                    &get,
                    "OL_BILLING_GRANULARITY_MS",
                    billing_defaults.granularity_ms,
                )?)
                .context("OL_BILLING_GRANULARITY_MS must be at least 1")?,
                price_gb_second: parse_or(
                    &get,
                    "OL_BILLING_PRICE_GB_S",
                    billing_defaults.price_gb_second,
                )?,
                price_request: parse_or(
                    &get,
                    "OL_BILLING_PRICE_REQUEST",
                    billing_defaults.price_request,
                )?,
                bill_init: parse_or(&get, "OL_BILLING_BILL_INIT", billing_defaults.bill_init)?,
            },
            log_retention_days: parse_or(&get, "OL_LOG_RETENTION_DAYS", 7)?,
            events: crate::events::QueueSettings::from_lookup(&get)?,
            packages: PackageSettings {
                timeout: Duration::from_secs(
                    positive(parse_or(&get, "OL_PACKAGES_TIMEOUT_S", 300)?)
                        .context("OL_PACKAGES_TIMEOUT_S must be at least 1")?,
                ),
                parallel: positive(parse_or(&get, "OL_PACKAGES_PARALLEL", 4)?)
                    .context("OL_PACKAGES_PARALLEL must be at least 1")?
                    as usize,
                zip_max_entries: positive(parse_or(&get, "OL_ZIP_MAX_ENTRIES", 10_000)?)
                    .context("OL_ZIP_MAX_ENTRIES must be at least 1")?
                    as usize,
            },
        })
    }
}

/// What the `ol` client commands need: where the manager is (`OL_URL`) and
/// the token to send it (`OL_ADMIN_TOKEN`).
#[derive(Clone, Debug, PartialEq)]
pub struct ClientSettings {
    /// The manager's base URL, without a trailing `/`.
    pub url: String,
    pub admin_token: Option<String>,
}

impl ClientSettings {
    pub fn from_env() -> Self {
        Self::from_lookup(env)
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let url = get("OL_URL")
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        Self {
            url: url.trim_end_matches('/').to_string(),
            admin_token: get("OL_ADMIN_TOKEN").filter(|t| !t.is_empty()),
        }
    }
}

/// A variable of the process environment; empty counts as unset.
pub fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// The image the runtime images are built from (`OL_BASE_IMAGE`), for
/// `ol serve`, `ol images` and `ol bench` alike.
pub fn base_image(get: &impl Fn(&str) -> Option<String>) -> String {
    get("OL_BASE_IMAGE")
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "debian:bookworm-slim".to_string())
}

/// 80% of the host's memory (from /proc/meminfo), else 4 GiB.
fn default_memory_budget_mb() -> u64 {
    let total_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(5 * 1024 * 1024);
    total_kb / 1024 * 8 / 10
}

fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".local/share/openlambda"),
        _ => PathBuf::from("/var/lib/openlambda"),
    }
}

/// Parses `key` (a number, an address, a flag: anything `FromStr`) when it
/// is set, else gives `default`; a bad value is an error naming the key.
pub(crate) fn parse_or<T>(
    get: &impl Fn(&str) -> Option<String>,
    key: &str,
    default: T,
) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match get(key).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{key}={raw:?} is not valid: {e}")),
    }
}

fn positive(value: u64) -> anyhow::Result<u64> {
    if value == 0 {
        bail!("must be positive");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_design() {
        let s = settings(&[("DATABASE_URL", "postgres://x")]).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.base_image, "debian:bookworm-slim");
        assert_eq!(s.billing, BillingSettings::default());
        assert!(s.admin_token.is_none());
        assert_eq!(s.pool.prewarm, 2);
        assert_eq!(s.pool.prewarm_runtimes, ["python", "node"]);
        assert!(s.pool.memory_budget_mb > 0);
        assert!(s.pip_index_url.is_none());
    }

    #[test]
    fn blank_values_count_as_unset() {
        let s = settings(&[
            ("DATABASE_URL", "postgres://x"),
            ("OL_BASE_IMAGE", " "),
            ("OL_PIP_INDEX_URL", ""),
            ("OL_POOL_PREWARM", ""),
        ])
        .unwrap();
        assert_eq!(s.base_image, "debian:bookworm-slim");
        assert!(s.pip_index_url.is_none());
        assert_eq!(s.pool.prewarm, 2);
        let s = settings(&[
            ("DATABASE_URL", "postgres://x"),
            ("OL_PIP_INDEX_URL", "http://10.0.0.2/simple"),
        ])
        .unwrap();
        assert_eq!(s.pip_index_url.as_deref(), Some("http://10.0.0.2/simple"));
    }

    #[test]
    fn the_client_finds_the_manager() {
        let client = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            ClientSettings::from_lookup(|k| map.get(k).cloned())
        };
        assert_eq!(
            client(&[]),
            ClientSettings {
                url: "http://127.0.0.1:8080".into(),
                admin_token: None
            }
        );
        let c = client(&[("OL_URL", "http://h:9/"), ("OL_ADMIN_TOKEN", "t")]);
        assert_eq!(c.url, "http://h:9");
        assert_eq!(c.admin_token.as_deref(), Some("t"));
    }

    #[test]
    fn missing_database_url_says_how_to_fix_it() {
        let err = settings(&[]).unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = settings(&[("DATABASE_URL", "x"), ("OL_LISTEN", "nope")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("OL_LISTEN"), "{err}");
        let err = settings(&[("DATABASE_URL", "x"), ("OL_BILLING_GRANULARITY_MS", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("GRANULARITY"), "{err}");
    }
}
