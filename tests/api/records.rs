//! Records users can trust: every field of a call's record, paging, logs,
//! metrics, CSV, and no record lost or counted twice when Postgres goes
//! away or the manager is killed.

use std::time::Duration;

use chrono::{Days, Utc};

use openlambda::store::invocations::Invocation;

use crate::helpers::{
    eventually, json, spawn_app, spawn_app_with, start, test_settings, zip_of, OwnPostgres, ECHO,
};
use crate::process::{entries, ServeEnv};

const PRINTER: &str = r#"
import sys, time
def f(event):
    if event == "boom":
        print("about to fail")
        raise RuntimeError("boom")
    if isinstance(event, dict) and "sleep" in event:
        time.sleep(event["sleep"])
    if isinstance(event, dict) and "spam" in event:
        print("x" * event["spam"])
    print("hello", event)
    print("to stderr", file=sys.stderr)
    return event
"#;

async fn record(app: &crate::helpers::TestApp, request_id: &str) -> serde_json::Value {
    app.flush().await;
    let row: (serde_json::Value,) =
        sqlx::query_as("SELECT to_jsonb(i) FROM invocations i WHERE request_id = $1::uuid")
            .bind(request_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    row.0
}

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_of_the_record_is_filled() {
    let app = spawn_app().await;
    app.deploy_ok("rec", &[("f.py", PRINTER), ("ol.yaml", "timeout_s: 1\n")])
        .await;

    let cold = app.run("rec", "1").await;
    let cold_id = request_id(&cold);
    assert_eq!(cold.status(), 200);
    let warm = app.run("rec", r#"{"sleep": 0.25}"#).await;
    let warm_id = request_id(&warm);
    let failed = app.run("rec", r#""boom""#).await;
    let failed_id = request_id(&failed);
    assert_eq!(failed.status(), 500);
    let slow = app.run("rec", r#"{"sleep": 5}"#).await;
    let slow_id = request_id(&slow);
    assert_eq!(slow.status(), 504);

    let r = record(&app, &cold_id).await;
    let version = app
        .deploy_ok("rec", &[("f.py", PRINTER), ("ol.yaml", "timeout_s: 1\n")])
        .await["version"]
        .clone();
    assert_eq!(r["function"], "rec");
    assert_eq!(r["version"], version);
    assert_eq!(r["cold"], true);
    assert!(r["init_ms"].as_i64().unwrap() > 0, "{r}");
    // wait_ms is checked where calls do wait: pool::past_max_concurrency_*.
    assert_eq!(
        (r["status"].as_str(), r["http_status"].as_i64()),
        (Some("success"), Some(200))
    );
    assert_eq!(r["memory_mb"], 128);
    let peak = r["max_memory_used_mb"]
        .as_i64()
        .expect("peak memory from the cgroup");
    assert!(peak > 0 && peak <= 128, "{r}");
    assert_eq!(r["billed"], true);

    let r = record(&app, &warm_id).await;
    assert_eq!(r["cold"], false);
    assert!(r["init_ms"].is_null());
    let duration = r["duration_ms"].as_i64().unwrap();
    assert!(duration >= 250, "{r}");
    assert_eq!(
        r["billed_ms"].as_i64().unwrap(),
        (duration + 99) / 100 * 100,
        "{r}"
    );

    let r = record(&app, &failed_id).await;
    assert_eq!(
        (r["status"].as_str(), r["http_status"].as_i64()),
        (Some("error"), Some(500))
    );
    assert!(r["logs"].as_str().unwrap().contains("about to fail"), "{r}");
    assert!(
        r["logs"].as_str().unwrap().contains("RuntimeError: boom"),
        "traceback kept: {r}"
    );

    let r = record(&app, &slow_id).await;
    assert_eq!(
        (r["status"].as_str(), r["http_status"].as_i64()),
        (Some("timeout"), Some(504))
    );
    assert!(r["duration_ms"].as_i64().unwrap() >= 1000);
    assert_eq!(r["billed"], true, "a timeout is billed for the time it ran");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_page_newest_first() {
    let app = spawn_app().await;
    app.deploy_ok("pages", &[("f.py", ECHO)]).await;
    for i in 0..5 {
        assert_eq!(app.run("pages", &i.to_string()).await.status(), 200);
    }
    app.flush().await;
    let mut seen = Vec::new();
    let mut url = app.url("/api/v1/functions/pages/invocations?limit=2");
    loop {
        let (status, body) = json(app.http.get(&url).send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        for r in body["invocations"].as_array().unwrap() {
            seen.push(r["started_at"].as_str().unwrap().to_string());
        }
        match body["next_before"].as_str() {
            Some(next) => {
                url = app.url(&format!(
                    "/api/v1/functions/pages/invocations?limit=2&before={}",
                    urlencode(next)
                ))
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "every call once: {seen:?}");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");
    let (status, _) = json(
        app.get("/api/v1/functions/pages/invocations?before=yesterday")
            .await,
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = json(
        app.get("/api/v1/functions/pages/invocations?limit=ten")
            .await,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_limit")),
        "{body}"
    );
    app.stop().await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_kept_per_call_and_capped() {
    let app = spawn_app().await;
    app.deploy_ok("talker", &[("f.py", PRINTER)]).await;
    let first = app.run("talker", r#""one""#).await;
    let first_id = request_id(&first);
    let big = app.run("talker", r#"{"spam": 100000}"#).await;
    let big_id = request_id(&big);
    assert_eq!(big.status(), 200, "output does not change the result");
    assert_eq!(big.text().await.unwrap(), r#"{"spam": 100000}"#);
    app.flush().await;

    let url = app.url(&format!(
        "/api/v1/functions/talker/logs?request_id={first_id}"
    ));
    let (status, body) = json(app.http.get(url).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let logs = body["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["logs"], "hello one\nto stderr\n");

    let url = app.url(&format!(
        "/api/v1/functions/talker/logs?request_id={big_id}"
    ));
    let (_, body) = json(app.http.get(url).send().await.unwrap()).await;
    let text = body["logs"][0]["logs"].as_str().unwrap();
    assert!(text.len() <= 64 * 1024 + 64, "capped: {} bytes", text.len());
    assert!(text.ends_with("[output cut at 64 KiB]\n"), "marked as cut");

    let (_, body) = json(app.get("/api/v1/functions/talker/logs?limit=10").await).await;
    assert_eq!(
        body["logs"].as_array().unwrap().len(),
        2,
        "newest calls' output"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_and_containers() {
    let app = spawn_app().await;
    app.deploy_ok("m", &[("f.py", ECHO)]).await;
    app.deploy_ok("bad", &[("f.py", "def f(e):\n    raise ValueError()\n")])
        .await;
    for _ in 0..2 {
        assert_eq!(app.run("m", "1").await.status(), 200);
    }
    assert_eq!(app.run("bad", "1").await.status(), 500);
    let text = app.get("/metrics").await.text().await.unwrap();
    for needle in [
        "openlambda_invocations_total{function=\"m\",status=\"success\"} 2",
        "openlambda_invocations_total{function=\"bad\",status=\"error\"} 1",
        "openlambda_cold_starts_total{function=\"m\"} 1",
        "openlambda_invocation_duration_seconds_count{function=\"m\"} 2",
        "openlambda_queue_wait_seconds_count 3",
        "openlambda_containers{state=\"busy\"} 0",
        "openlambda_records_pending ",
        "openlambda_journal_bytes ",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_by_day_and_as_csv() {
    let app = spawn_app().await;
    app.deploy_ok("csv-a", &[("f.py", ECHO)]).await;
    app.deploy_ok("csv-b", &[("f.py", ECHO), ("ol.yaml", "memory_mb: 1024\n")])
        .await;
    for _ in 0..3 {
        assert_eq!(app.run("csv-a", "1").await.status(), 200);
    }
    assert_eq!(app.run("csv-b", "1").await.status(), 200);
    app.flush().await;
    let today = Utc::now().date_naive();
    let range = format!("from={today}&to={}", today + Days::new(1));

    let (status, body) = json(app.get(&format!("/api/v1/billing?{range}&group=day")).await).await;
    assert_eq!(status, 200, "{body}");
    let lines = body["functions"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["day"], today.to_string());
    assert_eq!(lines[0]["invocations"], 3);

    let response = app
        .get(&format!("/api/v1/billing?{range}&format=csv"))
        .await;
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = response.text().await.unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "function,invocations,billed_ms,gb_seconds,cost_usd"
    );
    assert_eq!(rows.len(), 3, "{csv}");
    let b: Vec<&str> = rows[2].split(',').collect();
    assert_eq!(b[0], "csv-b");
    assert_eq!(b[1], "1");
    // 1024 MB for one 100 ms unit: 0.1 GB-s.
    assert_eq!(b[2], "100");
    assert_eq!(b[3].parse::<f64>().unwrap(), 0.1);
    let cost: f64 = b[4].parse().unwrap();
    assert!(
        (cost - (0.1 * 0.000_016_666_7 + 0.000_000_2)).abs() < 1e-11,
        "{cost}"
    );

    let csv = app
        .get(&format!("/api/v1/billing?{range}&group=day&format=csv"))
        .await
        .text()
        .await
        .unwrap();
    assert!(csv.starts_with("function,day,invocations"), "{csv}");
    assert!(csv.contains(&format!("csv-a,{today},3,")), "{csv}");

    let page = app.get(&format!("/billing?{range}")).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<svg") && html.contains("csv-a") && html.contains("csv-b"),
        "{html}"
    );
    app.stop().await;
}

/// The call runs in its caller's task until the caller hangs up, then in
/// one of its own: it must finish, be recorded and billed in full, and give
/// its container back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_caller_hangs_up_finishes_and_is_billed_in_full() {
    let app = spawn_app().await;
    app.deploy_ok("left", &[("f.py", PRINTER)]).await;
    assert_eq!(app.run("left", "1").await.status(), 200);

    let hung_up = tokio::time::timeout(
        Duration::from_millis(400),
        app.run("left", r#"{"sleep": 1.5}"#),
    )
    .await;
    assert!(hung_up.is_err(), "the caller left before the answer");
    let finished = eventually(Duration::from_secs(30), || async {
        app.count(
            "SELECT count(*) FROM invocations WHERE function = 'left' \
             AND status = 'success' AND billed AND duration_ms >= 1500",
        )
        .await
            == 1
    })
    .await;
    assert!(
        finished,
        "the left call ran to its end and was billed for it"
    );
    // Its container went back to the pool: the next call finds it.
    assert_eq!(app.run("left", "2").await.status(), 200);
    assert_eq!(app.pool.containers("left").len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_on_while_postgres_is_away_and_every_record_arrives_once() {
    let pg = OwnPostgres::start();
    let url = pg.url();
    let app = spawn_app_with(|s| s.database_url = url.clone()).await;
    app.deploy_ok("steady", &[("f.py", ECHO)]).await;
    let first = app.run("steady", "0").await;
    assert_eq!(first.status(), 200);
    let mut answered = vec![request_id(&first)];
    app.flush().await;

    pg.down();
    for i in 1..=5 {
        let response = app.run("steady", &i.to_string()).await;
        assert_eq!(response.status(), 200, "served while Postgres is down");
        answered.push(request_id(&response));
    }
    assert!(app.recorder.depth() >= 5, "records wait in the journal");

    pg.up();
    assert!(
        app.recorder.flush(Duration::from_secs(60)).await,
        "written once Postgres is back"
    );
    let mut stored: Vec<String> =
        sqlx::query_scalar("SELECT request_id::text FROM invocations ORDER BY started_at")
            .fetch_all(&app.db)
            .await
            .unwrap();
    stored.sort();
    answered.sort();
    assert_eq!(stored, answered, "each answered call's record, once");
    app.stop().await;
}

/// The catalog caches a function for 2 s; an outage longer than that must
/// not turn calls into 5xx (README: the last version read keeps serving).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_on_through_an_outage_longer_than_the_catalog_keeps_entries() {
    let pg = OwnPostgres::start();
    let url = pg.url();
    let app = spawn_app_with(|s| s.database_url = url.clone()).await;
    app.deploy_ok("steady", &[("f.py", ECHO)]).await;
    assert_eq!(app.run("steady", "0").await.status(), 200);
    pg.down();
    // The outage's length is what is tested, not a stand-in for a condition.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 1..=3 {
        let response = app.run("steady", &i.to_string()).await;
        assert_eq!(response.status(), 200, "served 3 s into the outage");
    }
    pg.up();
    assert!(app.recorder.flush(Duration::from_secs(60)).await);
    assert_eq!(app.count("SELECT count(*) FROM invocations").await, 4);
    app.stop().await;
}

/// The billing report's total over all time, and the stored rows' count and
/// billed milliseconds: what a replay must leave unchanged.
async fn totals(db: &sqlx::PgPool, report: serde_json::Value) -> (i64, i64, serde_json::Value) {
    let (count, billed): (i64, i64) =
        sqlx::query_as("SELECT count(*), coalesce(sum(billed_ms), 0)::bigint FROM invocations")
            .fetch_one(db)
            .await
            .unwrap();
    (count, billed, report["total"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_records_already_stored_bills_nothing_twice() {
    let (settings, scratch) = test_settings().await;
    let app = start(settings.clone(), scratch.clone()).await;
    app.deploy_ok("twice", &[("f.py", ECHO)]).await;
    for i in 0..3 {
        assert_eq!(app.run("twice", &i.to_string()).await.status(), 200);
    }
    app.flush().await;
    let before = totals(&app.db, json(app.get("/api/v1/billing").await).await.1).await;
    assert_eq!(before.0, 3, "{before:?}");
    let stored: Vec<Invocation> = sqlx::query_as(
        "SELECT request_id, function, version, started_at, duration_ms, billed_ms, memory_mb, \
                max_memory_used_mb, init_ms, wait_ms, cold, status, http_status, billed, logs, \
                trigger, attempt \
         FROM invocations",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    app.stop().await;

    // A segment whose records are all in Postgres, as a kill between the
    // insert and the segment's removal leaves it: the next start replays it.
    let journal = scratch.path().join("journal");
    let mut segment = String::new();
    for record in &stored {
        segment.push_str(&serde_json::to_string(record).unwrap());
        segment.push('\n');
    }
    std::fs::write(journal.join("000000000001.jsonl"), segment).unwrap();

    let again = start(settings, scratch.clone()).await;
    assert!(
        again.recorder.flush(Duration::from_secs(20)).await,
        "the replayed segment is taken (a conflict is skipped, not retried)"
    );
    assert_eq!(
        std::fs::read_dir(&journal).unwrap().count(),
        0,
        "the segment is removed once in"
    );
    let after = totals(&again.db, json(again.get("/api/v1/billing").await).await.1).await;
    assert_eq!(after, before, "nothing counted or billed twice");
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_manager_replays_its_journal_without_billing_twice() {
    let pg = OwnPostgres::start();
    let env = ServeEnv::new(pg.url());
    let http = env.client();
    let base = env.base();
    let fn_base = env.fn_base();
    let run = |event: String| {
        let request = http.post(format!("{fn_base}/run/journaled")).body(event);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            request_id(&response)
        }
    };

    let manager = env.serve().await;
    let response = http
        .put(format!("{base}/api/v1/functions/journaled"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .body(zip_of(&[("f.py", ECHO)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let mut answered = vec![run("0".into()).await];
    let db = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM invocations")
            .fetch_one(&db)
            .await
            .unwrap_or(-1)
    };
    assert!(
        eventually(Duration::from_secs(30), || async { count().await == 1 }).await,
        "the first record is written before the outage"
    );
    db.close().await;

    // Postgres goes away; calls are served and their records wait in the
    // journal. Then the manager is killed: only the journal has them.
    pg.down();
    for i in 1..=3 {
        answered.push(run(i.to_string()).await);
    }
    manager.kill().await;
    pg.up();
    let db = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM invocations")
            .fetch_one(&db)
            .await
            .unwrap_or(-1)
    };
    assert_eq!(count().await, 1, "the killed manager wrote nothing more");

    let manager = env.serve().await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            entries(&env.data_dir.path().join("journal")) == 0
        })
        .await,
        "the journal was replayed and emptied"
    );
    let mut stored: Vec<String> = sqlx::query_scalar("SELECT request_id::text FROM invocations")
        .fetch_all(&db)
        .await
        .unwrap();
    stored.sort();
    answered.sort();
    assert_eq!(stored, answered, "every answered call once");
    let (_, report) = json(
        http.get(format!("{base}/api/v1/billing"))
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        report["total"]["invocations"], 4,
        "billed once each: {report}"
    );
    manager.stop().await;
}
