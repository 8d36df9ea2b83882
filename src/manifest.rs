//! What a function is: its name and the `ol.yaml` in its zip.
//!
//! Parse, don't validate: a [`FunctionName`] or a [`Manifest`] that exists is
//! valid, and every error says what to change.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A function's name: lowercase letters, digits, `-` and `_`, 1 to 63
/// characters, starting and ending with a letter or digit (it is part of URLs
/// and container names, where `_` is allowed; OpenLambda names functions
/// after their folders, e.g. `max_mem_alloc`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct FunctionName(String);

impl FunctionName {
    pub const MAX_LEN: usize = 63;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let hint =
            "use lowercase letters, digits, '-' and '_' (at most 63 characters), e.g. hello-world";
        if raw.is_empty() {
            return Err(format!("function name is empty; {hint}"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(format!(
                "function name is {} characters long; {hint}",
                raw.len()
            ));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(format!("function name {raw:?} contains {bad:?}; {hint}"));
        }
        if raw.starts_with(['-', '_']) || raw.ends_with(['-', '_']) {
            return Err(format!(
                "function name {raw:?} starts or ends with '-' or '_'; {hint}"
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Language runtimes the platform can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Python,
    Node,
}

impl Runtime {
    pub fn as_str(&self) -> &'static str {
        match self {
            Runtime::Python => "python",
            Runtime::Node => "node",
        }
    }

    /// Every runtime, for building images.
    pub const ALL: [Runtime; 2] = [Runtime::Python, Runtime::Node];

    fn extension(&self) -> &'static str {
        match self {
            Runtime::Python => "py",
            Runtime::Node => "js",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "python" | "python3" => Ok(Runtime::Python),
            "node" | "nodejs" => Ok(Runtime::Node),
            other => Err(format!(
                "runtime {other:?} is not supported; use runtime: python or runtime: node"
            )),
        }
    }
}

/// The function's settings after `ol.yaml` and the defaults are applied.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Manifest {
    pub runtime: Runtime,
    /// `module.function`, e.g. `f.f` (the default) for `def f(event)` in `f.py`.
    pub handler: String,
    /// Whether `ol.yaml` named the handler (else the entry file decides).
    #[serde(skip)]
    pub handler_named: bool,
    /// Whether `ol.yaml` named the runtime.
    #[serde(skip)]
    pub runtime_named: bool,
    pub memory_mb: u32,
    pub timeout_ms: u64,
    pub environment: BTreeMap<String, String>,
    /// HTTP methods the function URL accepts; `None` means any.
    pub http_methods: Option<Vec<String>>,
    /// Calls one container serves at once.
    pub concurrency: u32,
    /// Containers the function may have at once.
    pub max_concurrency: u32,
    /// Whether its containers reach the internet (`network` in `ol.yaml`).
    pub network: Network,
    /// Size of its writable `/tmp`, in MiB (`tmp_mb`).
    pub tmp_mb: u32,
    /// Who may call the function URL: `none` (anyone) or `key` (a caller
    /// with one of its invoke keys).
    pub auth: &'static str,
    /// Calls per second the function URL takes; `None`: no limit.
    pub rate_limit: Option<RateLimit>,
    /// `async`, `triggers.cron`, `on_success`, `on_failure`.
    pub events: crate::events::EventSettings,
}

/// `rate_limit` in `ol.yaml` (and PATCH): a token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    /// Calls that may come at once above the rate (default: one second's).
    pub burst: Option<u32>,
}

impl RateLimit {
    /// Checks the numbers; fills in the burst.
    pub fn checked(self) -> Result<Self, String> {
        if !(self.per_second.is_finite() && (0.001..=100_000.0).contains(&self.per_second)) {
            return Err(format!(
                "rate_limit.per_second {} is out of range; use 0.001 to 100000",
                self.per_second
            ));
        }
        let burst = self.burst.unwrap_or(self.per_second.ceil() as u32).max(1);
        Ok(Self {
            per_second: self.per_second,
            burst: Some(in_range("rate_limit.burst", burst, &(1..=100_000))?),
        })
    }
}

/// `auth` in `ol.yaml` (and PATCH).
pub fn parse_auth(raw: &str) -> Result<&'static str, String> {
    match raw {
        "none" => Ok("none"),
        "key" => Ok("key"),
        other => Err(format!(
            "auth {other:?} is not known; use auth: none (public) or auth: key (invoke keys)"
        )),
    }
}

/// A function's network: the internet but nothing local (the default), or
/// no network at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    #[default]
    Internet,
    None,
}

impl Network {
    pub fn as_str(&self) -> &'static str {
        match self {
            Network::Internet => "internet",
            Network::None => "none",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "internet" => Ok(Network::Internet),
            "none" => Ok(Network::None),
            other => Err(format!(
                "network {other:?} is not known; use network: internet or network: none"
            )),
        }
    }
}

pub const TMP_MB_RANGE: std::ops::RangeInclusive<u32> = 1..=10_240;
/// `/tmp` of a function whose `ol.yaml` names no `tmp_mb`.
pub const DEFAULT_TMP_MB: u32 = 64;

/// The smallest memory limit, and the default largest (`OL_MAX_MEMORY_MB`).
pub const MIN_MEMORY_MB: u32 = 64;
pub const DEFAULT_MAX_MEMORY_MB: u32 = 10_240;
/// The default largest timeout (`OL_MAX_TIMEOUT_S`), AWS Lambda's.
pub const DEFAULT_MAX_TIMEOUT_S: u64 = 900;
pub const CONCURRENCY_RANGE: std::ops::RangeInclusive<u32> = 1..=1000;
pub const MAX_CONCURRENCY_RANGE: std::ops::RangeInclusive<u32> = 1..=10_000;

/// Checks `value` against `range`; the error names the key and the range.
pub fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: &std::ops::RangeInclusive<T>,
) -> Result<T, String> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{key} {value} is out of range; use {} to {}",
            range.start(),
            range.end()
        ))
    }
}

/// The limits an `ol.yaml` gets: the operator's defaults for what it does
/// not name (`OL_DEFAULT_MEMORY_MB`, `OL_DEFAULT_TIMEOUT_S`, as OpenLambda's
/// worker-wide limits) and the largest it may ask for (`OL_MAX_MEMORY_MB`,
/// `OL_MAX_TIMEOUT_S`), both at upload. A stored zip, accepted once, gets
/// no maximum (a lowered maximum must not lose it); its limits live in its
/// row, not in a new reading of its `ol.yaml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_memory_mb: u32,
    pub max_timeout_s: u64,
    pub default_memory_mb: u32,
    pub default_timeout_s: u64,
}

/// A function's memory and timeout when neither `ol.yaml` nor the operator
/// names them.
pub const DEFAULT_MEMORY_MB: u32 = 128;
pub const DEFAULT_TIMEOUT_S: u64 = 30;

impl Limits {
    /// For zips accepted before: no maximum.
    pub const NONE: Limits = Limits {
        max_memory_mb: u32::MAX,
        max_timeout_s: u64::MAX / 1000,
        default_memory_mb: DEFAULT_MEMORY_MB,
        default_timeout_s: DEFAULT_TIMEOUT_S,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory_mb: DEFAULT_MAX_MEMORY_MB,
            max_timeout_s: DEFAULT_MAX_TIMEOUT_S,
            default_memory_mb: DEFAULT_MEMORY_MB,
            default_timeout_s: DEFAULT_TIMEOUT_S,
        }
    }
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            runtime: Runtime::Python,
            handler: "f.f".to_string(),
            handler_named: false,
            runtime_named: false,
            memory_mb: DEFAULT_MEMORY_MB,
            timeout_ms: DEFAULT_TIMEOUT_S * 1000,
            environment: BTreeMap::new(),
            http_methods: None,
            concurrency: 1,
            max_concurrency: 100,
            auth: "none",
            rate_limit: None,
            network: Network::Internet,
            tmp_mb: DEFAULT_TMP_MB,
            events: Default::default(),
        }
    }
}

/// `ol.yaml` as written; unknown keys are rejected, not ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    runtime: Option<String>,
    handler: Option<String>,
    memory_mb: Option<u32>,
    timeout_s: Option<u64>,
    environment: Option<BTreeMap<String, serde_yaml::Value>>,
    triggers: Option<RawTriggers>,
    concurrency: Option<u32>,
    max_concurrency: Option<u32>,
    auth: Option<String>,
    rate_limit: Option<RateLimit>,
    network: Option<String>,
    tmp_mb: Option<u32>,
    #[serde(rename = "async")]
    async_: Option<crate::events::config::RawAsync>,
    on_success: Option<String>,
    on_failure: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTriggers {
    http: Option<Vec<RawHttpTrigger>>,
    cron: Option<Vec<crate::events::config::RawCron>>,
}

/// Either `- GET` or, as OpenLambda writes it, `- method: GET`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawHttpTrigger {
    Method(String),
    Detailed { method: String },
}

impl Manifest {
    /// Parses `ol.yaml` with the built-in limits; an empty file gives the defaults.
    pub fn parse(yaml: &str) -> Result<Self, String> {
        Self::parse_within(yaml, &Limits::default())
    }

    /// Parses `ol.yaml` (empty: none), taking `limits`' defaults for what
    /// it does not name and refusing more than its maxima.
    pub fn parse_within(yaml: &str, limits: &Limits) -> Result<Self, String> {
        let mut raw: RawManifest = if yaml.trim().is_empty() {
            RawManifest::default()
        } else {
            serde_yaml::from_str(yaml).map_err(|e| format!("ol.yaml is not valid: {e}"))?
        };
        let mut m = Manifest {
            memory_mb: limits.default_memory_mb,
            timeout_ms: limits.default_timeout_s.saturating_mul(1000),
            ..Manifest::default()
        };
        if let Some(runtime) = raw.runtime {
            m.runtime = Runtime::parse(&runtime).map_err(|e| format!("ol.yaml: {e}"))?;
            m.runtime_named = true;
        }
        if let Some(handler) = raw.handler {
            m.handler = parse_handler(&handler)?;
            m.handler_named = true;
        }
        fn checked<T>(r: Result<T, String>) -> Result<T, String> {
            r.map_err(|e| format!("ol.yaml: {e}"))
        }
        if let Some(mb) = raw.memory_mb {
            m.memory_mb = checked(within(
                "memory_mb",
                mb,
                MIN_MEMORY_MB..=limits.max_memory_mb,
                "OL_MAX_MEMORY_MB",
            ))?;
        }
        if let Some(s) = raw.timeout_s {
            m.timeout_ms = checked(within(
                "timeout_s",
                s,
                1..=limits.max_timeout_s,
                "OL_MAX_TIMEOUT_S",
            ))? * 1000;
        }
        if let Some(c) = raw.concurrency {
            m.concurrency = checked(in_range("concurrency", c, &CONCURRENCY_RANGE))?;
        }
        if let Some(c) = raw.max_concurrency {
            m.max_concurrency = checked(in_range("max_concurrency", c, &MAX_CONCURRENCY_RANGE))?;
        }
        if let Some(auth) = raw.auth {
            m.auth = checked(parse_auth(&auth))?;
        }
        if let Some(limit) = raw.rate_limit {
            m.rate_limit = Some(checked(limit.checked())?);
        }
        if let Some(network) = raw.network {
            m.network = checked(Network::parse(&network))?;
        }
        if let Some(mb) = raw.tmp_mb {
            m.tmp_mb = checked(in_range("tmp_mb", mb, &TMP_MB_RANGE))?;
        }
        for (key, value) in raw.environment.unwrap_or_default() {
            if !is_env_name(&key) {
                return Err(format!(
                    "ol.yaml: environment variable name {key:?} is not valid; \
                     use letters, digits and '_', not starting with a digit"
                ));
            }
            let value = match value {
                serde_yaml::Value::String(s) => s,
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(format!(
                        "ol.yaml: environment.{key} must be a string, number or boolean"
                    ))
                }
            };
            m.environment.insert(key, value);
        }
        m.events = checked(crate::events::EventSettings::parse(
            crate::events::config::RawEvents {
                async_: raw.async_,
                cron: raw.triggers.as_mut().and_then(|t| t.cron.take()),
                on_success: raw.on_success,
                on_failure: raw.on_failure,
            },
        ))?;
        if let Some(http) = raw.triggers.and_then(|t| t.http) {
            let mut methods = Vec::new();
            for trigger in http {
                let method = match trigger {
                    RawHttpTrigger::Method(m) | RawHttpTrigger::Detailed { method: m } => m,
                };
                let upper = method.to_ascii_uppercase();
                const KNOWN: [&str; 7] =
                    ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
                if !KNOWN.contains(&upper.as_str()) {
                    return Err(format!(
                        "ol.yaml: triggers.http method {method:?} is not known; use one of {}",
                        KNOWN.join(", ")
                    ));
                }
                if !methods.contains(&upper) {
                    methods.push(upper);
                }
            }
            m.http_methods = Some(methods);
        }
        Ok(m)
    }

    /// When `ol.yaml` names no handler, the entry file decides: `f.py`
    /// (OpenLambda's `f(event)`, or its `app`), else `lambda_function.py`
    /// (AWS Lambda's `lambda_handler(event, context)`).
    /// `index.js` (or `runtime: node`) means Node's `exports.handler`.
    /// OpenLambda's `OL_ENTRY_FILE` and `OL_WSGI_ENTRY` in `environment`
    /// choose the file and the web app, as OpenLambda's worker reads them.
    pub fn pick_handler(&mut self, files: &[&str]) {
        if !self.handler_named && self.runtime == Runtime::Python {
            if let Some(handler) = self.openlambda_entry() {
                self.handler = handler;
                return;
            }
        }
        let node = match (self.runtime_named, self.runtime) {
            (true, runtime) => runtime == Runtime::Node,
            (false, _) => {
                !files.contains(&"f.py")
                    && !files.contains(&"lambda_function.py")
                    && files.contains(&"index.js")
            }
        };
        if node {
            self.runtime = Runtime::Node;
            if !self.handler_named {
                self.handler = "index.handler".into();
            }
            return;
        }
        if self.handler_named || files.contains(&"f.py") {
            return;
        }
        if files.contains(&"lambda_function.py") {
            self.handler = "lambda_function.lambda_handler".into();
        }
    }

    /// `module.attribute` from `OL_ENTRY_FILE` (default `f.py`) and
    /// `OL_WSGI_ENTRY` (default `f`, which falls back to `app`), when either
    /// is set to something a Python handler can be.
    fn openlambda_entry(&self) -> Option<String> {
        let file = self.environment.get("OL_ENTRY_FILE");
        let entry = self.environment.get("OL_WSGI_ENTRY");
        if file.is_none() && entry.is_none() {
            return None;
        }
        let module = file.map_or("f", |f| f.strip_suffix(".py").unwrap_or(f));
        let entry = entry.map_or("f", String::as_str);
        parse_handler(&format!("{}.{entry}", module.replace('/', "."))).ok()
    }

    /// The file the handler's module lives in, e.g. `f.py` for `f.f`,
    /// `index.js` for Node's `index.handler`.
    pub fn handler_file(&self) -> String {
        let (module, _) = self.handler_parts();
        format!("{}.{}", module.replace('.', "/"), self.runtime.extension())
    }

    /// (`module`, `function`) of the handler.
    pub fn handler_parts(&self) -> (&str, &str) {
        self.handler
            .rsplit_once('.')
            .expect("handler was parsed as module.function")
    }
}

/// [`in_range`] for a limit whose maximum is an operator's `setting`: a
/// value above it says which setting raises it.
fn within<T: PartialOrd + fmt::Display + Copy>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    setting: &str,
) -> Result<T, String> {
    let checked = in_range(key, value, &range);
    if value > *range.end() {
        checked.map_err(|e| format!("{e} (the operator may raise the maximum with {setting})"))
    } else {
        checked
    }
}

fn parse_handler(raw: &str) -> Result<String, String> {
    let hint = "write handler as module.function, e.g. handler: main.handle for def handle(event) in main.py";
    let Some((module, function)) = raw.rsplit_once('.') else {
        return Err(format!("ol.yaml: handler {raw:?} names no module; {hint}"));
    };
    let module = module
        .strip_suffix(".py")
        .or_else(|| module.strip_suffix(".js"))
        .unwrap_or(module);
    let ident = |s: &str| {
        !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !module.split('.').all(ident) || !ident(function) {
        return Err(format!("ol.yaml: handler {raw:?} is not valid; {hint}"));
    }
    Ok(format!("{module}.{function}"))
}

fn is_env_name(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(FunctionName::parse("hello-world-2").is_ok());
        assert!(FunctionName::parse(&"a".repeat(63)).is_ok());
        assert!(FunctionName::parse(&"a".repeat(64)).is_err());
        assert!(FunctionName::parse("").is_err());
        assert!(FunctionName::parse("Hello").unwrap_err().contains("'H'"));
        assert!(FunctionName::parse("max_mem_alloc").is_ok());
        assert!(FunctionName::parse("_a").is_err());
        assert!(FunctionName::parse("a_").is_err());
        assert!(FunctionName::parse("-a").is_err());
        assert!(FunctionName::parse("a/b").is_err());
    }

    #[test]
    fn empty_manifest_gives_defaults() {
        let m = Manifest::parse("").unwrap();
        assert_eq!(m, Manifest::default());
        assert_eq!(m.handler_file(), "f.py");
        assert_eq!(m.handler_parts(), ("f", "f"));
    }

    #[test]
    fn full_manifest() {
        let m = Manifest::parse(
            "runtime: python\nhandler: app.main.handle\nmemory_mb: 256\ntimeout_s: 5\n\
             environment:\n  GREETING: hi\n  N: 3\ntriggers:\n  http:\n    - method: get\n    - POST\n\
             concurrency: 4\nmax_concurrency: 10\nnetwork: none\ntmp_mb: 16\n",
        )
        .unwrap();
        assert_eq!((m.network, m.tmp_mb), (Network::None, 16));
        assert_eq!(m.handler, "app.main.handle");
        assert_eq!(m.handler_file(), "app/main.py");
        assert_eq!(m.memory_mb, 256);
        assert_eq!(m.timeout_ms, 5000);
        assert_eq!(m.environment["N"], "3");
        assert_eq!(m.http_methods, Some(vec!["GET".into(), "POST".into()]));
        assert_eq!((m.concurrency, m.max_concurrency), (4, 10));
    }

    #[test]
    fn openlambda_entry_settings_choose_the_handler() {
        let picked = |yaml: &str, files: &[&str]| {
            let mut m = Manifest::parse(yaml).unwrap();
            m.pick_handler(files);
            m.handler
        };
        let file = "environment:\n  OL_ENTRY_FILE: app.py\n";
        assert_eq!(picked(file, &["app.py"]), "app.f");
        let both = "environment:\n  OL_ENTRY_FILE: main.py\n  OL_WSGI_ENTRY: my_app\n";
        assert_eq!(picked(both, &["main.py"]), "main.my_app");
        assert_eq!(
            picked("environment:\n  OL_WSGI_ENTRY: web\n", &["f.py"]),
            "f.web"
        );
        // A named handler wins over the settings.
        assert_eq!(picked(&format!("handler: x.y\n{file}"), &["x.py"]), "x.y");
        // A value no module can have is left for the missing-file error.
        let bad = "environment:\n  OL_ENTRY_FILE: 1-x.py\n";
        assert_eq!(picked(bad, &["f.py"]), "f.f");
    }

    #[test]
    fn maxima_bound_limits_and_name_their_settings() {
        let err = Manifest::parse("timeout_s: 3600").unwrap_err();
        assert!(
            err.contains("use 1 to 900") && err.contains("OL_MAX_TIMEOUT_S"),
            "{err}"
        );
        let raised = Limits {
            max_memory_mb: 4096,
            max_timeout_s: 3600,
            ..Limits::default()
        };
        let m = Manifest::parse_within("timeout_s: 3600\nmemory_mb: 2000", &raised).unwrap();
        assert_eq!((m.timeout_ms, m.memory_mb), (3_600_000, 2000));
        let err = Manifest::parse_within("memory_mb: 8000", &raised).unwrap_err();
        assert!(
            err.contains("use 64 to 4096") && err.contains("OL_MAX_MEMORY_MB"),
            "{err}"
        );
        let err = Manifest::parse("memory_mb: 1").unwrap_err();
        assert!(!err.contains("OL_MAX"), "{err}");
    }

    #[test]
    fn operator_defaults_fill_what_ol_yaml_leaves_out() {
        let worker_wide = Limits {
            max_memory_mb: 4096,
            max_timeout_s: 3600,
            default_memory_mb: 2000,
            default_timeout_s: 3600,
        };
        for yaml in ["", "runtime: python\n"] {
            let m = Manifest::parse_within(yaml, &worker_wide).unwrap();
            assert_eq!((m.memory_mb, m.timeout_ms), (2000, 3_600_000), "{yaml:?}");
        }
        // What ol.yaml names wins over the defaults.
        let m = Manifest::parse_within("memory_mb: 256\ntimeout_s: 5", &worker_wide).unwrap();
        assert_eq!((m.memory_mb, m.timeout_ms), (256, 5_000));
        let built_in = Manifest::parse("").unwrap();
        assert_eq!((built_in.memory_mb, built_in.timeout_ms), (128, 30_000));
    }

    #[test]
    fn handler_may_name_the_file() {
        assert_eq!(
            Manifest::parse("handler: main.py.f").unwrap().handler,
            "main.f"
        );
    }

    #[test]
    fn bad_manifests_say_what_to_fix() {
        for (yaml, needle) in [
            ("memory_mb: 1", "memory_mb 1 is out of range"),
            ("timeout_s: 0", "timeout_s 0 is out of range"),
            (
                "max_concurrency: 0",
                "max_concurrency 0 is out of range; use 1 to 10000",
            ),
            ("concurrency: 5000", "concurrency 5000 is out of range"),
            ("colour: red", "unknown field `colour`"),
            (
                "runtime: cobol",
                "not supported; use runtime: python or runtime: node",
            ),
            ("handler: f", "names no module"),
            ("handler: 1x.f", "not valid"),
            ("environment:\n  1X: a", "not valid"),
            ("environment:\n  X: [1]", "string, number or boolean"),
            ("triggers:\n  http: [FETCH]", "not known"),
            ("network: host", "use network: internet or network: none"),
            ("tmp_mb: 0", "tmp_mb 0 is out of range"),
            (": : :", "not valid"),
        ] {
            let err = Manifest::parse(yaml).unwrap_err();
            assert!(err.contains(needle), "{yaml:?}: {err}");
        }
    }

    #[test]
    fn auth_and_rate_limit() {
        let m = Manifest::parse("auth: key\nrate_limit: {per_second: 2.5}\n").unwrap();
        assert_eq!(m.auth, "key");
        assert_eq!(m.rate_limit.unwrap().burst, Some(3));
        assert_eq!(Manifest::parse("").unwrap().auth, "none");
        let err = Manifest::parse("auth: open\n").unwrap_err();
        assert!(err.contains("auth: none"), "{err}");
        let err = Manifest::parse("rate_limit: {per_second: 0}\n").unwrap_err();
        assert!(err.contains("per_second"), "{err}");
    }
}
