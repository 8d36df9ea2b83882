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

use crate::manifest::{
    Limits, DEFAULT_MAX_MEMORY_MB, DEFAULT_MAX_TIMEOUT_S, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S,
    MIN_MEMORY_MB,
};

/// Everything the manager can be told, in one place.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Postgres connection string (`DATABASE_URL`).
    pub database_url: String,
    /// Address the management API and dashboard bind (`OL_LISTEN`); port 0
    /// picks a free port.
    pub listen: SocketAddr,
    /// Address the function URLs bind (`OL_FUNCTIONS_LISTEN`): another
    /// origin than the management's, so no browser sends a platform
    /// credential to a function.
    pub functions_listen: SocketAddr,
    /// Base URL of the function listener as callers reach it
    /// (`OL_FUNCTIONS_URL`, e.g. `https://fn.example.com`); by default the
    /// management request's host name with the function listener's port.
    pub functions_url: Option<String>,
    /// Serves the management API without any credential
    /// (`OL_INSECURE_NO_AUTH=1`); refused unless `OL_LISTEN` is loopback.
    pub insecure_no_auth: bool,
    /// Host names the management listener answers for besides the loopback
    /// names (`OL_ALLOWED_HOSTS`, comma-separated).
    pub allowed_hosts: Vec<String>,
    /// How long a dashboard session lasts (`OL_SESSION_TTL_S`).
    pub session_ttl: Duration,
    /// Connections each listener holds at once (`OL_MAX_CONNECTIONS`);
    /// more are answered 503 and closed.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, and that an idle
    /// keep-alive connection is kept (`OL_HEADER_TIMEOUT_S`).
    pub header_timeout: Duration,
    /// Time a client has to send a request's body (`OL_BODY_TIMEOUT_S`).
    pub body_timeout: Duration,
    /// Threads of the manager's async runtime (`OL_WORKER_THREADS`; see
    /// [`worker_threads`]).
    pub worker_threads: usize,
    /// Root of everything on disk: code store, sandboxes, packages (`OL_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Image the runtime images are built from (`OL_BASE_IMAGE`).
    pub base_image: String,
    /// An admin key the operator chose (`OL_ADMIN_TOKEN`), kept as the key
    /// named `admin-token`; unset, the manager makes its own on first start.
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
    /// Whether the manager must fence its network off (`OL_NETWORK_ISOLATION`).
    pub network_isolation: NetworkIsolation,
    /// Largest result a runtime may send back, in bytes; a larger one is a
    /// 502 (`OL_MAX_RESPONSE_BYTES`, default 6 MiB like Lambda's).
    pub max_response_bytes: usize,
    pub pool: PoolSettings,
    pub billing: BillingSettings,
    /// Days a call's output is kept (`OL_LOG_RETENTION_DAYS`).
    pub log_retention_days: i64,
    /// On a stop, how long calls in flight may run on before they are
    /// ended (`OL_SHUTDOWN_TIMEOUT_S`).
    pub shutdown_timeout: Duration,
    /// Package builds: deadline, parallelism; uploads: entry bound.
    pub packages: PackageSettings,
    /// The async queue: lease, poll, backoff (`OL_ASYNC_*`).
    pub events: crate::events::settings::QueueSettings,
    /// Running as one node of several behind a load balancer.
    pub cluster: ClusterSettings,
}

/// A node's part in a cluster behind HAProxy (`OL_SPILL_QUEUE`, `OL_DRAIN_S`).
#[derive(Clone, Debug, Default)]
pub struct ClusterSettings {
    /// Calls waiting in this node's pool at which a new call is answered
    /// 503 "node full" for the balancer to send elsewhere; 0: never.
    pub spill_queue: usize,
    /// How long a stopping node fails its health check before it stops
    /// taking connections (more than the balancer's check interval x fall).
    pub drain: Duration,
}

/// What the manager does when it cannot install the firewall rules that
/// keep functions away from the host, other containers and link-local
/// addresses (`OL_NETWORK_ISOLATION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkIsolation {
    /// Refuse to start (the default).
    Required,
    /// Start anyway, with a warning at start.
    Warn,
    /// Install nothing (the operator fences the network another way).
    Off,
}

impl FromStr for NetworkIsolation {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw.trim() {
            "required" | "on" => Ok(Self::Required),
            "warn" => Ok(Self::Warn),
            "off" => Ok(Self::Off),
            other => Err(format!("{other:?}: use required, warn or off")),
        }
    }
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
    /// An uploaded `ol.yaml`'s limits: the defaults for what it leaves out
    /// (`OL_DEFAULT_MEMORY_MB`, `OL_DEFAULT_TIMEOUT_S`) and the largest it
    /// may ask for (`OL_MAX_MEMORY_MB`, `OL_MAX_TIMEOUT_S`). OpenLambda's
    /// package tests set 2000 MB and 3600 s worker-wide.
    pub limits: Limits,
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
    /// Package sets kept imported in prewarmed Python containers besides
    /// those the pool chooses (`OL_POOL_IMPORT_CACHE`): each a list of
    /// pinned `(name, version)`.
    pub import_cache: Vec<Vec<(String, String)>>,
    /// Package sets the pool may keep imported of its own choice (those of
    /// the functions most often started cold); 0: only the pinned ones
    /// (`OL_POOL_IMPORT_CACHE_AUTO`).
    pub import_cache_auto: usize,
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
            functions_listen: parse_or(&get, "OL_FUNCTIONS_LISTEN", "127.0.0.1:8081".parse()?)?,
            functions_url: text("OL_FUNCTIONS_URL").map(|u| u.trim_end_matches('/').to_string()),
            insecure_no_auth: parse_or(&get, "OL_INSECURE_NO_AUTH", 0u8)? == 1,
            allowed_hosts: text("OL_ALLOWED_HOSTS")
                .unwrap_or_default()
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            session_ttl: Duration::from_secs(
                positive(parse_or(&get, "OL_SESSION_TTL_S", 43_200)?)
                    .context("OL_SESSION_TTL_S must be at least 1")?,
            ),
            max_connections: parse_or(&get, "OL_MAX_CONNECTIONS", 4096)?,
            header_timeout: Duration::from_secs(
                positive(parse_or(&get, "OL_HEADER_TIMEOUT_S", 10)?)
                    .context("OL_HEADER_TIMEOUT_S must be at least 1")?,
            ),
            body_timeout: Duration::from_secs(
                positive(parse_or(&get, "OL_BODY_TIMEOUT_S", 60)?)
                    .context("OL_BODY_TIMEOUT_S must be at least 1")?,
            ),
            worker_threads: worker_threads(&get)?,
            data_dir,
            base_image: base_image(&get),
            admin_token: text("OL_ADMIN_TOKEN"),
            ca_bundle: text("OL_CA_BUNDLE").map(PathBuf::from),
            pip_index_url: text("OL_PIP_INDEX_URL"),
            instance: text("OL_INSTANCE").unwrap_or_else(|| "default".to_string()),
            network: text("OL_NETWORK").unwrap_or_else(|| "openlambda".to_string()),
            network_isolation: parse_or(&get, "OL_NETWORK_ISOLATION", NetworkIsolation::Required)?,
            max_response_bytes: positive(parse_or(&get, "OL_MAX_RESPONSE_BYTES", 6 * 1024 * 1024)?)
                .context("OL_MAX_RESPONSE_BYTES must be at least 1")?
                as usize,
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
                import_cache: import_sets(&text("OL_POOL_IMPORT_CACHE").unwrap_or_default())
                    .map_err(|e| anyhow::anyhow!("OL_POOL_IMPORT_CACHE: {e}"))?,
                import_cache_auto: parse_or(&get, "OL_POOL_IMPORT_CACHE_AUTO", 8)?,
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
            shutdown_timeout: Duration::from_secs(parse_or(&get, "OL_SHUTDOWN_TIMEOUT_S", 30)?),
            events: crate::events::settings::QueueSettings::from_lookup(|key, default| {
                parse_or(&get, key, default)
            })?,
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
                limits: function_limits(&get)?,
            },
            cluster: ClusterSettings {
                spill_queue: parse_or(&get, "OL_SPILL_QUEUE", 0)?,
                drain: Duration::from_secs(parse_or(&get, "OL_DRAIN_S", 0)?),
            },
        })
    }
}

/// What the `ol` client commands need: where the manager is (`OL_URL`) and
/// the key to send it (`OL_API_KEY`, else `OL_ADMIN_TOKEN`).
#[derive(Clone, Debug, PartialEq)]
pub struct ClientSettings {
    /// The manager's base URL, without a trailing `/`.
    pub url: String,
    pub api_key: Option<String>,
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
            api_key: get("OL_API_KEY")
                .or_else(|| get("OL_ADMIN_TOKEN"))
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
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

/// `OL_POOL_IMPORT_CACHE`: package sets separated by `;`, the packages of
/// a set by `,`, each pinned exactly (`flask==3.0.3;numpy==2.1.3,six==1.16.0`).
fn import_sets(raw: &str) -> Result<Vec<Vec<(String, String)>>, String> {
    use crate::packages::requirements::{normalize, valid_name, valid_version};
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let mut sets = Vec::new();
    for set in raw.split(';') {
        let mut packages: Vec<(String, String)> = Vec::new();
        for pin in set.split(',') {
            let pin = pin.trim();
            let (name, version) = pin.split_once("==").ok_or_else(|| {
                format!("{pin:?} is not name==version (sets are separated by ';', packages by ',')")
            })?;
            let (name, version) = (name.trim(), version.trim());
            if !valid_name(name) || !valid_version(version) {
                return Err(format!("{pin:?} is not a package name and exact version"));
            }
            if packages
                .iter()
                .any(|(n, _)| normalize(n) == normalize(name))
            {
                return Err(format!("{name} is twice in the set {set:?}"));
            }
            packages.push((name.to_string(), version.to_string()));
        }
        sets.push(packages);
    }
    Ok(sets)
}

/// 80% of the host's memory (from /proc/meminfo), else 4 GiB.
/// A function's limits from `OL_MAX_*` and `OL_DEFAULT_*`: a default must
/// be one an `ol.yaml` could ask for.
fn function_limits(get: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Limits> {
    let max_memory_mb = at_least(
        parse_or(get, "OL_MAX_MEMORY_MB", DEFAULT_MAX_MEMORY_MB)?,
        MIN_MEMORY_MB,
    )
    .context("OL_MAX_MEMORY_MB is below the smallest memory limit")?;
    let max_timeout_s = positive(parse_or(get, "OL_MAX_TIMEOUT_S", DEFAULT_MAX_TIMEOUT_S)?)
        .context("OL_MAX_TIMEOUT_S must be at least 1")?;
    let default_memory_mb = parse_or(get, "OL_DEFAULT_MEMORY_MB", DEFAULT_MEMORY_MB)?;
    if !(MIN_MEMORY_MB..=max_memory_mb).contains(&default_memory_mb) {
        anyhow::bail!(
            "OL_DEFAULT_MEMORY_MB={default_memory_mb} is out of range; use {MIN_MEMORY_MB} to \
             {max_memory_mb} (raise OL_MAX_MEMORY_MB first for a larger default)"
        );
    }
    let default_timeout_s = parse_or(get, "OL_DEFAULT_TIMEOUT_S", DEFAULT_TIMEOUT_S)?;
    if !(1..=max_timeout_s).contains(&default_timeout_s) {
        anyhow::bail!(
            "OL_DEFAULT_TIMEOUT_S={default_timeout_s} is out of range; use 1 to {max_timeout_s} \
             (raise OL_MAX_TIMEOUT_S first for a longer default)"
        );
    }
    Ok(Limits {
        max_memory_mb,
        max_timeout_s,
        default_memory_mb,
        default_timeout_s,
    })
}

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

fn at_least(value: u32, min: u32) -> anyhow::Result<u32> {
    if value < min {
        bail!("{value} is below {min}");
    }
    Ok(value)
}

/// Threads of the manager's async runtime: `OL_WORKER_THREADS`, by default
/// half the host's cores, at least one.
///
/// The manager shares the host with the containers it runs, whose
/// handlers are what the cores are for; and a warm call is a few wakeups
/// of tasks that pass it along. With one runtime thread per core, each
/// wakeup of a task tends to wake a second, parked thread to take it. On
/// two cores, one thread against two halved the context switches of a warm
/// call (2.8 against 5.7) and took 10-20% less manager CPU per call, at the
/// same or a lower p50 (wrk against `ol serve`; README, Benchmark).
pub fn worker_threads(get: &impl Fn(&str) -> Option<String>) -> anyhow::Result<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = parse_or(get, "OL_WORKER_THREADS", (cores / 2).max(1) as u64)?;
    Ok(positive(threads).context("OL_WORKER_THREADS must be at least 1")? as usize)
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
        assert_eq!(s.functions_listen.to_string(), "127.0.0.1:8081");
        assert!(!s.insecure_no_auth);
        assert!(s.allowed_hosts.is_empty());
    }

    #[test]
    fn the_runtime_takes_half_the_cores_unless_told() {
        let cores = std::thread::available_parallelism().unwrap().get();
        let s = settings(&[("DATABASE_URL", "postgres://x")]).unwrap();
        assert_eq!(s.worker_threads, (cores / 2).max(1));
        let s = settings(&[("DATABASE_URL", "postgres://x"), ("OL_WORKER_THREADS", "3")]);
        assert_eq!(s.unwrap().worker_threads, 3);
        let zero = settings(&[("DATABASE_URL", "postgres://x"), ("OL_WORKER_THREADS", "0")]);
        assert!(format!("{:#}", zero.unwrap_err()).contains("OL_WORKER_THREADS must be at least 1"));
    }

    #[test]
    fn import_cache_sets_are_pinned_packages() {
        assert_eq!(
            import_sets(" ").unwrap(),
            Vec::<Vec<(String, String)>>::new()
        );
        let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
        assert_eq!(
            import_sets("flask==3.0.3;numpy==2.1.3").unwrap(),
            [vec![pair("flask", "3.0.3")], vec![pair("numpy", "2.1.3")]]
        );
        assert_eq!(
            import_sets(" six==1.16.0 , idna==3.7 ").unwrap(),
            [vec![pair("six", "1.16.0"), pair("idna", "3.7")]]
        );
        for bad in [
            "flask",
            "flask>=3",
            "flask==",
            "==1.0",
            "flask==3.0.3;",
            "a==1,,b==2",
            "six==1.16.0,Six==1.15.0",
            "fl ask==1",
            "flask==3.0.3 ; numpy=2",
        ] {
            assert!(import_sets(bad).is_err(), "{bad:?} was taken");
        }
        let err = settings(&[
            ("DATABASE_URL", "postgres://x"),
            ("OL_POOL_IMPORT_CACHE", "flask>=3"),
        ])
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("OL_POOL_IMPORT_CACHE"),
            "{err:#}"
        );
    }

    #[test]
    fn allowed_hosts_are_a_lowercase_list() {
        let s = settings(&[
            ("DATABASE_URL", "postgres://x"),
            ("OL_ALLOWED_HOSTS", " Ol.Example.com, ,10.0.0.5"),
            ("OL_INSECURE_NO_AUTH", "1"),
        ])
        .unwrap();
        assert_eq!(s.allowed_hosts, ["ol.example.com", "10.0.0.5"]);
        assert!(s.insecure_no_auth);
    }

    #[test]
    fn function_limits_default_to_aws_and_can_be_raised() {
        let s = settings(&[("DATABASE_URL", "postgres://x")]).unwrap();
        assert_eq!(s.packages.limits, Limits::default());
        assert_eq!(s.packages.limits.max_timeout_s, 900);
        // OpenLambda's package tests: 2000 MB and 3600 s worker-wide.
        let s = settings(&[
            ("DATABASE_URL", "postgres://x"),
            ("OL_MAX_TIMEOUT_S", "3600"),
            ("OL_MAX_MEMORY_MB", "2000"),
            ("OL_DEFAULT_TIMEOUT_S", "3600"),
            ("OL_DEFAULT_MEMORY_MB", "2000"),
        ])
        .unwrap();
        let raised = Limits {
            max_memory_mb: 2000,
            max_timeout_s: 3600,
            default_memory_mb: 2000,
            default_timeout_s: 3600,
        };
        assert_eq!(s.packages.limits, raised);
        for (key, value, says) in [
            ("OL_MAX_TIMEOUT_S", "0", "OL_MAX_TIMEOUT_S"),
            ("OL_DEFAULT_TIMEOUT_S", "3600", "raise OL_MAX_TIMEOUT_S"),
            ("OL_DEFAULT_TIMEOUT_S", "0", "OL_DEFAULT_TIMEOUT_S"),
            ("OL_DEFAULT_MEMORY_MB", "20000", "raise OL_MAX_MEMORY_MB"),
            ("OL_DEFAULT_MEMORY_MB", "32", "use 64 to"),
        ] {
            let err = settings(&[("DATABASE_URL", "postgres://x"), (key, value)]).unwrap_err();
            assert!(format!("{err:#}").contains(says), "{key}={value}: {err:#}");
        }
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
                api_key: None
            }
        );
        let c = client(&[("OL_URL", "http://h:9/"), ("OL_ADMIN_TOKEN", "t")]);
        assert_eq!(c.url, "http://h:9");
        assert_eq!(c.api_key.as_deref(), Some("t"));
        let c = client(&[("OL_API_KEY", "k"), ("OL_ADMIN_TOKEN", "t")]);
        assert_eq!(c.api_key.as_deref(), Some("k"));
    }

    #[test]
    fn sandbox_limits_default_and_parse() {
        let s = settings(&[("DATABASE_URL", "x")]).unwrap();
        assert_eq!(s.max_response_bytes, 6_291_456);
        assert_eq!(s.network_isolation, NetworkIsolation::Required);
        let s = settings(&[
            ("DATABASE_URL", "x"),
            ("OL_MAX_RESPONSE_BYTES", "1000"),
            ("OL_NETWORK_ISOLATION", "warn"),
        ])
        .unwrap();
        assert_eq!(s.max_response_bytes, 1000);
        assert_eq!(s.network_isolation, NetworkIsolation::Warn);
        for (key, value) in [
            ("OL_NETWORK_ISOLATION", "maybe"),
            ("OL_MAX_RESPONSE_BYTES", "0"),
        ] {
            let err = settings(&[("DATABASE_URL", "x"), (key, value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn a_single_node_never_spills_or_drains() {
        let s = settings(&[("DATABASE_URL", "postgres://x")]).unwrap();
        assert_eq!(
            (s.cluster.spill_queue, s.cluster.drain),
            (0, Duration::ZERO)
        );
        let s = settings(&[
            ("DATABASE_URL", "postgres://x"),
            ("OL_SPILL_QUEUE", "4"),
            ("OL_DRAIN_S", "3"),
        ])
        .unwrap();
        assert_eq!(
            (s.cluster.spill_queue, s.cluster.drain),
            (4, Duration::from_secs(3))
        );
        for key in ["OL_SPILL_QUEUE", "OL_DRAIN_S"] {
            let err = settings(&[("DATABASE_URL", "postgres://x"), (key, "-1")])
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
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
