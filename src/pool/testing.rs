//! Made-up functions and settings for the pool's unit tests.

use std::sync::Arc;
use std::time::Duration;

use crate::config::PoolSettings;
use crate::function::FunctionSpec;

/// Pool settings for tests: no prewarming, a long pause grace and
/// keep-alive (nothing happens on its own), short queue and start limits.
pub fn settings() -> PoolSettings {
    let mut s = crate::config::Settings::from_lookup(|k| {
        (k == "DATABASE_URL").then(|| "postgres://unused".to_string())
    })
    .unwrap()
    .pool;
    s.queue_length = 10;
    s.memory_budget_mb = 10_000;
    s.prewarm = 0;
    s.prewarm_runtimes = vec!["python".into()];
    s.prewarm_memory_mb = 128;
    s.pause_grace = Duration::from_secs(60);
    s.keep_alive = Duration::from_secs(600);
    s.queue_timeout = Duration::from_secs(2);
    s.start_timeout = Duration::from_secs(2);
    s
}

/// A Python function of `memory_mb`, `concurrency` calls per container and
/// at most `max` containers.
pub fn function(name: &str, memory_mb: i32, concurrency: i32, max: i32) -> Arc<FunctionSpec> {
    Arc::new(FunctionSpec {
        name: name.into(),
        version: "v1".into(),
        runtime: crate::manifest::Runtime::Python,
        handler: "f.f".into(),
        memory_mb,
        timeout_ms: 1000,
        environment: Default::default(),
        http_methods: None,
        concurrency,
        max_concurrency: max,
        packages: Vec::new(),
        network: crate::manifest::Network::Internet,
        tmp_mb: 64,
    })
}
