//! What README says is billed, call by call: every status a call can end in,
//! the report's and the CSV's totals against the stored rows, non-default
//! granularity, prices and init billing, and how long output is kept.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{Days, Utc};
use openlambda::store::invocations::{insert_batch, Invocation};
use openlambda::testing::sample_invocation;

use crate::helpers::{busy, eventually, json, spawn_app_with, start, test_settings, ECHO};

/// README, "Records and billing": calls that reached a handler are billed
/// whatever their end; calls that never did (throttled, unknown function,
/// platform faults) are recorded and not billed.
const BILLED: [(&str, bool); 7] = [
    ("success", true),
    ("error", true),
    ("timeout", true),
    ("oom", true),
    ("crashed", true),
    ("throttled", false),
    ("not_found", false),
];

/// status, http_status, billed, duration_ms, billed_ms, init_ms, memory_mb
type Row = (String, i32, bool, i64, i64, Option<i64>, i32);

const SLEEPER: &str = "import time\ndef f(event):\n    time.sleep(event)\n    return event\n";

/// Non-default prices, exact in binary, so totals can be compared closely.
const GRANULARITY_MS: i64 = 250;
const PRICE_GB_S: f64 = 0.5;
const PRICE_REQUEST: f64 = 0.25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_is_billed_as_readme_says_with_non_default_prices() {
    let app = spawn_app_with(|s| {
        s.billing.granularity_ms = GRANULARITY_MS as u64;
        s.billing.price_gb_second = PRICE_GB_S;
        s.billing.price_request = PRICE_REQUEST;
        s.billing.bill_init = true;
        s.pool.queue_timeout = Duration::from_millis(500);
    })
    .await;
    app.deploy_ok("ok", &[("f.py", ECHO), ("ol.yaml", "memory_mb: 256\n")])
        .await;
    app.deploy_ok(
        "raises",
        &[("f.py", "def f(e):\n    raise ValueError(e)\n")],
    )
    .await;
    app.deploy_ok("slow", &[("f.py", SLEEPER), ("ol.yaml", "timeout_s: 1\n")])
        .await;
    let hog = "def f(mb):\n    block = bytearray(mb * 1024 * 1024)\n    return len(block)\n";
    app.deploy_ok("hog", &[("f.py", hog), ("ol.yaml", "memory_mb: 64\n")])
        .await;
    app.deploy_ok("victim", &[("f.py", SLEEPER)]).await;
    app.deploy_ok(
        "narrow",
        &[("f.py", SLEEPER), ("ol.yaml", "max_concurrency: 1\n")],
    )
    .await;

    let mut expected: HashMap<&str, u16> = HashMap::new();
    let mut status_of = |status: &'static str, code: u16| expected.insert(status, code);
    assert_eq!(app.run("ok", "1").await.status(), 200);
    assert_eq!(app.run("ok", "2").await.status(), 200, "a warm call too");
    status_of("success", 200);
    assert_eq!(app.run("raises", "1").await.status(), 500);
    status_of("error", 500);
    assert_eq!(app.run("slow", "5").await.status(), 504);
    status_of("timeout", 504);
    assert_eq!(app.run("hog", "256").await.status(), 502);
    status_of("oom", 502);

    // Crashed: the container is killed while the handler runs.
    let call = app.run("victim", "5");
    let kill = async {
        assert!(busy(&app, 1).await, "the call is in the container");
        let id = app.containers("victim").await[0].id.clone().unwrap();
        app.docker
            .kill_container(&id, None::<bollard::query_parameters::KillContainerOptions>)
            .await
            .unwrap();
    };
    let (response, ()) = tokio::join!(call, kill);
    assert_eq!(response.status(), 502);
    status_of("crashed", 502);

    // Throttled: one call holds the only container past the queue deadline.
    let holder = app.run("narrow", "2");
    let late = async {
        assert!(busy(&app, 1).await, "the first call holds the container");
        app.run("narrow", "0").await
    };
    let (holder, late) = tokio::join!(holder, late);
    assert_eq!(
        (holder.status().as_u16(), late.status().as_u16()),
        (200, 429)
    );
    status_of("throttled", 429);

    assert_eq!(app.run("nope", "1").await.status(), 404);
    status_of("not_found", 404);
    app.flush().await;

    // Each status recorded, flagged as README says.
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT status, http_status, billed, duration_ms, billed_ms, init_ms, memory_mb \
         FROM invocations",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    for (status, billed) in BILLED {
        let mine: Vec<_> = rows.iter().filter(|r| r.0 == status).collect();
        // ok twice, and narrow's call that held the container.
        let calls = if status == "success" { 3 } else { 1 };
        assert_eq!(mine.len(), calls, "{status} recorded: {rows:?}");
        for r in mine {
            assert_eq!(i64::from(r.1), i64::from(expected[status]), "{r:?}");
            assert_eq!(r.2, billed, "{status} billed: {r:?}");
            if !billed {
                assert_eq!(r.4, 0, "nothing billed for {status}: {r:?}");
                continue;
            }
            // Init time is billed (OL_BILLING_BILL_INIT); the sum is rounded
            // up to the granularity. Fields are whole milliseconds, cut from
            // finer times, so the unrounded sum may be one more.
            let metered = r.3 + r.5.unwrap_or(0);
            let round =
                |ms: i64| (ms.max(1) + GRANULARITY_MS - 1) / GRANULARITY_MS * GRANULARITY_MS;
            assert!(
                r.4 == round(metered) || r.4 == round(metered + 1),
                "{status}: billed {} for {metered} ms at {GRANULARITY_MS} ms units: {r:?}",
                r.4
            );
        }
    }
    let cold_success = rows
        .iter()
        .find(|r| r.0 == "success" && r.5.is_some())
        .expect("the first call was cold");
    assert!(
        cold_success.4 >= cold_success.3 + cold_success.5.unwrap(),
        "the cold start is billed: {cold_success:?}"
    );

    // The report and the CSV bill exactly the billed rows at these prices.
    let billed: Vec<_> = rows.iter().filter(|r| r.2).collect();
    let billed_ms: i64 = billed.iter().map(|r| r.4).sum();
    let gb_s: f64 = billed
        .iter()
        .map(|r| f64::from(r.6) / 1024.0 * r.4 as f64 / 1000.0)
        .sum();
    let cost = gb_s * PRICE_GB_S + billed.len() as f64 * PRICE_REQUEST;
    let today = Utc::now().date_naive();
    let range = format!("from={today}&to={}", today + Days::new(1));
    let (status, report) = json(app.get(&format!("/api/v1/billing?{range}")).await).await;
    assert_eq!(status, 200, "{report}");
    let total = &report["total"];
    assert_eq!(total["invocations"], billed.len(), "{report}");
    assert_eq!(total["billed_ms"], billed_ms, "{report}");
    assert!(
        close(total["gb_seconds"].as_f64().unwrap(), gb_s),
        "{report} vs {gb_s}"
    );
    assert!(
        close(total["cost"].as_f64().unwrap(), cost),
        "{report} vs {cost}"
    );

    let csv = app
        .get(&format!("/api/v1/billing?{range}&format=csv"))
        .await
        .text()
        .await
        .unwrap();
    let (mut invocations, mut csv_ms, mut csv_cost) = (0, 0, 0.0);
    for line in csv.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        invocations += cells[1].parse::<usize>().unwrap();
        csv_ms += cells[2].parse::<i64>().unwrap();
        csv_cost += cells[4].parse::<f64>().unwrap();
    }
    assert_eq!((invocations, csv_ms), (billed.len(), billed_ms), "{csv}");
    assert!(close(csv_cost, cost), "{csv} vs {cost}");
    app.stop().await;
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9_f64.max(b.abs() * 1e-9)
}

fn record(age_days: u64, logs: &str) -> Invocation {
    Invocation {
        started_at: Utc::now() - Days::new(age_days),
        logs: Some(logs.into()),
        ..sample_invocation("talker")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_cleared_after_the_retention_and_the_record_stays() {
    let (mut settings, scratch) = test_settings().await;
    settings.log_retention_days = 3;
    let app = start(settings.clone(), scratch.clone()).await;
    let (old, recent) = (record(4, "old output"), record(2, "recent output"));
    insert_batch(&app.db, &[old.clone(), recent.clone()])
        .await
        .unwrap();
    app.stop().await;

    // The manager clears expired output when it starts (then hourly).
    let again = start(settings, scratch).await;
    let logs_of = |id: uuid::Uuid| {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT logs FROM invocations WHERE request_id = $1",
        )
        .bind(id)
        .fetch_one(&again.db)
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            logs_of(old.request_id).await.unwrap().is_none()
        })
        .await,
        "output older than OL_LOG_RETENTION_DAYS is cleared"
    );
    assert_eq!(
        logs_of(recent.request_id).await.unwrap().as_deref(),
        Some("recent output"),
        "newer output is kept"
    );
    assert_eq!(
        again.count("SELECT count(*) FROM invocations").await,
        2,
        "the records stay"
    );
    again.stop().await;
}
