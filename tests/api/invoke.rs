//! Calls: `/run/{name}` and the function URL, errors, limits, updates.

use std::time::Duration;

use crate::helpers::{eventually, json, spawn_app, ECHO};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_returns_the_json_of_the_return_value() {
    let app = spawn_app().await;
    app.deploy_ok(
        "calc",
        &[(
            "f.py",
            "def f(event):\n    return {'sum': sum(event['xs']), 'n': len(event['xs'])}\n",
        )],
    )
    .await;
    let response = app.run("calc", r#"{"xs": [1, 2, 3.5]}"#).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().contains_key("x-request-id"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"sum": 6.5, "n": 3}));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_url_takes_any_method_and_path() {
    let app = spawn_app().await;
    app.deploy_ok("echo", &[("f.py", ECHO)]).await;
    for (method, path, body, expected) in [
        ("POST", "/fn/echo", r#"{"a": 1}"#, r#"{"a": 1}"#),
        ("PUT", "/fn/echo/deep/path", "[1, 2]", "[1, 2]"),
        ("GET", "/fn/echo?x=1", "", "null"),
        ("DELETE", "/fn/echo/x", "\"s\"", "\"s\""),
    ] {
        let response = app
            .http
            .request(method.parse().unwrap(), app.url(path))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method} {path}");
        assert_eq!(response.text().await.unwrap(), expected, "{method} {path}");
    }
    let (status, body) = json(
        app.http
            .post(app.url("/fn/echo"))
            .body("{nope")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_event");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_http_limits_methods() {
    let app = spawn_app().await;
    app.deploy_ok(
        "getter",
        &[
            ("f.py", ECHO),
            ("ol.yaml", "triggers:\n  http:\n    - method: GET\n"),
        ],
    )
    .await;
    assert_eq!(app.get("/fn/getter").await.status(), 200);
    let response = app
        .http
        .post(app.url("/fn/getter"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_exception_is_a_500_with_type_and_message() {
    let app = spawn_app().await;
    app.deploy_ok("boom", &[("f.py", "def f(event):\n    return 1 / event\n")])
        .await;
    let (status, body) = json(app.run("boom", "0").await).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "handler_error");
    assert_eq!(body["error"]["type"], "ZeroDivisionError");
    assert_eq!(
        body["error"]["message"],
        "ZeroDivisionError: division by zero"
    );
    // The container survives an exception and serves the next call.
    assert_eq!(app.run("boom", "4").await.text().await.unwrap(), "0.25");
    assert_eq!(app.containers("boom").await.len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_code_is_a_clear_load_error() {
    let app = spawn_app().await;
    app.deploy_ok("broken", &[("f.py", "def f(event)\n    return 1\n")])
        .await;
    let (status, body) = json(app.run("broken", "1").await).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "load_error");
    assert_eq!(body["error"]["type"], "SyntaxError");
    assert!(
        app.containers("broken").await.is_empty()
            || eventually(Duration::from_secs(5), || async {
                app.containers("broken").await.is_empty()
            })
            .await
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_function_is_a_404() {
    let app = spawn_app().await;
    let (status, body) = json(app.run("ghost", "1").await).await;
    assert_eq!(status, 404);
    assert!(body["error"]["message"].as_str().unwrap().contains("ghost"));
    let response = app.get("/fn/ghost/a").await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        app.count("SELECT count(*) FROM invocations WHERE function = 'ghost' AND status = 'not_found' AND NOT billed").await,
        2,
        "recorded, not billed"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_reaches_the_handler() {
    let app = spawn_app().await;
    app.deploy_ok(
        "env",
        &[
            (
                "f.py",
                "import os\ndef f(event):\n    return [os.environ.get(k) for k in event]\n",
            ),
            ("ol.yaml", "environment:\n  GREETING: hello\n  COUNT: 3\n"),
        ],
    )
    .await;
    let body = app
        .run("env", r#"["GREETING", "COUNT", "MISSING"]"#)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(body, r#"["hello", "3", null]"#);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_runs_the_new_code() {
    let app = spawn_app().await;
    app.deploy_ok("ver", &[("f.py", "def f(e):\n    return 'v1'\n")])
        .await;
    assert_eq!(app.run("ver", "").await.text().await.unwrap(), "\"v1\"");
    let old = app.containers("ver").await;
    assert_eq!(old.len(), 1);

    app.deploy_ok("ver", &[("f.py", "def f(e):\n    return 'v2'\n")])
        .await;
    assert_eq!(app.run("ver", "").await.text().await.unwrap(), "\"v2\"");
    let old_id = old[0].id.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.containers("ver").await.iter().all(|c| c.id != old_id)
        })
        .await,
        "the old version's container is removed"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_a_504_and_the_container_goes() {
    let app = spawn_app().await;
    app.deploy_ok(
        "slow",
        &[
            (
                "f.py",
                "import time\ndef f(event):\n    time.sleep(event)\n    return event\n",
            ),
            ("ol.yaml", "timeout_s: 1\n"),
        ],
    )
    .await;
    // Warm it up, so the timed call measures the handler alone.
    assert_eq!(app.run("slow", "0").await.status(), 200);
    let first = app.containers("slow").await[0].id.clone();

    let started = std::time::Instant::now();
    let (status, body) = json(app.run("slow", "30").await).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "timeout");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timeout of 1 s"),
        "{body}"
    );
    // The answer comes at the timeout, not before and not after the
    // container's removal: 1 s, plus at most 2 s for a warm call's overhead
    // on a loaded two-core machine (a warm call alone takes milliseconds).
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.containers("slow").await.iter().all(|c| c.id != first)
        })
        .await,
        "the timed-out container is destroyed"
    );
    // The next call gets a fresh container.
    assert_eq!(app.run("slow", "0").await.status(), 200);
    app.flush().await;
    let record: (String, i32) = sqlx::query_as(
        "SELECT status, http_status FROM invocations WHERE function = 'slow' AND status <> 'success'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(record, ("timeout".to_string(), 504));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_is_enforced() {
    let app = spawn_app().await;
    app.deploy_ok(
        "hog",
        &[
            (
                "f.py",
                "def f(mb):\n    block = bytearray(mb * 1024 * 1024)\n    return len(block)\n",
            ),
            ("ol.yaml", "memory_mb: 64\n"),
        ],
    )
    .await;
    assert_eq!(app.run("hog", "8").await.status(), 200);
    let id = app.containers("hog").await[0].id.clone().unwrap();
    let inspected = app
        .docker
        .inspect_container(
            &id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    assert_eq!(
        inspected.host_config.unwrap().memory,
        Some(64 * 1024 * 1024)
    );

    let (status, body) = json(app.run("hog", "256").await).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "out_of_memory");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("memory limit of 64 MB"),
        "{body}"
    );
    assert_eq!(
        app.run("hog", "8").await.status(),
        200,
        "a fresh container serves the next call"
    );
    app.stop().await;
}
