//! Async calls, retries, re-drives, destinations and schedules on the real
//! engine and Postgres (issue 16).

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{eventually, json, spawn_app_with, TestApp};

/// Returns when it started and ended (host clock: every container shares
/// it), so a test can see how many ran at once.
const TIMED: &str = r#"
import time
def f(event):
    start = time.time()
    time.sleep(0.01)
    return {"start": start, "end": time.time(), "event": event}
"#;

/// Fails while its container has served fewer than `event["fail"]` calls.
const FLAKY: &str = r#"
calls = 0
def f(event):
    global calls
    calls += 1
    if calls <= event["fail"]:
        raise RuntimeError("boom %d" % calls)
    return {"calls": calls}
"#;

const ECHO: &str = "def f(event):\n    return event\n";

async fn app() -> TestApp {
    spawn_app_with(|s| s.events.backoff = Duration::from_millis(300)).await
}

/// `POST /api/v1/functions/{name}/invocations`; the request id it answers.
async fn enqueue(app: &TestApp, name: &str, event: &str) -> String {
    let r = app
        .http
        .post(app.url(&format!("/api/v1/functions/{name}/invocations")))
        .body(event.to_string())
        .send()
        .await
        .unwrap();
    let header = r.headers().get("x-request-id").cloned();
    let (status, body) = json(r).await;
    assert_eq!(status, 202, "{body}");
    let id = body["request_id"].as_str().unwrap().to_string();
    assert_eq!(header.unwrap().to_str().unwrap(), id);
    id
}

async fn invocation(app: &TestApp, id: &str) -> Value {
    let (status, body) = json(app.get(&format!("/api/v1/invocations/{id}")).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the event is in `state` (60 s at most) and returns it.
async fn settled(app: &TestApp, id: &str, state: &str) -> Value {
    let done = eventually(Duration::from_secs(60), || async {
        invocation(app, id).await["state"] == state
    })
    .await;
    let now = invocation(app, id).await;
    assert!(done, "event {id} never became {state}: {now}");
    app.flush().await;
    invocation(app, id).await
}

/// The most intervals that overlap at one instant.
fn most_at_once(mut spans: Vec<(f64, f64)>) -> usize {
    let mut edges: Vec<(f64, i32)> = Vec::new();
    for (start, end) in spans.drain(..) {
        edges.push((start, 1));
        edges.push((end, -1));
    }
    // An end before a start at the same instant: touching is not overlapping.
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[test]
fn overlap_counter_counts() {
    assert_eq!(most_at_once(vec![(0.0, 1.0), (1.0, 2.0)]), 1);
    assert_eq!(most_at_once(vec![(0.0, 2.0), (1.0, 3.0), (1.5, 1.6)]), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_events_keep_to_their_concurrency_and_all_succeed() {
    const EVENTS: usize = 1000;
    let app = app().await;
    app.deploy_ok(
        "timed",
        &[("f.py", TIMED), ("ol.yaml", "async: {concurrency: 4}\n")],
    )
    .await;

    // The function URL with X-Ol-Invocation-Type: Event queues too.
    let r = app
        .http
        .post(app.url("/fn/timed"))
        .header("X-Ol-Invocation-Type", "Event")
        .body(r#"{"via": "url"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let via_url = r.headers()["x-request-id"].to_str().unwrap().to_string();

    let mut queued = 1;
    for chunk in 0..EVENTS / 50 {
        let n = 50.min(EVENTS - queued);
        let events: Vec<String> = (0..n).map(|i| format!("{}", chunk * 50 + i)).collect();
        let batch = events.iter().map(|e| enqueue(&app, "timed", e));
        queued += futures_util::future::join_all(batch).await.len();
    }
    assert_eq!(queued, EVENTS);
    let started = std::time::Instant::now();
    let all_done = eventually(Duration::from_secs(300), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE state IN ('succeeded', 'failed')",
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        n == EVENTS as i64
    })
    .await;
    assert!(all_done, "every event ran within 5 minutes");
    eprintln!("{EVENTS} async events ran in {:?}", started.elapsed());
    let rows: Vec<(String, i32, Option<Value>, Option<Value>)> =
        sqlx::query_as("SELECT state, attempts, result, error FROM events")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let odd: Vec<_> = rows
        .iter()
        .filter(|(state, attempts, _, _)| state != "succeeded" || *attempts != 1)
        .collect();
    assert!(odd.is_empty(), "every event succeeded at once: {odd:?}");
    let rows: Vec<Value> = rows.into_iter().filter_map(|r| r.2).collect();
    let spans: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r["start"].as_f64().unwrap(), r["end"].as_f64().unwrap()))
        .collect();
    let most = most_at_once(spans);
    assert!(most <= 4, "{most} ran at once; async.concurrency is 4");
    assert!(
        most >= 2,
        "the queue ran events side by side (most at once: {most})"
    );

    // One record per event, each saying it was async, attempt 1.
    let records = app
        .count("SELECT count(*) FROM invocations WHERE trigger = 'async' AND attempt = 1 AND status = 'success'")
        .await;
    assert_eq!(records, EVENTS as i64);
    let shown = invocation(&app, &via_url).await;
    assert_eq!(shown["function"], "timed");
    assert_eq!(shown["trigger"], "async");
    assert_eq!(shown["attempts"], 1);
    assert_eq!(shown["result"]["event"]["via"], "url");
    assert_eq!(shown["records"].as_array().unwrap().len(), 1);
    assert_eq!(shown["records"][0]["trigger"], "async");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_is_retried_with_backoff_each_attempt_a_record() {
    let app = app().await;
    app.deploy_ok(
        "flaky",
        &[("f.py", FLAKY), ("ol.yaml", "async: {concurrency: 1}\n")],
    )
    .await;
    let id = enqueue(&app, "flaky", r#"{"fail": 2}"#).await;
    let done = settled(&app, &id, "succeeded").await;
    assert_eq!(done["attempts"], 3, "{done}");
    assert_eq!(done["result"]["calls"], 3);
    let records = done["records"].as_array().unwrap();
    let seen: Vec<(i64, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["attempt"].as_i64().unwrap(),
                r["status"].as_str().unwrap(),
                r["trigger"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, "error", "async"),
            (2, "error", "async"),
            (3, "success", "async")
        ]
    );
    // Backoff: 300 ms, then 600 ms, between the attempts' starts.
    let start = |i: usize| {
        chrono::DateTime::parse_from_rfc3339(records[i]["started_at"].as_str().unwrap()).unwrap()
    };
    assert!(start(1) - start(0) >= chrono::Duration::milliseconds(300));
    assert!(start(2) - start(1) >= chrono::Duration::milliseconds(600));

    // Billing groups by trigger: three async attempts, one HTTP call.
    assert_eq!(app.run("flaky", r#"{"fail": 0}"#).await.status(), 200);
    app.flush().await;
    let (status, report) = json(app.get("/api/v1/billing?group=trigger").await).await;
    assert_eq!(status, 200, "{report}");
    let lines: Vec<(&str, &str, i64)> = report["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap(),
                l["trigger"].as_str().unwrap(),
                l["invocations"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(lines, [("flaky", "async", 3), ("flaky", "http", 1)]);
    let csv = app
        .get("/api/v1/billing?group=trigger&format=csv")
        .await
        .text()
        .await
        .unwrap();
    assert!(csv.starts_with("function,trigger,invocations,"), "{csv}");
    assert!(
        csv.contains("\nflaky,async,3,") && csv.contains("\nflaky,http,1,"),
        "{csv}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_fail_reach_on_failure_and_can_be_redriven() {
    let app = app().await;
    app.deploy_ok("sink", &[("f.py", ECHO)]).await;
    app.deploy_ok(
        "flaky",
        &[
            ("f.py", FLAKY),
            (
                "ol.yaml",
                "async: {concurrency: 1, retries: 1}\non_failure: sink\n",
            ),
        ],
    )
    .await;
    let id = enqueue(&app, "flaky", r#"{"fail": 2}"#).await;
    let failed = settled(&app, &id, "failed").await;
    assert_eq!(failed["attempts"], 2, "{failed}");
    assert_eq!(failed["error"]["code"], "handler_error");
    assert_eq!(failed["error"]["type"], "RuntimeError");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("boom 2"),
        "{failed}"
    );
    assert!(failed.get("result").is_none());

    // on_failure: the sink got the error, with the request id carried along.
    let sink_id: (uuid::Uuid,) = {
        let found = eventually(Duration::from_secs(30), || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events WHERE function = 'sink' AND state = 'succeeded'",
            )
            .fetch_one(&app.db)
            .await
            .unwrap();
            n == 1
        })
        .await;
        assert!(found, "the on_failure destination ran");
        sqlx::query_as("SELECT request_id FROM events WHERE function = 'sink'")
            .fetch_one(&app.db)
            .await
            .unwrap()
    };
    let delivered = settled(&app, &sink_id.0.to_string(), "succeeded").await;
    assert_eq!(delivered["trigger"], "destination");
    assert_eq!(delivered["origin"], id.as_str());
    let event = &delivered["result"];
    assert_eq!(event["request_id"], id.as_str());
    assert_eq!(event["function"], "flaky");
    assert_eq!(event["condition"], "failure");
    assert_eq!(event["request"]["fail"], 2);
    assert!(event["error"]["message"]
        .as_str()
        .unwrap()
        .contains("boom 2"));
    assert_eq!(delivered["records"][0]["trigger"], "destination");

    // The owner fixes the handler, then re-drives the event with
    // `ol async retry ID`: it runs again on the new version (attempt 3) and
    // succeeds. (Not left to FLAKY's counter, which lives in one container
    // and starts again in any other.)
    app.deploy_ok(
        "flaky",
        &[
            ("f.py", "def f(event):\n    return {\"fixed\": True}\n"),
            (
                "ol.yaml",
                "async: {concurrency: 1, retries: 1}\non_failure: sink\n",
            ),
        ],
    )
    .await;
    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_ol"))
        .args(["async", "retry", &id])
        .env("OL_URL", app.url(""))
        .env("OL_API_KEY", crate::helpers::ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let printed: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(printed["state"], "queued");
    let done = settled(&app, &id, "succeeded").await;
    assert_eq!(done["attempts"], 3);
    assert_eq!(done["result"]["fixed"], true, "{done}");
    assert_eq!(done["records"].as_array().unwrap().len(), 3);

    // Only a failed event is re-driven; unknown and malformed ids say so.
    let again = app
        .http
        .post(app.url(&format!("/api/v1/invocations/{id}/retry")))
        .send()
        .await
        .unwrap();
    let (status, body) = json(again).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "not_failed");
    let unknown = uuid::Uuid::new_v4();
    let (status, _) = json(app.get(&format!("/api/v1/invocations/{unknown}")).await).await;
    assert_eq!(status, 404);
    let (status, body) = json(app.get("/api/v1/invocations/nope").await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_request_id");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_async_calls_are_refused_and_nothing_is_queued() {
    let app = app().await;
    app.deploy_ok("echo", &[("f.py", ECHO)]).await;
    let post = |name: &'static str, body: Vec<u8>| {
        app.http
            .post(app.url(&format!("/api/v1/functions/{name}/invocations")))
            .body(body)
            .send()
    };
    let (status, body) = json(post("echo", b"{not json".to_vec()).await.unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_event"))
    );
    let big = format!("\"{}\"", "x".repeat(300 * 1024));
    let (status, body) = json(post("echo", big.into_bytes()).await.unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("too_large"))
    );
    let (status, _) = json(post("missing", b"1".to_vec()).await.unwrap()).await;
    assert_eq!(status, 404);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(n, 0);
    // A bad setting refuses the deploy and says which key.
    let r = app
        .deploy(
            "bad",
            crate::helpers::zip_of(&[("f.py", ECHO), ("ol.yaml", "async: {concurrency: 0}\n")]),
        )
        .await;
    let (status, body) = json(r).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("async.concurrency"));
    app.stop().await;
}

/// Sleeps `event["sleep"]` seconds.
const SLEEPER: &str = r#"
import time
def f(event):
    time.sleep(event["sleep"])
    return event
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_manager_loses_no_event_and_reruns_no_succeeded_one() {
    const EVENTS: i64 = 12;
    let database =
        openlambda::testing::ThrowawayDatabase::create(&crate::helpers::admin_url(), "ol_test")
            .await
            .unwrap();
    let env = crate::process::ServeEnv::new(database.url().to_string());
    let vars = [
        ("OL_ASYNC_LEASE_MS", "2000"),
        ("OL_ASYNC_BACKOFF_MS", "200"),
    ];
    let serve = env.serve_with(&vars).await;
    let http = env.client();
    let deployed = http
        .put(format!("{}/api/v1/functions/sleeper", env.base()))
        .header("content-type", "application/zip")
        .body(crate::helpers::zip_of(&[
            ("f.py", SLEEPER),
            ("ol.yaml", "async: {concurrency: 2, retries: 0}\n"),
        ]))
        .send()
        .await
        .unwrap();
    assert!(deployed.status().is_success());
    for i in 0..EVENTS {
        let r = http
            .post(format!(
                "{}/api/v1/functions/sleeper/invocations",
                env.base()
            ))
            .body(format!(r#"{{"sleep": 0.7, "n": {i}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let db = sqlx::PgPool::connect(database.url()).await.unwrap();
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    // Kill it with some events done, some running, the rest queued.
    let mid_way = eventually(Duration::from_secs(60), || async {
        count("SELECT count(*) FROM events WHERE state = 'succeeded'").await >= 2
            && count("SELECT count(*) FROM events WHERE state = 'running'").await >= 1
    })
    .await;
    assert!(mid_way, "events were running when the manager was killed");
    serve.kill().await;
    let succeeded_before: Vec<(uuid::Uuid, i32)> =
        sqlx::query_as("SELECT request_id, attempts FROM events WHERE state = 'succeeded'")
            .fetch_all(&db)
            .await
            .unwrap();
    assert!(count("SELECT count(*) FROM events WHERE state = 'queued'").await >= 1);

    let serve = env.serve_with(&vars).await;
    let all_done = eventually(Duration::from_secs(120), || async {
        count("SELECT count(*) FROM events WHERE state = 'succeeded'").await == EVENTS
    })
    .await;
    assert!(all_done, "every event succeeded after the restart");
    // The attempts the kill interrupted ran again; none that had succeeded.
    let interrupted = count("SELECT count(*) FROM events WHERE attempts > 1").await;
    assert!(interrupted >= 1, "the running events were re-run");
    for (id, attempts) in &succeeded_before {
        let now: i32 = sqlx::query_scalar("SELECT attempts FROM events WHERE request_id = $1")
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(now, *attempts, "succeeded event {id} ran again");
    }
    serve.stop().await;
    // Every record of a succeeded attempt is kept (the journal replays what
    // the killed manager had not written), and no attempt follows the one
    // whose success was committed.
    let after_success = count(
        "SELECT count(*) FROM invocations i JOIN events e USING (request_id) \
         WHERE i.attempt > e.attempts",
    )
    .await;
    assert_eq!(after_success, 0);
    let successes =
        count("SELECT count(DISTINCT request_id) FROM invocations WHERE status = 'success'").await;
    assert_eq!(successes, EVENTS);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_tick_with_two_managers_on_one_database() {
    let first = spawn_app_with(|s| s.events.cron_poll = Duration::from_millis(200)).await;
    let shared = first.settings.database_url.clone();
    let second = spawn_app_with(|s| {
        s.database_url = shared;
        s.events.cron_poll = Duration::from_millis(200);
    })
    .await;
    // A seconds field, so a test sees several ticks in seconds.
    first
        .deploy_ok(
            "ticker",
            &[
                ("f.py", ECHO),
                ("ol.yaml", "triggers:\n  cron: [\"*/2 * * * * *\"]\n"),
            ],
        )
        .await;
    let ticks = |app: &TestApp| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
                "SELECT tick FROM cron_ticks t JOIN events e USING (request_id) \
                 WHERE e.state = 'succeeded' ORDER BY tick",
            )
            .fetch_all(&db)
            .await
            .unwrap()
        }
    };
    let enough = eventually(Duration::from_secs(60), || async {
        ticks(&first).await.len() >= 4
    })
    .await;
    assert!(enough, "the schedule fired: {:?}", ticks(&first).await);

    // Shown with its next ticks and what fired.
    let (status, shown) = json(first.get("/api/v1/functions/ticker/schedules").await).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["schedules"][0]["schedule"], "*/2 * * * * *");
    assert_eq!(shown["schedules"][0]["next"].as_array().unwrap().len(), 3);
    assert_eq!(shown["fired"][0]["schedule"], "*/2 * * * * *");
    let info = tokio::process::Command::new(env!("CARGO_BIN_EXE_ol"))
        .args(["info", "ticker"])
        .env("OL_URL", first.url(""))
        .env("OL_API_KEY", crate::helpers::ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    assert!(
        printed.contains("schedules (UTC):")
            && printed.contains("*/2 * * * * *  missed: skip  next: "),
        "{printed}"
    );
    assert!(printed.contains("  fired "), "{printed}");
    // The dashboard's function page shows the schedule, its next ticks and
    // the ticks fired with how their calls ended.
    let page = first.get("/functions/ticker").await.text().await.unwrap();
    assert!(
        page.contains("<table id=\"schedules\"") && page.contains("<code>*/2 * * * * *</code>"),
        "{page}"
    );
    assert!(page.contains("<table id=\"ticks\""), "{page}");

    // A redeploy without the schedule removes it at once.
    first.deploy_ok("ticker", &[("f.py", ECHO)]).await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM function_schedules")
        .fetch_one(&first.db)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let fired = eventually(Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE trigger = 'cron' AND state <> 'succeeded'",
        )
        .fetch_one(&first.db)
        .await
        .unwrap();
        n == 0
    })
    .await;
    assert!(fired, "every scheduled call ran");
    first.flush().await;
    second.flush().await;

    // Every tick from the first to the last, 2 s apart, each fired once:
    // one event, one attempt, one record, whichever manager saw it first.
    let all: Vec<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT tick FROM cron_ticks ORDER BY tick")
            .fetch_all(&first.db)
            .await
            .unwrap();
    for pair in all.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::Duration::seconds(2), "{all:?}");
    }
    let counts: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events WHERE trigger = 'cron'), \
                (SELECT count(*) FROM events WHERE trigger = 'cron' AND attempts = 1), \
                (SELECT count(*) FROM invocations WHERE trigger = 'cron')",
    )
    .fetch_one(&first.db)
    .await
    .unwrap();
    let n = all.len() as i64;
    assert_eq!(counts, (n, n, n));
    let event: Value = sqlx::query_scalar(
        "SELECT convert_from(payload, 'UTF8')::jsonb FROM events WHERE trigger = 'cron' LIMIT 1",
    )
    .fetch_one(&first.db)
    .await
    .unwrap();
    assert_eq!(event["schedule"], "*/2 * * * * *");
    assert_eq!(event["function"], "ticker");
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_success_sends_the_result_on_and_a_loop_ends() {
    let app = app().await;
    app.deploy_ok("loop", &[("f.py", ECHO), ("ol.yaml", "on_success: loop\n")])
        .await;
    let id = enqueue(&app, "loop", r#"{"hop": 0}"#).await;
    // The first call, then one destination call per hop, up to the bound.
    let all_ran = eventually(Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE state = 'succeeded'")
            .fetch_one(&app.db)
            .await
            .unwrap();
        n == 9
    })
    .await;
    assert!(all_ran, "the chain ran to its bound");
    let first_hop: (uuid::Uuid, Value) =
        sqlx::query_as("SELECT request_id, result FROM events WHERE origin = $1::uuid")
            .bind(&id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    // The destination's event (echoed back as its result) carries the
    // result on, with the request id of the call it follows.
    let event = &first_hop.1;
    assert_eq!(event["condition"], "success");
    assert_eq!(event["request_id"], id.as_str());
    assert_eq!(event["trigger"], "async");
    assert_eq!(event["response"]["hop"], 0);
    assert_eq!(event["request"]["hop"], 0);
    let shown = invocation(&app, &first_hop.0.to_string()).await;
    assert_eq!(shown["trigger"], "destination");
    assert_eq!(shown["origin"], id.as_str());
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(total, 9, "no destination past the bound");
    app.stop().await;
}
