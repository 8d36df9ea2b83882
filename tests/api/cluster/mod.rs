//! Several managers on one Postgres behind a real HAProxy (the shipped
//! `haproxy/haproxy.cfg`): three nodes on this host, each with its own
//! instance, data directory and port, as they would be on three hosts.

mod haproxy;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openlambda::config::Settings;
use openlambda::packages::Installer;
use openlambda::testing::ThrowawayDatabase;

use crate::helpers::{admin_url, eventually, json, start, test_settings, TestApp, ECHO};
use crate::process::ServeEnv;
use haproxy::{Haproxy, NodeAddrs};

/// Three in-process managers on one test database, and HAProxy before them.
struct Cluster {
    nodes: Vec<TestApp>,
    lb: Haproxy,
    http: reqwest::Client,
    /// Data directories of the nodes after the first (whose is its Scratch).
    _dirs: Vec<tempfile::TempDir>,
}

/// Where a node takes management calls (`OL_LISTEN`) and function calls
/// (`OL_FUNCTIONS_LISTEN`).
fn addrs(node: &TestApp) -> NodeAddrs {
    NodeAddrs {
        api: node.addr,
        functions: node.fn_addr,
    }
}

impl Cluster {
    async fn start(balance_factor: Option<u32>, change: impl Fn(&mut Settings)) -> Self {
        let (first, scratch) = test_settings().await;
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..3 {
            let mut settings = first.clone();
            if i > 0 {
                let dir = tempfile::tempdir().expect("temp dir");
                settings.data_dir = dir.path().to_path_buf();
                settings.instance = format!("{}-n{i}", first.instance);
                dirs.push(dir);
            }
            settings.ca_bundle = crate::runtimes::ca_bundle();
            change(&mut settings);
            nodes.push(start(settings, scratch.clone()).await);
        }
        let lb = Haproxy::start(&nodes.iter().map(addrs).collect::<Vec<_>>(), balance_factor).await;
        Self {
            nodes,
            lb,
            http: crate::helpers::client_with_key(Some(crate::helpers::ADMIN_TOKEN)),
            _dirs: dirs,
        }
    }

    /// `POST /run/{name}` through HAProxy.
    async fn run(&self, name: &str, event: &str) -> reqwest::Response {
        self.http
            .post(self.lb.fn_url(&format!("/run/{name}")))
            .body(event.to_string())
            .send()
            .await
            .expect("call through HAProxy")
    }

    /// Which node holds containers of `function` (by index).
    fn holders(&self, function: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].pool.containers(function).is_empty())
            .collect()
    }
}

/// A call through HAProxy in a task of its own: its status.
fn spawn_run(
    cluster: &Arc<Cluster>,
    name: &'static str,
    event: &'static str,
) -> tokio::task::JoinHandle<u16> {
    let cluster = cluster.clone();
    tokio::spawn(async move { cluster.run(name, event).await.status().as_u16() })
}

/// `POST /run/{name}` on one node's function listener, past HAProxy.
async fn run_on(http: &reqwest::Client, node: SocketAddr, name: &str) -> (u16, serde_json::Value) {
    json(
        http.post(format!("http://{node}/run/{name}"))
            .body("{}")
            .send()
            .await
            .expect("call a node"),
    )
    .await
}

const SIX: &str = "import six\ndef f(event):\n    return {'six': six.__version__}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_through_one_node_serves_on_every_node_and_a_delete_reaches_all() {
    let cluster = Cluster::start(None, |_| {}).await;
    let http = &cluster.http;
    let deployed = cluster.nodes[0]
        .deploy_ok(
            "pinned",
            &[("f.py", SIX), ("requirements.txt", "six==1.16.0\n")],
        )
        .await;
    assert_eq!(deployed["packages"][0]["version"], "1.16.0", "{deployed}");

    // A node whose install fails answers the call as the platform's error,
    // stores nothing, and tries again on the next call.
    let third = &cluster.nodes[2];
    Installer::override_install_for_tests(&third.settings.instance, "six", vec!["false".into()]);
    let (status, body) = run_on(http, addrs(third).functions, "pinned").await;
    assert_eq!(status, 500, "{body}");
    let cache = Installer::cache_dir(&third.settings.data_dir).join("six-1.16.0");
    assert!(!cache.exists(), "nothing half-installed");
    Installer::override_install_for_tests(&third.settings.instance, "none", Vec::new());

    // Nodes 1 and 2 never saw the deploy: the first call there installs
    // the stored pin into their own cache, then runs.
    for (i, node) in cluster.nodes.iter().enumerate() {
        let cache = Installer::cache_dir(&node.settings.data_dir).join("six-1.16.0");
        assert_eq!(cache.is_dir(), i == 0, "node {i} before its first call");
        let (status, body) = run_on(http, addrs(node).functions, "pinned").await;
        assert_eq!(
            (status, &body["six"]),
            (200, &"1.16.0".into()),
            "node {i}: {body}"
        );
        assert!(cache.is_dir(), "node {i} installed the pinned package");
    }

    // Through HAProxy: one steady function stays on one node, which
    // HAProxy names in the answer.
    let before = cluster.lb.function_servers().await;
    let mut named = std::collections::HashSet::new();
    for _ in 0..10 {
        let response = cluster.run("pinned", "{}").await;
        named.insert(
            response.headers()["x-ol-node"]
                .to_str()
                .unwrap()
                .to_string(),
        );
        let (status, body) = json(response).await;
        assert_eq!(status, 200, "{body}");
    }
    let after = cluster.lb.function_servers().await;
    let served: Vec<u64> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| after[*n].total - before[*n].total)
        .collect();
    assert_eq!(served.iter().sum::<u64>(), 10, "{served:?}");
    assert!(served.contains(&10), "every call on one node: {served:?}");
    let home = named.iter().next().unwrap();
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(
        after[home].total - before[home].total,
        10,
        "{home} served them"
    );
    // Function calls and management are two origins through HAProxy too.
    let on_management = http
        .post(cluster.lb.url("/run/pinned"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_ne!(
        on_management.status(),
        200,
        "no function call on the management port"
    );
    let api_on_functions = http
        .get(cluster.lb.fn_url("/api/v1/functions"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        api_on_functions.status(),
        404,
        "no API on the function port"
    );

    // Every node reports the same bill, from the same Postgres.
    for node in &cluster.nodes {
        node.flush().await;
    }
    let mut reports = Vec::new();
    for node in &cluster.nodes {
        let (status, report) = json(
            node.get("/api/v1/billing?from=2000-01-01&to=2100-01-01")
                .await,
        )
        .await;
        assert_eq!(status, 200, "{report}");
        reports.push(report);
    }
    // 3 + 10 answered calls; the failed one is the platform's, not billed.
    assert_eq!(reports[0]["total"]["invocations"], 13, "{}", reports[0]);
    assert!(reports.iter().all(|r| *r == reports[0]), "{reports:#?}");

    // A delete through another node is a 404 on every node within a second.
    let deleted = http
        .delete(cluster.nodes[1].url("/api/v1/functions/pinned"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let at = Instant::now();
    let gone = eventually(Duration::from_secs(1), || async {
        let mut all = true;
        for node in &cluster.nodes {
            all &= run_on(http, addrs(node).functions, "pinned").await.0 == 404;
        }
        all && cluster.run("pinned", "{}").await.status() == 404
    })
    .await;
    assert!(gone, "404 everywhere {:?} after the delete", at.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_makes_haproxy_try_another() {
    // Pure consistent hashing (no bounded load), so only "node full"
    // moves a call.
    let cluster = Cluster::start(Some(0), |s| s.cluster.spill_queue = 1).await;
    let slow = "import time\ndef f(event):\n    time.sleep(event['s'])\n    return 'ok'\n";
    cluster.nodes[0]
        .deploy_ok(
            "slow",
            &[("f.py", slow), ("ol.yaml", "max_concurrency: 1\n")],
        )
        .await;
    // A warm container on the function's node, found by who holds it.
    assert_eq!(cluster.run("slow", r#"{"s": 0}"#).await.status(), 200);
    let holders = cluster.holders("slow");
    assert_eq!(holders.len(), 1, "{holders:?}");
    let home = holders[0];

    // One call runs there, one waits: the node is full.
    let cluster = Arc::new(cluster);
    let home = &cluster.nodes[home];
    let first = spawn_run(&cluster, "slow", r#"{"s": 3}"#);
    let running = || async { home.pool.status().busy == 1 };
    assert!(eventually(Duration::from_secs(10), running).await);
    let second = spawn_run(&cluster, "slow", r#"{"s": 0}"#);
    let waiting = || async { home.pool.status().queued == 1 };
    assert!(eventually(Duration::from_secs(10), waiting).await);

    // Asked directly, the full node says so, before running anything.
    let direct = format!("http://{}/run/slow", addrs(home).functions);
    let full = cluster
        .http
        .post(&direct)
        .body(r#"{"s": 0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(full.status(), 503);
    assert_eq!(full.headers()["x-ol-node-full"], "1");

    // The third is answered "full" there and served by another node.
    let redispatched = cluster
        .lb
        .stats()
        .await
        .iter()
        .find(|s| s.backend == "functions" && s.server == "BACKEND")
        .map_or(0, |s| s.redispatches);
    let (status, body) = json(cluster.run("slow", r#"{"s": 0}"#).await).await;
    assert_eq!(status, 200, "{body}");
    let holders = cluster.holders("slow");
    assert_eq!(
        holders.len(),
        2,
        "another node served the spilled call: {holders:?}"
    );
    let stats = cluster.lb.stats().await;
    let backend = stats
        .iter()
        .find(|s| s.backend == "functions" && s.server == "BACKEND")
        .unwrap();
    assert!(
        backend.redispatches > redispatched,
        "HAProxy redispatched: {backend:?}"
    );
    // Marked by HAProxy as having nowhere else to go, a call queues there.
    let last = cluster
        .http
        .post(&direct)
        .header("x-ol-no-spill", "1")
        .body(r#"{"s": 0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(last.status(), 200, "queued, not refused");
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(
        second.await.unwrap(),
        200,
        "the queued call ran where it waited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_fails_its_health_check_while_it_still_serves() {
    let (mut settings, scratch) = test_settings().await;
    // Long enough for the check below and one call on a busy machine.
    settings.cluster.drain = Duration::from_secs(5);
    let node = start(settings, scratch).await;
    node.deploy_ok("echo", &[("f.py", ECHO)]).await;
    assert_eq!(node.get("/healthz").await.status(), 200);
    let base = node.url("");
    let fn_base = node.fn_url("");
    let http = crate::helpers::client_with_key(Some(crate::helpers::ADMIN_TOKEN));
    // Warm: the call while draining is the node's ordinary work, not a
    // container start that could outlast the drain.
    let warm = http
        .post(format!("{fn_base}/run/echo"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200);
    let stopping = tokio::spawn(node.stop());
    let draining = eventually(Duration::from_secs(2), || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    assert!(draining, "/healthz fails first");
    let call = http
        .post(format!("{fn_base}/run/echo"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 200, "calls are still served while draining");
    stopping.await.unwrap();
}

#[tokio::test]
async fn one_node_clears_old_logs_while_the_others_skip() {
    let (settings, _scratch) = test_settings().await;
    let db = openlambda::store::connect(&settings.database_url)
        .await
        .unwrap();
    let mut holder = db.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(openlambda::cluster::lock::EXPIRE_LOGS)
        .execute(&mut *holder)
        .await
        .unwrap();
    let skipped = openlambda::cluster::lock::expire_logs_once(&db, 7)
        .await
        .unwrap();
    assert_eq!(skipped, None, "another node holds the lock");
    holder.commit().await.unwrap();
    let done = openlambda::cluster::lock::expire_logs_once(&db, 7)
        .await
        .unwrap();
    assert_eq!(done, Some(0), "the lock is free again");
}

/// One call of a load: when it was sent (since the start) and its status.
#[derive(Debug)]
struct Sent {
    at: Duration,
    took: Duration,
    status: u16,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_fails_no_call_after_the_health_check_window() {
    let database = ThrowawayDatabase::create(&admin_url(), "ol_test")
        .await
        .unwrap();
    let envs: Vec<ServeEnv> = (0..3)
        .map(|_| ServeEnv::new(database.url().to_string()))
        .collect();
    let mut serves = Vec::new();
    for env in &envs {
        serves.push(Some(env.serve().await));
    }
    let node_addrs: Vec<NodeAddrs> = envs
        .iter()
        .map(|e| {
            let addr: SocketAddr = format!("127.0.0.1:{}", e.port).parse().unwrap();
            let fn_addr: SocketAddr = format!("127.0.0.1:{}", e.fn_port).parse().unwrap();
            NodeAddrs {
                api: addr,
                functions: fn_addr,
            }
        })
        .collect();
    let lb = Arc::new(Haproxy::start(&node_addrs, None).await);
    let http = crate::helpers::client_with_key(Some(crate::helpers::ADMIN_TOKEN));
    let names: Vec<String> = (0..6).map(|i| format!("steady{i}")).collect();
    for name in &names {
        let zip = openlambda::testing::zip_of(&[("f.py", ECHO)]);
        let r = http
            .put(lb.url(&format!("/api/v1/functions/{name}")))
            .header("content-type", "application/zip")
            .body(zip)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "deploy {name}: {}", r.status());
        let r = http
            .post(lb.fn_url(&format!("/run/{name}")))
            .body("1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "warm {name}");
    }
    // The node that serves most of them dies.
    let servers = lb.function_servers().await;
    let victim = (0..3)
        .max_by_key(|i| servers[&format!("node{}", i + 1)].total)
        .unwrap();

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // Calls sent so far, by all workers.
    let begun = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (lb, names, http) = (lb.clone(), names.clone(), http.clone());
            let (stop, begun) = (stop.clone(), begun.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    begun.fetch_add(1, Ordering::Relaxed);
                    let at = started.elapsed();
                    let name = &names[i % names.len()];
                    i += 1;
                    let status = match http
                        .post(lb.fn_url(&format!("/run/{name}")))
                        .body("1")
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await
                    {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    };
                    sent.push(Sent {
                        at,
                        took: started.elapsed() - at,
                        status,
                    });
                }
                sent
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed_at = started.elapsed();
    serves[victim].take().unwrap().kill().await;
    let name = format!("node{}", victim + 1);
    assert!(
        lb.wait_for(&name, "DOWN", Duration::from_secs(5)).await,
        "HAProxy saw {name} go"
    );
    let window = started.elapsed();
    // The load goes on on the two nodes left, for 28 calls sent after the
    // window (the killed node's functions start containers there first,
    // which takes long on a busy machine).
    let at_window = begun.load(Ordering::Relaxed);
    eventually(Duration::from_secs(60), || async {
        begun.load(Ordering::Relaxed) >= at_window + 28
    })
    .await;
    stop.store(true, Ordering::Relaxed);

    let mut sent = Vec::new();
    for w in workers {
        sent.extend(w.await.unwrap());
    }
    let failed_late: Vec<_> = sent
        .iter()
        .filter(|s| s.at >= window && s.status != 200)
        .collect();
    let late = sent.iter().filter(|s| s.at >= window).count();
    let failed: Vec<_> = sent.iter().filter(|s| s.status != 200).collect();
    assert!(
        late > 20,
        "the load went on after the window ({window:?}): {late} calls, slowest took {:?}",
        sent.iter().map(|s| s.took).max()
    );
    assert!(
        failed_late.is_empty(),
        "failed after the health check window ({window:?}): {failed_late:?}"
    );
    // Only the calls in flight on the killed node may fail (one per worker at most).
    assert!(
        failed.len() <= 4,
        "killed at {killed_at:?}; failed: {failed:?}"
    );
    for serve in serves.into_iter().flatten() {
        serve.stop().await;
    }
}
