//! The import cache and the `start` of records on the real engine: a
//! function pinning six==1.16.0 is served by a container whose runtime
//! imported six 1.16.0 before the function's code was loaded, a function
//! pinning another version never is; a function whose packages are in no
//! cached set starts as usual; sets never take the pool past its budget;
//! records say how each call's container was had.

use std::time::Duration;

use openlambda::config::Settings;

use crate::helpers::{eventually, json, spawn_app_with, TestApp};
use crate::runtimes::ca_bundle;

/// Reports whether six was imported before the handler's module asked for
/// it: true only in a container whose runtime imported it already; and how
/// many objects the runtime froze out of the garbage collector's sight.
const SIX_HANDLER: &str = "import gc, sys
preimported = 'six' in sys.modules
import six
def f(event):
    return {'preimported': preimported, 'version': six.__version__, 'file': six.__file__,
            'frozen': gc.get_freeze_count()}
";

fn pinned(settings: &mut Settings, sets: &[&[(&str, &str)]]) {
    settings.ca_bundle = ca_bundle();
    settings.pool.prewarm = 1;
    settings.pool.prewarm_runtimes = vec!["python".into()];
    settings.pool.import_cache_auto = 0;
    settings.pool.import_cache = sets
        .iter()
        .map(|set| {
            set.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        })
        .collect();
}

/// Waits (installs included) until the sets named are cached.
async fn until_cached(app: &TestApp, sets: &[&str]) {
    let cached = eventually(Duration::from_secs(300), || async {
        let ready = app.pool.import_cache();
        sets.iter().all(|s| ready.iter().any(|c| c.set == *s))
    })
    .await;
    assert!(
        cached,
        "sets {sets:?} not cached: {:?}",
        app.pool.import_cache()
    );
}

/// The `start` of the latest record of `function`.
async fn last_start(app: &TestApp, function: &str) -> String {
    app.flush().await;
    let (status, body) = json(
        app.get(&format!("/api/v1/functions/{function}/invocations?limit=1"))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["invocations"][0]["start"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn call(app: &TestApp, function: &str) -> serde_json::Value {
    let (status, body) = json(app.run(function, "{}").await).await;
    assert_eq!(status, 200, "{function}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_version_is_served_from_its_cache_and_another_version_never_is() {
    let app = spawn_app_with(|s| pinned(s, &[&[("six", "1.16.0")]])).await;
    until_cached(&app, &["six-1.16.0"]).await;
    let cached = &app.pool.import_cache()[0];
    assert_eq!(cached.modules, ["six"]);
    assert!(cached.memory_mb.is_some_and(|mb| mb > 0), "{cached:?}");

    app.deploy_ok(
        "six16",
        &[("f.py", SIX_HANDLER), ("requirements.txt", "six==1.16.0\n")],
    )
    .await;
    app.deploy_ok(
        "six15",
        &[("f.py", SIX_HANDLER), ("requirements.txt", "six==1.15.0\n")],
    )
    .await;
    // Another version of six: a plain prewarmed (or new) container.
    let other = call(&app, "six15").await;
    assert_eq!(other["version"], "1.15.0", "{other}");
    assert_eq!(other["preimported"], false, "{other}");
    assert!(other["file"]
        .as_str()
        .unwrap()
        .starts_with("/packages/six-1.15.0/"));
    let start = last_start(&app, "six15").await;
    assert!(["prewarmed", "new"].contains(&start.as_str()), "{start}");
    assert_eq!(
        app.pool.import_cache().len(),
        1,
        "the cached set was left alone"
    );

    let served = call(&app, "six16").await;
    assert_eq!(served["preimported"], true, "{served}");
    assert_eq!(served["version"], "1.16.0");
    assert!(served["file"]
        .as_str()
        .unwrap()
        .starts_with("/packages/six-1.16.0/"));
    assert_eq!(last_start(&app, "six16").await, "import-cache");
    // Every runtime froze its own heap; one of the cache, its set's too.
    let frozen = |reply: &serde_json::Value| reply["frozen"].as_u64().unwrap_or_default();
    assert!(frozen(&other) > 0, "{other}");
    assert!(frozen(&served) > frozen(&other), "{served} {other}");
    // The next call is warm, in the same container.
    call(&app, "six16").await;
    assert_eq!(last_start(&app, "six16").await, "running");

    // A function whose packages are in no cached set starts as usual.
    app.deploy_ok("plain", &[("f.py", "def f(event):\n    return 'ok'\n")])
        .await;
    assert!(
        app.pool
            .wait_prewarmed("python", 1, Duration::from_secs(60))
            .await
    );
    call(&app, "plain").await;
    assert_eq!(last_start(&app, "plain").await, "prewarmed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_are_kept_within_the_memory_budget() {
    let app = spawn_app_with(|s| {
        pinned(
            s,
            &[
                &[("six", "1.16.0")],
                &[("six", "1.15.0")],
                &[("idna", "3.7")],
            ],
        );
        s.pool.memory_budget_mb = 128 * 3;
    })
    .await;
    // The plain floor and then two sets fill the budget; the third waits.
    let full = eventually(Duration::from_secs(300), || async {
        app.pool.status().used_mb == 128 * 3 && app.pool.import_cache().len() == 2
    })
    .await;
    assert!(
        full,
        "{:?} {:?}",
        app.pool.status(),
        app.pool.import_cache()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = app.pool.status();
    assert!(status.used_mb <= status.budget_mb, "{status:?}");
    assert_eq!(app.pool.import_cache().len(), 2);
    // What the engine holds agrees: three containers of 128 MB.
    let containers = app.all_containers().await;
    assert_eq!(containers.len(), 3, "{containers:?}");
    for c in &containers {
        let limit = app
            .docker
            .inspect_container(c.id.as_deref().unwrap(), None)
            .await
            .unwrap()
            .host_config
            .unwrap()
            .memory
            .unwrap();
        assert_eq!(limit, 128 * 1024 * 1024);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_say_how_each_container_was_had() {
    let app = spawn_app_with(|s| {
        s.pool.prewarm = 1;
        s.pool.prewarm_runtimes = vec!["python".into()];
    })
    .await;
    assert!(
        app.pool
            .wait_prewarmed("python", 1, Duration::from_secs(60))
            .await
    );
    app.deploy_ok("starts", &[("f.py", "def f(event):\n    return event\n")])
        .await;
    call(&app, "starts").await;
    assert_eq!(last_start(&app, "starts").await, "prewarmed");
    call(&app, "starts").await;
    assert_eq!(last_start(&app, "starts").await, "running");
    let paused = eventually(Duration::from_secs(10), || async {
        app.pool
            .containers("starts")
            .iter()
            .all(|c| c.phase == "paused")
    })
    .await;
    assert!(paused, "{:?}", app.pool.containers("starts"));
    call(&app, "starts").await;
    assert_eq!(last_start(&app, "starts").await, "paused");
    // Its own /tmp size: no prewarmed container fits it.
    app.deploy_ok(
        "own-tmp",
        &[
            ("f.py", "def f(event):\n    return event\n"),
            ("ol.yaml", "tmp_mb: 32\n"),
        ],
    )
    .await;
    call(&app, "own-tmp").await;
    assert_eq!(last_start(&app, "own-tmp").await, "new");

    // The CSV form carries it too.
    let csv = app
        .get("/api/v1/functions/starts/invocations?format=csv")
        .await
        .text()
        .await
        .unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header
        .iter()
        .position(|c| *c == "start")
        .expect("a start column");
    let starts: Vec<String> = lines
        .map(|l| l.split(',').nth(at).unwrap().to_string())
        .collect();
    assert_eq!(starts, ["paused", "running", "prewarmed"], "newest first");
    app.stop().await;
}
