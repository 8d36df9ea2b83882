//! The container each function runs in: reuse, hardening, pause, keep-alive,
//! clean-up on stop and after a crash. Checked through the Docker API.

use std::collections::HashSet;
use std::time::Duration;

use bollard::query_parameters::InspectContainerOptions;

use openlambda::testing::ThrowawayDatabase;

use crate::helpers::{
    admin_url, eventually, json, labelled_containers, spawn_app, spawn_app_with, zip_of, ECHO,
};
use crate::process::{entries, ServeEnv};

async fn paused(app: &crate::helpers::TestApp, id: &str) -> bool {
    let c = app
        .docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .unwrap();
    c.state.unwrap().paused == Some(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_container_is_created_on_first_call_and_reused() {
    let app = spawn_app().await;
    app.deploy_ok(
        "reuse",
        &[("f.py", "import os\ndef f(e):\n    return os.getpid()\n")],
    )
    .await;
    assert!(
        app.containers("reuse").await.is_empty(),
        "deploying starts nothing"
    );
    let first = app.run("reuse", "").await.text().await.unwrap();
    for _ in 0..5 {
        assert_eq!(
            app.run("reuse", "").await.text().await.unwrap(),
            first,
            "same process"
        );
    }
    let containers = app.containers("reuse").await;
    assert_eq!(containers.len(), 1);
    let labels = containers[0].labels.clone().unwrap();
    assert_eq!(labels["openlambda.function"], "reuse");
    assert!(labels.contains_key("openlambda.sandbox"));
    app.flush().await;
    let cold: Vec<bool> = sqlx::query_scalar("SELECT cold FROM invocations ORDER BY started_at")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(cold, [true, false, false, false, false, false]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_are_hardened() {
    let app = spawn_app().await;
    let probe = r#"
import os
def f(event):
    out = {"uid": os.getuid(), "gid": os.getgid()}
    try:
        open("/etc/owned", "w")
        out["root_fs"] = "writable"
    except OSError as e:
        out["root_fs"] = type(e).__name__
    with open("/tmp/scratch", "w") as fh:
        fh.write("ok")
    out["tmp"] = open("/tmp/scratch").read()
    try:
        open("/host/code/f.py", "a")
        out["code"] = "writable"
    except OSError as e:
        out["code"] = type(e).__name__
    with open("/proc/self/status") as fh:
        caps = [l.split()[1] for l in fh if l.startswith("CapEff") or l.startswith("NoNewPrivs")]
    out["cap_eff"], out["no_new_privs"] = caps[0], caps[1]
    return out
"#;
    app.deploy_ok("probe", &[("f.py", probe)]).await;
    let (status, body) = crate::helpers::json(app.run("probe", "").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["uid"], 65534, "runs as an unprivileged user");
    assert_eq!(
        body["root_fs"], "OSError",
        "root file system is read-only: {body}"
    );
    assert_eq!(body["tmp"], "ok", "/tmp is writable");
    assert_eq!(
        body["code"], "PermissionError",
        "code cannot be changed: {body}"
    );
    assert_eq!(body["cap_eff"], "0000000000000000", "no capabilities");
    assert_eq!(body["no_new_privs"], "1");

    let id = app.containers("probe").await[0].id.clone().unwrap();
    let c = app
        .docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
        .unwrap();
    let host = c.host_config.unwrap();
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges".to_string()])
    );
    assert!(host.pids_limit.is_some_and(|p| p > 0 && p <= 1024));
    assert!(host.tmpfs.unwrap().contains_key("/tmp"));
    assert_eq!(host.memory, Some(128 * 1024 * 1024));
    assert_eq!(c.config.unwrap().user.as_deref(), Some("65534:65534"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_container_is_paused_then_unpaused_by_a_call() {
    let app = spawn_app().await; // pause grace: 300 ms
    app.deploy_ok("napper", &[("f.py", ECHO)]).await;
    assert_eq!(app.run("napper", "1").await.status(), 200);
    let id = app.containers("napper").await[0].id.clone().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || paused(&app, &id)).await,
        "paused after the grace period"
    );
    assert_eq!(app.run("napper", "2").await.text().await.unwrap(), "2");
    let containers = app.containers("napper").await;
    assert_eq!(containers.len(), 1);
    assert_eq!(
        containers[0].id.as_deref(),
        Some(id.as_str()),
        "the same container served"
    );
    assert!(
        eventually(Duration::from_secs(10), || paused(&app, &id)).await,
        "paused again once idle"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_is_removed_after_keep_alive() {
    let app = spawn_app_with(|s| s.pool.keep_alive = Duration::from_secs(2)).await;
    app.deploy_ok("brief", &[("f.py", ECHO)]).await;
    assert_eq!(app.run("brief", "1").await.status(), 200);
    assert_eq!(app.containers("brief").await.len(), 1);
    assert!(
        eventually(Duration::from_secs(15), || async {
            app.containers("brief").await.is_empty()
        })
        .await,
        "removed after its keep-alive"
    );
    assert_eq!(
        app.run("brief", "3").await.text().await.unwrap(),
        "3",
        "a new one starts"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_removes_containers_and_sandboxes() {
    let app = spawn_app_with(|s| s.pool.prewarm = 1).await;
    app.deploy_ok("a", &[("f.py", ECHO)]).await;
    app.deploy_ok("b", &[("f.py", ECHO)]).await;
    assert_eq!(app.run("a", "1").await.status(), 200);
    assert_eq!(app.run("b", "1").await.status(), 200);
    assert!(
        app.pool
            .wait_prewarmed("python", 1, Duration::from_secs(60))
            .await
    );
    assert!(
        app.pool
            .wait_prewarmed("node", 1, Duration::from_secs(60))
            .await
    );
    assert!(
        app.all_containers().await.len() >= 4,
        "two functions' and prewarmed ones"
    );
    let docker = app.docker.clone();
    let instance = app.settings.instance.clone();
    let data_dir = app.data_dir.clone();
    let sandboxes = data_dir.path().join("sandboxes");
    app.stop().await;
    let left = labelled_containers(&docker, &instance, None).await;
    assert!(left.is_empty(), "containers left: {left:?}");
    assert_eq!(
        std::fs::read_dir(&sandboxes).unwrap().count(),
        0,
        "sandbox directories left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_after_a_crash_removes_what_was_left() {
    let database = ThrowawayDatabase::create(&admin_url(), "ol_test")
        .await
        .unwrap();
    let env = ServeEnv::new(database.url().to_string());
    let docker = openlambda::app::connect_docker().await.unwrap();
    let http = env.client();
    let run = |event: &'static str| {
        http.post(format!("{}/run/orphan", env.fn_base()))
            .body(event)
            .send()
    };

    let manager = env.serve().await;
    let response = http
        .put(format!("{}/api/v1/functions/orphan", env.base()))
        .body(zip_of(&[("f.py", ECHO)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(run("1").await.unwrap().status(), 200);
    assert_eq!(
        labelled_containers(&docker, &env.instance, Some("orphan"))
            .await
            .len(),
        1
    );
    assert_eq!(entries(&env.sandboxes()), 1);
    manager.kill().await; // SIGKILL: no clean-up of any kind
    assert_eq!(
        labelled_containers(&docker, &env.instance, Some("orphan"))
            .await
            .len(),
        1,
        "a killed manager leaves its container"
    );

    let manager = env.serve().await;
    assert!(
        labelled_containers(&docker, &env.instance, Some("orphan"))
            .await
            .is_empty(),
        "leftover container removed at start"
    );
    assert_eq!(entries(&env.sandboxes()), 0, "leftover sandbox removed");
    // The function itself survived: Postgres is the source of truth.
    assert_eq!(run("5").await.unwrap().text().await.unwrap(), "5");
    manager.stop().await;
    database.drop_now().await.unwrap();
}

/// Sleeps `event["sleep"]` seconds, prints `seen {n}` and answers the
/// runtime server's open connections (the inodes of its sockets but the
/// listening one) and the thread serving the call.
const CONNECTIONS_PY: &str = r#"
import os, threading, time
def link(fd):
    try:
        return os.readlink("/proc/self/fd/" + fd)
    except OSError:  # the listing's own descriptor, closed by now
        return ""
def f(event):
    time.sleep(event["sleep"])
    print("seen", event["n"])
    with open("/proc/net/unix") as fh:
        listening = {r[6] for r in (line.split() for line in fh) if r[3] == "00010000"}
    inodes = {l[8:-1] for l in map(link, os.listdir("/proc/self/fd")) if l.startswith("socket:[")}
    return {"conns": sorted(inodes - listening), "thread": threading.current_thread().name}
"#;

const CONNECTIONS_JS: &str = r#"
const fs = require('fs');
exports.handler = async (event) => {
  await new Promise((done) => setTimeout(done, event.sleep * 1000));
  console.log('seen', event.n);
  const listening = fs.readFileSync('/proc/net/unix', 'utf8').split('\n')
    .map((line) => line.trim().split(/\s+/)).filter((r) => r[3] === '00010000').map((r) => r[6]);
  const conns = fs.readdirSync('/proc/self/fd')
    .map((fd) => { try { return fs.readlinkSync('/proc/self/fd/' + fd); } catch (_) { return ''; } })
    .filter((l) => l.startsWith('socket:[')).map((l) => l.slice(8, -1))
    .filter((inode) => !listening.includes(inode));
  return { conns, thread: 'main' };
};
"#;

/// What the runtime server saw across calls of `name`, which serves 4
/// calls at once: 3 rounds of 4 calls at once, then 4 calls one after
/// another. Returns every connection inode any call saw, and for each
/// call (in the order sent) the thread that served it.
async fn connections_seen(app: &crate::helpers::TestApp, name: &str) -> (HashSet<String>, usize) {
    let mut inodes = HashSet::new();
    let mut n = 0;
    let mut call = |sleep: f64| {
        n += 1;
        let event = serde_json::json!({"sleep": sleep, "n": n}).to_string();
        async move {
            let (status, body) = json(app.run(name, &event).await).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    // The first call makes the container (and its first connection).
    let mut seen = vec![call(0.0).await];
    for _ in 0..3 {
        let round: Vec<_> = (0..4).map(|_| call(0.5)).collect();
        let answers = futures_util::future::join_all(round).await;
        let threads: HashSet<_> = answers.iter().map(|a| a["thread"].clone()).collect();
        if name.ends_with("py") {
            assert_eq!(threads.len(), 4, "a thread per call at once: {answers:?}");
        }
        seen.extend(answers);
    }
    for _ in 0..4 {
        seen.push(call(0.0).await);
    }
    for answer in &seen {
        for inode in answer["conns"].as_array().unwrap() {
            inodes.insert(inode.as_str().unwrap().to_string());
        }
    }
    let threads: HashSet<_> = seen.iter().map(|a| a["thread"].clone()).collect();
    (inodes, threads.len())
}

/// The manager keeps its connections to a runtime server and reuses them:
/// 17 calls, 4 at a time at most, reach the server on 4 connections (one
/// per call would be 17), a Python thread per connection; each call's
/// output is still its own, though one thread serves many calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_calls_reuse_their_connections_to_the_runtime() {
    let app = spawn_app().await;
    let manifest = "concurrency: 4\n";
    app.deploy_ok("keptpy", &[("f.py", CONNECTIONS_PY), ("ol.yaml", manifest)])
        .await;
    app.deploy_ok(
        "keptjs",
        &[("index.js", CONNECTIONS_JS), ("ol.yaml", manifest)],
    )
    .await;
    for name in ["keptpy", "keptjs"] {
        let (inodes, threads) = connections_seen(&app, name).await;
        assert_eq!(inodes.len(), 4, "{name}: connections {inodes:?}");
        if name == "keptpy" {
            assert_eq!(threads, 4, "a thread per connection");
        }
        assert_eq!(app.containers(name).await.len(), 1, "{name}: one container");
        app.flush().await;
        let (_, logs) = json(app.get(&format!("/api/v1/functions/{name}/logs")).await).await;
        let mut outputs: Vec<String> = logs["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["logs"].as_str().unwrap_or_default().trim().to_string())
            .collect();
        outputs.sort();
        let mut expected: Vec<String> = (1..=17).map(|n| format!("seen {n}")).collect();
        expected.sort();
        assert_eq!(outputs, expected, "{name}: each call's output is its own");
    }
    app.stop().await;
}
