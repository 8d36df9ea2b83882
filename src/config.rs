//! Settings, read from the environment (`OL_*`, `DATABASE_URL`).
//!
//! Every setting has a default that works on a developer's machine; a bad
//! value is an error that names the variable, never a silent fallback.

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
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads the settings through `get`, so tests can pass their own values.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let parsed = |key: &str| -> anyhow::Result<Option<String>> {
            Ok(get(key).filter(|v| !v.trim().is_empty()))
        };
        let data_dir = match parsed("OL_DATA_DIR")? {
            Some(dir) => PathBuf::from(dir),
            None => default_data_dir(),
        };
        let billing_defaults = BillingSettings::default();
        Ok(Self {
            database_url: parsed("DATABASE_URL")?.context(
                "DATABASE_URL is not set; point it at Postgres, e.g. \
                 postgres://openlambda:openlambda@127.0.0.1:5432/openlambda",
            )?,
            listen: number(&get, "OL_LISTEN", "127.0.0.1:8080".parse()?)?,
            data_dir,
            base_image: parsed("OL_BASE_IMAGE")?
                .unwrap_or_else(|| "debian:bookworm-slim".to_string()),
            admin_token: parsed("OL_ADMIN_TOKEN")?,
            ca_bundle: parsed("OL_CA_BUNDLE")?.map(PathBuf::from),
            instance: parsed("OL_INSTANCE")?.unwrap_or_else(|| "default".to_string()),
            network: parsed("OL_NETWORK")?.unwrap_or_else(|| "openlambda".to_string()),
            pool: PoolSettings {
                pause_grace: Duration::from_millis(number(&get, "OL_POOL_PAUSE_GRACE_MS", 1_000)?),
                keep_alive: Duration::from_secs(number(&get, "OL_POOL_KEEP_ALIVE_S", 600)?),
                start_timeout: Duration::from_millis(number(
                    &get,
                    "OL_POOL_START_TIMEOUT_MS",
                    60_000,
                )?),
                queue_timeout: Duration::from_millis(number(
                    &get,
                    "OL_POOL_QUEUE_TIMEOUT_MS",
                    30_000,
                )?),
                pids_limit: number(&get, "OL_POOL_PIDS_LIMIT", 128)?,
                tmpfs_mb: number(&get, "OL_POOL_TMPFS_MB", 64)?,
                memory_budget_mb: number(&get, "OL_POOL_MEMORY_MB", default_memory_budget_mb())?,
                prewarm: number(&get, "OL_POOL_PREWARM", 2)?,
                prewarm_runtimes: parsed("OL_POOL_PREWARM_RUNTIMES")?
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
                prewarm_memory_mb: number(&get, "OL_POOL_PREWARM_MEMORY_MB", 128)?,
                queue_length: number(&get, "OL_POOL_QUEUE_LENGTH", 1000)?,
            },
            billing: BillingSettings {
                granularity_ms: positive(number(
                    &get,
                    "OL_BILLING_GRANULARITY_MS",
                    billing_defaults.granularity_ms,
                )?)
                .context("OL_BILLING_GRANULARITY_MS must be at least 1")?,
                price_gb_second: number(
                    &get,
                    "OL_BILLING_PRICE_GB_S",
                    billing_defaults.price_gb_second,
                )?,
                price_request: number(
                    &get,
                    "OL_BILLING_PRICE_REQUEST",
                    billing_defaults.price_request,
                )?,
                bill_init: number(&get, "OL_BILLING_BILL_INIT", billing_defaults.bill_init)?,
            },
            log_retention_days: number(&get, "OL_LOG_RETENTION_DAYS", 7)?,
        })
    }
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

/// Parses `key` when it is set, else gives `default`; a bad value names the key.
fn number<T>(get: &impl Fn(&str) -> Option<String>, key: &str, default: T) -> anyhow::Result<T>
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
