//! One record per call, and the billing report computed from them.

use chrono::{Days, Utc};

use crate::helpers::{json, spawn_app, ECHO};

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9_f64.max(b.abs() * 1e-9)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_recorded_and_billed() {
    let app = spawn_app().await;
    app.deploy_ok("small", &[("f.py", ECHO)]).await;
    app.deploy_ok(
        "big",
        &[
            (
                "f.py",
                "import time\ndef f(e):\n    time.sleep(0.15)\n    return e\n",
            ),
            ("ol.yaml", "memory_mb: 512\n"),
        ],
    )
    .await;
    for i in 0..3 {
        assert_eq!(app.run("small", &i.to_string()).await.status(), 200);
    }
    assert_eq!(app.run("big", "1").await.status(), 200);
    app.deploy_ok(
        "raises",
        &[("f.py", "def f(e):\n    raise ValueError('no')\n")],
    )
    .await;
    assert_eq!(app.run("raises", "1").await.status(), 500);

    app.flush().await;
    // The records.
    let (status, body) = json(app.get("/api/v1/functions/small/invocations?limit=2").await).await;
    assert_eq!(status, 200, "{body}");
    let records = body["invocations"].as_array().unwrap();
    assert_eq!(records.len(), 2, "limit is honoured");
    assert!(
        records[0]["started_at"].as_str() >= records[1]["started_at"].as_str(),
        "newest first"
    );
    for r in records {
        assert_eq!(r["status"], "success");
        assert_eq!(r["http_status"], 200);
        assert_eq!(r["memory_mb"], 128);
        assert_eq!(r["cold"], false);
        assert_eq!(r["billed_ms"].as_i64().unwrap() % 100, 0);
        assert!(r["billed_ms"].as_i64().unwrap() >= 100);
    }
    let big: (i64, i64) =
        sqlx::query_as("SELECT duration_ms, billed_ms FROM invocations WHERE function = 'big'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(
        big.0 >= 150,
        "measured duration covers the handler: {big:?}"
    );
    assert_eq!(
        big.1 as u64,
        (big.0 as u64).div_ceil(100).max(1) * 100,
        "rounded up to 100 ms"
    );
    let failed: String =
        sqlx::query_scalar("SELECT status FROM invocations WHERE function = 'raises'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(failed, "error");

    // The report, checked against the records by hand.
    let today = Utc::now().date_naive();
    let tomorrow = today + Days::new(1);
    let url = app.url(&format!("/api/v1/billing?from={today}&to={tomorrow}"));
    let (status, report) = json(app.http.get(url).send().await.unwrap()).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["currency"], "USD");
    assert_eq!(report["from"], today.to_string());
    let lines = report["functions"].as_array().unwrap();
    let names: Vec<_> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["big", "raises", "small"]);
    let rows: Vec<(String, i64, i32)> =
        sqlx::query_as("SELECT function, billed_ms, memory_mb FROM invocations")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let mut total_cost = 0.0;
    for line in lines {
        let name = line["name"].as_str().unwrap();
        let mine: Vec<_> = rows.iter().filter(|r| r.0 == name).collect();
        let billed: i64 = mine.iter().map(|r| r.1).sum();
        let gb_s: f64 = mine
            .iter()
            .map(|r| f64::from(r.2) / 1024.0 * r.1 as f64 / 1000.0)
            .sum();
        let cost = gb_s * 0.000_016_666_7 + mine.len() as f64 * 0.000_000_2;
        assert_eq!(line["invocations"], mine.len(), "{name}");
        assert_eq!(line["billed_ms"], billed, "{name}");
        assert!(
            approx(line["gb_seconds"].as_f64().unwrap(), gb_s),
            "{name}: {line}"
        );
        assert!(
            approx(line["cost"].as_f64().unwrap(), cost)
                || (line["cost"].as_f64().unwrap() - cost).abs() < 1e-8,
            "{name}: {line} vs {cost}"
        );
        total_cost += cost;
    }
    assert_eq!(report["total"]["invocations"], 5);
    assert_eq!(
        report["total"]["billed_ms"],
        rows.iter().map(|r| r.1).sum::<i64>()
    );
    assert!((report["total"]["cost"].as_f64().unwrap() - total_cost).abs() < 1e-8);

    // One function only.
    let url = app.url(&format!(
        "/api/v1/billing?from={today}&to={tomorrow}&function=small"
    ));
    let (_, report) = json(app.http.get(url).send().await.unwrap()).await;
    assert_eq!(report["functions"].as_array().unwrap().len(), 1);
    assert_eq!(report["total"]["invocations"], 3);

    // `to` is exclusive: a range ending today holds none of today's calls.
    let url = app.url(&format!(
        "/api/v1/billing?from={}&to={today}",
        today - Days::new(7)
    ));
    let (_, report) = json(app.http.get(url).send().await.unwrap()).await;
    assert_eq!(report["total"]["invocations"], 0);
    assert_eq!(report["functions"].as_array().unwrap().len(), 0);

    // Deleting a function keeps its bill.
    app.http
        .delete(app.url("/api/v1/functions/small"))
        .send()
        .await
        .unwrap();
    let (_, report) = json(app.get("/api/v1/billing").await).await;
    assert_eq!(report["total"]["invocations"], 5);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_report_parameters_are_400s() {
    let app = spawn_app().await;
    for query in [
        "from=yesterday",
        "to=2026-13-01",
        "from=2026-11-10&to=2026-11-01",
    ] {
        let (status, body) = json(app.get(&format!("/api/v1/billing?{query}")).await).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("YYYY-MM-DD")
                || body["error"]["code"] == "invalid_range",
            "{body}"
        );
    }
    app.stop().await;
}
