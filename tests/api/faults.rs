//! The fault suite: a fault injected in the middle of steady calls, then the
//! ledger checked. After each, the records equal the calls made, no request
//! id is stored twice, and the billing report adds up to the records.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{Days, Utc};
use openlambda::store::invocations::Invocation;

use crate::helpers::{
    eventually, json, spawn_app, spawn_app_with, start, test_settings, OwnPostgres, TestApp, ECHO,
};

/// How long Postgres stays away in the outage test (`OL_FAULT_OUTAGE_SECS`
/// makes it shorter in a hurry; it stays longer than the cache's 2 s).
fn outage() -> Duration {
    let secs = std::env::var("OL_FAULT_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30u64);
    Duration::from_secs(secs.max(5))
}

/// One call to `/run/{name}`; its status and request id.
async fn call(app: &TestApp, name: &str, event: &str) -> (u16, String) {
    let response = app.run(name, event).await;
    let id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (response.status().as_u16(), id)
}

/// The ledger after a fault: exactly one record per call made (by request
/// id), and the billing report's totals equal the sums of the records.
async fn ledger_holds(app: &TestApp, request_ids: &[String]) {
    assert!(
        app.recorder.flush(Duration::from_secs(60)).await,
        "every record written"
    );
    let stored: Vec<(uuid::Uuid, bool, i64)> =
        sqlx::query_as("SELECT request_id, billed, billed_ms FROM invocations")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let distinct: HashSet<String> = stored.iter().map(|r| r.0.to_string()).collect();
    assert_eq!(distinct.len(), stored.len(), "no request id twice");
    let made: HashSet<String> = request_ids.iter().cloned().collect();
    assert_eq!(made.len(), request_ids.len(), "every call got its own id");
    assert_eq!(distinct, made, "one record for each call made, no other");

    let today = Utc::now().date_naive();
    let tomorrow = today + Days::new(1);
    let (status, report) = json(
        app.get(&format!("/api/v1/billing?from={today}&to={tomorrow}"))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    let billed: Vec<_> = stored.iter().filter(|r| r.1).collect();
    assert_eq!(report["total"]["invocations"], billed.len(), "{report}");
    assert_eq!(
        report["total"]["billed_ms"],
        billed.iter().map(|r| r.2).sum::<i64>(),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_function_answers_while_postgres_is_away_and_every_record_arrives_once() {
    let pg = OwnPostgres::start();
    let url = pg.url();
    let app = spawn_app_with(|s| s.database_url = url.clone()).await;
    app.deploy_ok("steady", &[("f.py", ECHO)]).await;
    app.deploy_ok("restarted", &[("f.py", ECHO)]).await;
    let mut ids = Vec::new();
    for name in ["steady", "restarted"] {
        let (status, id) = call(&app, name, "0").await;
        assert_eq!(status, 200);
        ids.push(id);
    }
    app.flush().await;
    // Its container goes: its next call is a cold start from the code on disk.
    app.pool.retire("restarted");

    pg.down();
    let began = Instant::now();
    let calls = 20;
    let spacing = outage() / calls;
    for i in 0..calls {
        let (status, id) = call(&app, "steady", &i.to_string()).await;
        assert_eq!(status, 200, "call {i} served while Postgres is down");
        ids.push(id);
        if i == 2 {
            let asked = Instant::now();
            let (status, body) = json(app.get("/api/v1/functions").await).await;
            assert_eq!(status, 503, "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("Postgres is unreachable"),
                "{body}"
            );
            assert!(
                asked.elapsed() < Duration::from_millis(2500),
                "answered in {:?}",
                asked.elapsed()
            );
        }
        if i == 3 {
            let (status, id) = call(&app, "restarted", "\"cold\"").await;
            assert_eq!(status, 200, "a cold start needs no database");
            ids.push(id);
        }
        tokio::time::sleep_until((began + spacing * (i + 1)).into()).await;
    }
    assert!(
        began.elapsed() > Duration::from_secs(4),
        "the outage outlasts the cache"
    );
    assert!(app.recorder.depth() >= calls as usize, "records wait");

    pg.up();
    ledger_holds(&app, &ids).await;
    let cold: bool = sqlx::query_scalar(
        "SELECT cold FROM invocations WHERE function = 'restarted' ORDER BY started_at DESC LIMIT 1",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(cold);
    app.stop().await;
}

const PRINTS_NUL: &str = r#"
import sys
def f(event):
    if event == "nul":
        print("before\x00after", "bad \udcff\udcfe bytes")
        print("\x00" * 10, file=sys.stderr)
    else:
        print("fine", event)
    return event
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_printing_nul_and_invalid_utf8_holds_up_no_other_record() {
    let app = spawn_app().await;
    app.deploy_ok("printer", &[("f.py", PRINTS_NUL)]).await;
    let mut ids = Vec::new();
    for event in ["\"a\"", "\"nul\"", "\"b\"", "\"nul\"", "\"c\""] {
        let (status, id) = call(&app, "printer", event).await;
        assert_eq!(status, 200);
        ids.push(id);
    }
    // Every record, the NUL ones made acceptable, within a few seconds.
    assert!(
        app.recorder.flush(Duration::from_secs(5)).await,
        "records written within a few seconds"
    );
    let logs: Vec<String> = sqlx::query_scalar(
        "SELECT logs FROM invocations WHERE logs LIKE '%before%' ORDER BY started_at",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(logs[0].contains("before\u{FFFD}after"), "{:?}", logs[0]);
    assert_eq!(app.recorder.stats().quarantined, 0);
    ledger_holds(&app, &ids).await;
    app.stop().await;
}

/// A record as a call makes it, with output Postgres' `text` refuses.
fn record(function: &str, duration_ms: i64) -> Invocation {
    Invocation {
        logs: Some("out\0put".into()),
        duration_ms,
        ..openlambda::testing::sample_invocation(function)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_postgres_refuses_is_set_aside_and_the_rest_written() {
    let app = spawn_app().await;
    // A rule these records break, so that Postgres refuses one for good.
    sqlx::query("ALTER TABLE invocations ADD CONSTRAINT fault_test CHECK (duration_ms >= 0)")
        .execute(&app.db)
        .await
        .unwrap();
    let (good, bad, after) = (record("f", 1), record("f", -1), record("f", 2));
    for r in [&good, &bad, &after] {
        app.recorder.record(r);
    }
    assert!(app.recorder.flush(Duration::from_secs(10)).await);
    let stored: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT request_id FROM invocations")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(
        stored.iter().collect::<HashSet<_>>(),
        HashSet::from([&good.request_id, &after.request_id])
    );
    assert_eq!(app.recorder.stats().quarantined, 1);
    let kept = std::fs::read_to_string(app.data_dir.path().join("quarantine.jsonl")).unwrap();
    assert!(kept.contains(&bad.request_id.to_string()), "{kept}");
    assert!(kept.contains("fault_test"), "the reason is kept: {kept}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("openlambda_records_quarantined_total 1"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_journal_replays_its_good_lines_and_the_manager_starts() {
    let (settings, data_dir) = test_settings().await;
    let journal = data_dir.path().join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    let (a, b) = (record("replayed", 1), record("replayed", 2));
    let mut bytes = b"\xff\xfe not utf-8\n{\"not\": \"a record\"}\n".to_vec();
    for r in [&a, &b] {
        bytes.extend(serde_json::to_vec(r).unwrap());
        bytes.push(b'\n');
    }
    bytes.extend(b"{\"request_id\": \"torn by a full d");
    std::fs::write(journal.join("000000000001.jsonl"), bytes).unwrap();

    let app = start(settings, data_dir).await;
    assert_eq!(app.recorder.stats().skipped_lines, 3);
    ledger_holds(&app, &[a.request_id.to_string(), b.request_id.to_string()]).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("openlambda_journal_skipped_lines_total 3"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_cannot_be_written_fails_no_call_and_loses_no_record() {
    let app = spawn_app().await;
    app.deploy_ok("steady", &[("f.py", ECHO)]).await;
    let mut ids = vec![call(&app, "steady", "0").await.1];
    app.flush().await;

    // The journal directory becomes a file: no segment can be opened (as
    // root, permissions would not stop the writes).
    let journal = app.data_dir.path().join("journal");
    let away = app.data_dir.path().join("journal.away");
    std::fs::rename(&journal, &away).unwrap();
    std::fs::write(&journal, b"not a directory").unwrap();
    for i in 1..=5 {
        let (status, id) = call(&app, "steady", &i.to_string()).await;
        assert_eq!(status, 200, "answered although its record is not journaled");
        ids.push(id);
    }
    assert!(app.recorder.stats().append_failures > 0);
    // Postgres is there: what the journal refused goes straight in.
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.recorder.stats().unjournaled == 0
        })
        .await,
        "the in-memory records reach Postgres"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        !metrics.contains("openlambda_journal_append_failures_total 0"),
        "{metrics}"
    );

    std::fs::remove_file(&journal).unwrap();
    std::fs::rename(&away, &journal).unwrap();
    ids.push(call(&app, "steady", "6").await.1);
    ledger_holds(&app, &ids).await;
    assert_eq!(app.recorder.stats().lost, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_on_one_manager_is_seen_by_another_at_once() {
    let first = spawn_app().await;
    let shared = first.settings.database_url.clone();
    let second = spawn_app_with(|s| s.database_url = shared).await;
    let following = || async {
        let metrics = second.get("/metrics").await.text().await.unwrap();
        metrics.contains("openlambda_catalog_notified 1")
    };
    assert!(
        eventually(Duration::from_secs(10), following).await,
        "the second manager follows function changes"
    );
    let v1 = "def f(event):\n    return 'v1'\n";
    let v2 = "def f(event):\n    return 'v2'\n";
    first.deploy_ok("shared", &[("f.py", v1)]).await;
    let body = second.run("shared", "0").await.text().await.unwrap();
    assert_eq!(body, "\"v1\"");

    // Cached on the second manager for a minute while notified: only the
    // notification can make it see the new version this soon.
    first.deploy_ok("shared", &[("f.py", v2)]).await;
    let deployed = Instant::now();
    assert!(
        eventually(Duration::from_secs(1), || async {
            second.run("shared", "0").await.text().await.unwrap() == "\"v2\""
        })
        .await,
        "the second manager still runs v1 {:?} after the deploy",
        deployed.elapsed()
    );

    // A delete, too.
    assert_eq!(
        first
            .http
            .delete(first.url("/api/v1/functions/shared"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert!(
        eventually(Duration::from_secs(1), || async {
            second.run("shared", "0").await.status() == 404
        })
        .await,
        "the delete is seen at once"
    );
    first.stop().await;
    second.stop().await;
}
