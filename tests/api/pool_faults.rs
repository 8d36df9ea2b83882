//! The pool and the manager under faults, on the real engine and Postgres,
//! each fault injected in the middle of a steady, bounded load: every
//! container and the network removed behind the manager's back; the manager
//! SIGKILLed and started again; a stop with calls in flight. After each,
//! the ledger is checked: one record per call made, no request id twice,
//! billing totals equal to the sum of the records, and no call failed but
//! those the fault interrupted (how many, and why, said at each assert).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::helpers::{eventually, json, spawn_app_with, ECHO};
use crate::process::{comes_up, ServeEnv};

/// Sleeps for `event` seconds when it is a number, then answers it.
const SLEEPER: &str = "import time\ndef f(event):\n    time.sleep(event)\n    return event\n";

/// What one steady caller saw.
#[derive(Default)]
struct Seen {
    /// Request ids of calls answered 200.
    ok: Vec<String>,
    /// (status, body) of calls answered otherwise.
    failed: Vec<(u16, String)>,
    /// Calls with no answer at all (the connection broke).
    broken: usize,
}

/// Calls `url` one after another until `stop` is set (at most `limit`
/// calls); after a broken connection, waits for `health` before going on.
async fn steady(url: String, health: String, stop: Arc<AtomicBool>, limit: usize) -> Seen {
    let http = reqwest::Client::new();
    let mut seen = Seen::default();
    for i in 0..limit {
        if stop.load(Ordering::Acquire) {
            break;
        }
        match http.post(&url).body(i.to_string()).send().await {
            Ok(r) if r.status() == 200 => seen
                .ok
                .push(r.headers()["x-request-id"].to_str().unwrap().to_string()),
            Ok(r) => seen
                .failed
                .push((r.status().as_u16(), r.text().await.unwrap_or_default())),
            Err(_) => {
                seen.broken += 1;
                assert!(comes_up(&http, &health).await, "the manager came back");
            }
        }
    }
    seen
}

/// The ledger after a fault: every answered request id has exactly one
/// record, no request id twice, at most `unknown` records the callers never
/// heard of (calls the fault cut off after their record was made), and the
/// billing report's totals equal the sum of the records.
async fn check_ledger(
    db: &PgPool,
    billing: serde_json::Value,
    answered: &[String],
    unknown: usize,
) {
    let rows: Vec<(String, bool, i64)> =
        sqlx::query_as("SELECT request_id::text, billed, billed_ms FROM invocations")
            .fetch_all(db)
            .await
            .unwrap();
    let ids: HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "no request id twice");
    for id in answered {
        assert!(ids.contains(id.as_str()), "answered call {id} has a record");
    }
    assert!(
        rows.len() >= answered.len() && rows.len() <= answered.len() + unknown,
        "{} records for {} answered calls (+{unknown} cut off)",
        rows.len(),
        answered.len()
    );
    let billed: Vec<_> = rows.iter().filter(|r| r.1).collect();
    let total = &billing["total"];
    assert_eq!(total["invocations"], billed.len() as i64, "{billing}");
    assert_eq!(
        total["billed_ms"],
        billed.iter().map(|r| r.2).sum::<i64>(),
        "{billing}"
    );
}

fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A function network of one test's own, removed when it drops (also when
/// the test fails): removing the shared one would break the tests beside it.
struct OwnNetwork(String);

impl Drop for OwnNetwork {
    fn drop(&mut self) {
        docker(&["network", "rm", &self.0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_and_network_removed_behind_the_managers_back() {
    let network = OwnNetwork(format!(
        "{}-{}",
        crate::helpers::test_network(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let app = spawn_app_with(|s| s.network = network.0.clone()).await;
    let names = ["fa", "fb"];
    for name in names {
        app.deploy_ok(name, &[("f.py", ECHO)]).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = names
        .iter()
        .map(|name| {
            tokio::spawn(steady(
                app.url(&format!("/run/{name}")),
                app.url("/healthz"),
                stop.clone(),
                200,
            ))
        })
        .collect();
    // Mid-load: both functions have warm containers serving.
    assert!(
        eventually(Duration::from_secs(30), || async {
            names
                .iter()
                .all(|name| app.pool.containers(name).len() == 1)
        })
        .await
    );
    // As after an engine reset: every container and the network gone.
    let label = format!("label=openlambda.instance={}", app.settings.instance);
    let ids: Vec<String> = docker(&["ps", "-aq", "--filter", &label])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), names.len());
    let mut rm = vec!["rm", "-f"];
    rm.extend(ids.iter().map(String::as_str));
    docker(&rm);
    docker(&["network", "rm", &network.0]);
    // The next call of each function answers 200.
    for name in names {
        let response = app.run(name, "\"after\"").await;
        assert_eq!(
            response.status(),
            200,
            "{name}: {}",
            response.text().await.unwrap()
        );
    }
    stop.store(true, Ordering::Release);
    let mut answered = Vec::new();
    let mut failed = Vec::new();
    for caller in callers {
        let seen = caller.await.unwrap();
        assert_eq!(seen.broken, 0, "the manager never went away");
        answered.extend(seen.ok);
        failed.extend(seen.failed);
    }
    // Each caller has at most one call in flight; a container killed under
    // a running handler is a crash (billed, the handler ran): at most one
    // per function. A call whose container was gone before it reached it
    // ran again on a fresh one and is in `answered`.
    assert!(failed.len() <= names.len(), "{failed:?}");
    for (status, body) in &failed {
        assert_eq!(*status, 502, "only a crash under the handler: {body}");
    }
    app.flush().await;
    let crashed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM invocations WHERE status <> 'success'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(
        crashed,
        failed.len() as i64,
        "only the interrupted calls failed"
    );
    // The calls after the fault: one record each (+ the two `after` calls).
    let billing = json(app.get("/api/v1/billing").await).await.1;
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM invocations")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(
        records as usize,
        answered.len() + failed.len() + names.len(),
        "one record per call made"
    );
    check_ledger(&app.db, billing, &answered, failed.len() + names.len()).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_sigkilled_under_load_loses_and_doubles_no_record() {
    let database =
        openlambda::testing::ThrowawayDatabase::create(&crate::helpers::admin_url(), "ol_test")
            .await
            .unwrap();
    let env = ServeEnv::new(database.url().to_string());
    let base = env.base();
    let fn_base = env.fn_base();
    let http = env.client();
    let manager = env.serve().await;
    let deployed = http
        .put(format!("{base}/api/v1/functions/steady"))
        .body(crate::helpers::zip_of(&[("f.py", ECHO)]))
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 201);
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(steady(
                format!("{fn_base}/run/steady"),
                format!("{base}/healthz"),
                stop.clone(),
                400,
            ))
        })
        .collect();
    let db = PgPool::connect(database.url()).await.unwrap();
    let records = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM invocations")
            .fetch_one(&db)
            .await
            .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(30), || async { records().await >= 20 }).await,
        "steady load under way"
    );
    manager.kill().await;
    let manager = env.serve().await;
    // Some calls after the restart, then the load stops.
    let before = records().await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            records().await >= before + 20
        })
        .await
    );
    stop.store(true, Ordering::Release);
    let mut answered = Vec::new();
    let mut broken = 0;
    for caller in callers {
        let seen = caller.await.unwrap();
        assert!(seen.failed.is_empty(), "{:?}", seen.failed);
        answered.extend(seen.ok);
        broken += seen.broken;
    }
    // Each caller had one call in flight at the kill, or none: at most 2
    // calls got no answer; each may have a record or not, depending on how
    // far it got before the kill.
    assert!(broken <= 2, "{broken} calls broken");
    // The journal replayed and the writer caught up.
    let all_in = eventually(Duration::from_secs(30), || async {
        records().await >= answered.len() as i64
    })
    .await;
    assert!(all_in, "every answered call's record arrives");
    let billing = json(
        http.get(format!("{base}/api/v1/billing"))
            .send()
            .await
            .unwrap(),
    )
    .await
    .1;
    check_ledger(&db, billing, &answered, broken).await;
    manager.stop().await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_lets_calls_finish_until_its_deadline_then_ends_them() {
    let app = spawn_app_with(|s| s.shutdown_timeout = Duration::from_secs(8)).await;
    app.deploy_ok("slow", &[("f.py", SLEEPER)]).await;
    // Warm both containers first, so the stop finds the calls running.
    let warm = crate::helpers::concurrent_runs(&app, "slow", "0", 2).await;
    assert!(warm.iter().all(|(s, _)| *s == 200), "{warm:?}");
    let url = app.url("/run/slow");
    let call = |seconds: &'static str| {
        let request = app.http.post(url.clone()).body(seconds);
        tokio::spawn(async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    // The long call first; the quick one (well inside the deadline) once
    // the long one runs, so that both are running when the stop begins.
    let long = call("30");
    assert!(crate::helpers::busy(&app, 1).await, "the long call running");
    let quick = call("3");
    assert!(crate::helpers::busy(&app, 2).await, "both calls running");
    // Kept past the manager's stop: the database goes with the last holder.
    let scratch = app.data_dir.clone();
    let instance = app.settings.instance.clone();
    let stopping = tokio::spawn(app.stop());
    let (status, body) = quick.await.unwrap();
    assert_eq!(
        status, 200,
        "a call that ends before the deadline finishes: {body}"
    );
    let (status, body) = long.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("the manager stopped"), "{body}");
    stopping.await.unwrap();
    let db = PgPool::connect(scratch.database.url()).await.unwrap();
    let rows: Vec<(String, bool)> =
        sqlx::query_as("SELECT status, billed FROM invocations ORDER BY started_at")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        rows.len(),
        4,
        "two warm-ups, the quick call, the stopped one: {rows:?}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.0 == "platform_error" && !r.1)
            .count(),
        1,
        "the stopped call is the platform's, unbilled: {rows:?}"
    );
    db.close().await;
    let label = format!("label=openlambda.instance={instance}");
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &label]).trim(),
        "",
        "containers removed"
    );
}

/// Echoes the event, and has the runtime server close the call's
/// connection after the reply, as a server that stopped would: the manager
/// keeps no connection to it. (The handler runs in the server's process;
/// the server's request handler is up its stack.)
const ECHO_THEN_HANG_UP: &str = r#"
import sys
def f(event):
    frame = sys._getframe()
    while not hasattr(frame.f_locals.get("self"), "close_connection"):
        frame = frame.f_back
    frame.f_locals["self"].close_connection = True
    return event
"#;

/// Sockets open in `container`'s processes: the runtime server's listening
/// one and its connections.
fn sockets_in(container: &str) -> usize {
    let count = "ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c socket:";
    let out = docker(&["exec", container, "sh", "-c", count]);
    out.trim().parse().unwrap_or_else(|_| panic!("{out:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_cannot_reach_its_container_runs_on_a_fresh_one_unbilled() {
    // Running, not paused, while the test looks inside it.
    let app = spawn_app_with(|s| s.pool.pause_grace = Duration::from_secs(600)).await;
    app.deploy_ok("cut", &[("f.py", ECHO_THEN_HANG_UP)]).await;
    assert_eq!(app.run("cut", "\"first\"").await.status(), 200);
    let first = app.pool.containers("cut");
    assert_eq!(first.len(), 1);
    let hung_up = eventually(Duration::from_secs(10), || async {
        sockets_in(&first[0].container_id) == 1
    });
    assert!(hung_up.await, "the server still holds a connection");
    // Its runtime's socket goes (the function itself cannot touch it: the
    // socket's folder is read-only to it), so nothing reaches the server.
    let socket = app
        .data_dir
        .path()
        .join("sandboxes")
        .join(&first[0].sandbox)
        .join("sock/ol.sock");
    std::fs::remove_file(&socket).unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
    // The idle container is alive (no event), so the pool hands it out;
    // no connection is kept to it, and a new one fails before anything is
    // sent.
    let response = app.run("cut", "\"again\"").await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let now = app.pool.containers("cut");
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(
        now[0].sandbox, first[0].sandbox,
        "served by a fresh container"
    );
    app.flush().await;
    let rows: Vec<(String, bool, bool)> =
        sqlx::query_as("SELECT status, billed, cold FROM invocations ORDER BY started_at")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [
            ("success".to_string(), true, true),
            ("success".to_string(), true, true)
        ],
        "one record per call, the retried one as the fresh container's cold start"
    );
    app.stop().await;
}
