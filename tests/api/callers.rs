//! Issue 11, on the real stack: credentials, scopes, sessions, function URL
//! auth, separate origins, bounded callers, the host allow-list and the
//! audit log.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    eventually, json, spawn_app, spawn_app_with, zip_of, TestApp, ADMIN_TOKEN, ECHO,
};

/// A client that sends no credential of its own.
fn anonymous() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn create_key(app: &TestApp, body: Value) -> (u16, Value) {
    json(
        app.http
            .post(app.url("/api/v1/keys"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn deploy_with(app: &TestApp, key: &str, name: &str) -> (u16, Value) {
    json(
        anonymous()
            .put(app.url(&format!("/api/v1/functions/{name}")))
            .bearer_auth(key)
            .body(zip_of(&[("f.py", ECHO)]))
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_key_configured_the_manager_makes_one_and_refuses_the_anonymous() {
    let app = spawn_app_with(|s| s.admin_token = None).await;
    let (status, body) = deploy_with(&app, "", "open").await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = json(
        anonymous()
            .put(app.url("/api/v1/functions/open"))
            .body(zip_of(&[("f.py", ECHO)]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("OL_API_KEY"),
        "{body}"
    );
    let stored: Vec<String> = sqlx::query_scalar("SELECT hash FROM api_keys WHERE name = 'admin'")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "an admin key was made");
    assert!(!stored[0].starts_with("ol_"), "only its hash is stored");

    // What README tells a locked-out operator: a new key from the database.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ol"))
        .args(["admin-key", "--rotate"])
        .env("DATABASE_URL", &app.settings.database_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("ol_"), "{key}");
    let (status, body) = deploy_with(&app, &key, "open").await;
    assert_eq!(status, 201, "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_insecure_opt_out_is_refused_off_loopback() {
    let (mut settings, _dir) = crate::helpers::test_settings().await;
    settings.insecure_no_auth = true;
    settings.listen = "0.0.0.0:0".parse().unwrap();
    let err = openlambda::app::Application::build(settings)
        .await
        .err()
        .expect("refused");
    let message = format!("{err:#}");
    assert!(
        message.contains("OL_INSECURE_NO_AUTH") && message.contains("loopback"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_have_scopes_and_revoking_is_immediate() {
    let app = spawn_app().await;
    let (status, read) = create_key(&app, json!({"name": "viewer", "scopes": ["read"]})).await;
    assert_eq!(status, 201, "{read}");
    let read_key = read["key"].as_str().unwrap().to_string();
    let (status, body) = deploy_with(&app, &read_key, "nope").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deploy scope"),
        "{body}"
    );
    let listed = anonymous()
        .get(app.url("/api/v1/functions"))
        .bearer_auth(&read_key)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);

    let (_, ci) = create_key(
        &app,
        json!({"name": "ci", "scopes": ["deploy"], "prefix": "team-"}),
    )
    .await;
    let ci_key = ci["key"].as_str().unwrap().to_string();
    assert_eq!(deploy_with(&app, &ci_key, "team-a").await.0, 201);
    let (status, body) = deploy_with(&app, &ci_key, "other").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("team-"),
        "{body}"
    );
    // deploy cannot manage keys
    let keys = anonymous()
        .get(app.url("/api/v1/keys"))
        .bearer_auth(&ci_key)
        .send()
        .await
        .unwrap();
    assert_eq!(keys.status(), 403);

    let (status, list) = json(app.get("/api/v1/keys").await).await;
    assert_eq!(status, 200);
    assert!(!list.to_string().contains(&read_key), "no secret is listed");
    assert!(list.to_string().contains("viewer"));
    let (status, _) = create_key(&app, json!({"name": "viewer", "scopes": ["read"]})).await;
    assert_eq!(status, 409);
    let (status, _) = create_key(&app, json!({"name": "x", "scopes": ["root"]})).await;
    assert_eq!(status, 400);
    let (status, _) = create_key(&app, json!({"name": "admin-token", "scopes": ["read"]})).await;
    assert_eq!(status, 400, "the manager's own names are reserved");

    let revoked = app
        .http
        .delete(app.url("/api/v1/keys/ci"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let (status, body) = deploy_with(&app, &ci_key, "team-b").await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
    assert_eq!(deploy_with(&app, "ol_wrong", "team-b").await.0, 401);
    app.stop().await;
}

async fn login(app: &TestApp, key: &str) -> reqwest::Response {
    anonymous()
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={key}"))
        .send()
        .await
        .unwrap()
}

fn session_pair(response: &reqwest::Response) -> String {
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("ol_session="), "{cookie}");
    assert!(
        !cookie.contains(ADMIN_TOKEN),
        "the key is never in the cookie: {cookie}"
    );
    cookie.split(';').next().unwrap().to_string()
}

async fn with_cookie(app: &TestApp, path: &str, pair: &str) -> u16 {
    anonymous()
        .get(app.url(path))
        .header("cookie", pair)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_sessions_end_at_logout_and_expiry() {
    let app = spawn_app_with(|s| s.session_ttl = Duration::from_secs(2)).await;
    let signed_in = login(&app, ADMIN_TOKEN).await;
    assert_eq!(signed_in.status(), 303);
    let secure = anonymous()
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", "https")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert!(secure.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Secure"));
    let pair = session_pair(&signed_in);
    assert_eq!(with_cookie(&app, "/", &pair).await, 200);
    assert_eq!(with_cookie(&app, "/api/v1/functions", &pair).await, 200);
    // Another origin (a function's page on the same host) cannot use it.
    let cross = anonymous()
        .delete(app.url("/api/v1/functions/x"))
        .header("cookie", &pair)
        .header("sec-fetch-site", "same-site")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    // Expiry.
    assert!(
        eventually(Duration::from_secs(10), || async {
            with_cookie(&app, "/api/v1/functions", &pair).await == 401
        })
        .await,
        "the session expires"
    );
    assert_eq!(with_cookie(&app, "/", &pair).await, 303);

    // Logout.
    let pair = session_pair(&login(&app, ADMIN_TOKEN).await);
    let out = anonymous()
        .post(app.url("/logout"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(with_cookie(&app, "/api/v1/functions", &pair).await, 401);

    // Failed logins are limited per address.
    for _ in 0..5 {
        assert_eq!(login(&app, "guess").await.status(), 401);
    }
    let limited = login(&app, ADMIN_TOKEN).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'login'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(audited, 3, "each login is audited");
    app.stop().await;
}

async fn call_with(app: &TestApp, name: &str, header: Option<(&str, String)>) -> u16 {
    let mut request = anonymous()
        .post(app.fn_url(&format!("/fn/{name}")))
        .body("1");
    if let Some((k, v)) = header {
        request = request.header(k, v);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_key_functions_need_one_of_their_invoke_keys() {
    let app = spawn_app().await;
    app.deploy_ok("locked", &[("f.py", ECHO), ("ol.yaml", "auth: key\n")])
        .await;
    assert_eq!(call_with(&app, "locked", None).await, 401);
    let run = anonymous()
        .post(app.fn_url("/run/locked"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 401, "/run is guarded the same way");
    let mut keys = Vec::new();
    for _ in 0..2 {
        let (status, body) = json(
            app.http
                .post(app.url("/api/v1/functions/locked/keys"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        keys.push((
            body["id"].as_str().unwrap().to_string(),
            body["key"].as_str().unwrap().to_string(),
        ));
    }
    let bearer = |k: &str| Some(("authorization", format!("Bearer {k}")));
    assert_eq!(call_with(&app, "locked", bearer(&keys[0].1)).await, 200);
    assert_eq!(
        call_with(&app, "locked", Some(("x-ol-key", keys[1].1.clone()))).await,
        200
    );
    assert_eq!(
        call_with(&app, "locked", bearer(ADMIN_TOKEN)).await,
        401,
        "an API key is not an invoke key"
    );
    // An invoke key grants nothing else.
    let (status, _) = deploy_with(&app, &keys[0].1, "locked").await;
    assert_eq!(status, 401);
    // Rotation: the first goes, the second still works.
    let gone = app
        .http
        .delete(app.url(&format!("/api/v1/functions/locked/keys/{}", keys[0].0)))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    assert_eq!(call_with(&app, "locked", bearer(&keys[0].1)).await, 401);
    assert_eq!(call_with(&app, "locked", bearer(&keys[1].1)).await, 200);
    // PATCH opens it.
    let (status, body) = json(
        app.http
            .patch(app.url("/api/v1/functions/locked"))
            .json(&json!({"auth": "none"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["auth"].as_str()),
        (200, Some("none")),
        "{body}"
    );
    assert_eq!(call_with(&app, "locked", None).await, 200);
    app.stop().await;
}

/// An AWS-style handler that answers what it was sent, and tries to set the
/// dashboard's session cookie.
const SNOOP: &str = r#"
import json
def lambda_handler(event, context):
    return {
        "statusCode": 200,
        "headers": {"Set-Cookie": "ol_session=planted; Path=/", "X-Mine": "1"},
        "cookies": ["ol_session=again; Path=/", "theirs=ok"],
        "body": json.dumps({"headers": event.get("headers"), "cookies": event.get("cookies")}),
    }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_origins_get_no_platform_credential_and_set_no_session() {
    let app = spawn_app().await;
    let deployed = app
        .deploy_ok("snoop", &[("lambda_function.py", SNOOP)])
        .await;
    assert_eq!(deployed["url"], format!("http://{}/fn/snoop", app.fn_addr));
    // Function URLs live only on the function listener, and management
    // only on the management listener.
    let on_management = app
        .http
        .get(format!("http://{}/fn/snoop", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(on_management.status(), 404);
    assert_eq!(
        anonymous()
            .get(app.fn_url("/api/v1/functions"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        anonymous()
            .get(app.fn_url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let pair = session_pair(&login(&app, ADMIN_TOKEN).await);
    let response = anonymous()
        .get(app.fn_url("/fn/snoop"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("cookie", format!("{pair}; mine=1"))
        .header("x-ol-key", "ol_something")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let set_cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(response.headers()["x-mine"], "1");
    let seen: Value = response.json().await.unwrap();
    let text = seen.to_string();
    assert!(!text.contains(ADMIN_TOKEN), "{text}");
    assert!(!text.contains(pair.split('=').nth(1).unwrap()), "{text}");
    assert!(!text.to_lowercase().contains("x-ol-key"), "{text}");
    assert!(
        text.contains("mine=1"),
        "the caller's own cookie passes: {text}"
    );
    assert!(
        set_cookies.iter().all(|c| !c.starts_with("ol_session")),
        "{set_cookies:?}"
    );
    assert!(
        set_cookies.iter().any(|c| c.starts_with("theirs=ok")),
        "{set_cookies:?}"
    );
    // A caller's own Authorization for the function passes.
    let seen: Value = anonymous()
        .get(app.fn_url("/fn/snoop"))
        .header("authorization", "Bearer for-the-function")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(seen.to_string().contains("for-the-function"), "{seen}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_host_names_are_refused_on_the_management_listener() {
    let app = spawn_app_with(|s| s.allowed_hosts = vec!["ol.example.com".into()]).await;
    let evil = app
        .http
        .get(app.url("/api/v1/functions"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 421);
    let (_, body) = json(evil).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("OL_ALLOWED_HOSTS"),
        "{body}"
    );
    let page = anonymous()
        .get(app.url("/login"))
        .header("host", "evil.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 421);
    let listed = app
        .http
        .get(app.url("/api/v1/functions"))
        .header("host", "ol.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert_eq!(
        app.get("/api/v1/functions").await.status(),
        200,
        "loopback names always"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_names_key_address_and_change() {
    let app = spawn_app().await;
    let (_, ci) = create_key(&app, json!({"name": "ci", "scopes": ["deploy"]})).await;
    let ci_key = ci["key"].as_str().unwrap().to_string();
    assert_eq!(deploy_with(&app, &ci_key, "audited").await.0, 201);
    assert_eq!(deploy_with(&app, ADMIN_TOKEN, "audited").await.0, 200);
    let patched = app
        .http
        .patch(app.url("/api/v1/functions/audited"))
        .json(&json!({"max_concurrency": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let page = app.get("/functions/audited").await.text().await.unwrap();
    assert!(
        page.contains("History") && page.contains("ci") && page.contains("patch"),
        "{page}"
    );
    let deleted = anonymous()
        .delete(app.url("/api/v1/functions/audited"))
        .bearer_auth(&ci_key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    let (status, log) = json(app.get("/api/v1/audit?function=audited").await).await;
    assert_eq!(status, 200, "{log}");
    let entries = log["entries"].as_array().unwrap();
    let seen: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
                e["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("delete", "ci", "127.0.0.1"),
            ("patch", "admin-token", "127.0.0.1"),
            ("update", "admin-token", "127.0.0.1"),
            ("deploy", "ci", "127.0.0.1"),
        ]
    );
    assert_eq!(entries[1]["detail"]["max_concurrency"], 3);
    assert_eq!(entries[3]["detail"]["version"].as_str().unwrap().len(), 64);
    let (_, all) = json(app.get("/api/v1/audit").await).await;
    assert!(all.to_string().contains("key_created"), "{all}");
    let read = anonymous()
        .get(app.url("/api/v1/audit"))
        .bearer_auth(&ci_key)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 403, "the audit log is for admins");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_answers_429_with_retry_after() {
    let app = spawn_app().await;
    app.deploy_ok(
        "limited",
        &[
            ("f.py", ECHO),
            ("ol.yaml", "rate_limit: {per_second: 0.01, burst: 2}\n"),
        ],
    )
    .await;
    assert_eq!(call_with(&app, "limited", None).await, 200);
    assert_eq!(call_with(&app, "limited", None).await, 200);
    let third = anonymous()
        .post(app.fn_url("/fn/limited"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
    let after: u64 = third.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&after), "{after}");
    let (_, body) = json(third).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rate_limit"),
        "{body}"
    );
    let patch = |body: Value| {
        app.http
            .patch(app.url("/api/v1/functions/limited"))
            .json(&body)
            .send()
    };
    assert_eq!(patch(json!({"auth": "open"})).await.unwrap().status(), 400);
    let bad = patch(json!({"rate_limit": {"per_second": 0}}))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let (status, body) = json(patch(json!({"rate_limit": null})).await.unwrap()).await;
    assert_eq!((status, &body["rate_limit"]), (200, &Value::Null), "{body}");
    assert_eq!(
        call_with(&app, "limited", None).await,
        200,
        "the limit is gone"
    );
    app.stop().await;
}

/// Reads until the server closes the connection; false if it stays open
/// past `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_leave_health_fast_and_are_closed() {
    let app = spawn_app_with(|s| {
        s.header_timeout = Duration::from_secs(3);
        s.body_timeout = Duration::from_secs(3);
    })
    .await;
    app.deploy_ok("echo", &[("f.py", ECHO)]).await;
    let mut idle = Vec::new();
    for i in 0..2000 {
        let addr = if i % 2 == 0 { app.addr } else { app.fn_addr };
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // A slow body: headers promise 1000 bytes, 10 arrive.
    let mut slow = TcpStream::connect(app.fn_addr).await.unwrap();
    slow.write_all(b"POST /fn/echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let health = anonymous().get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // A keep-alive connection that goes quiet after a request closes too.
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 256];
    let n = kept.read(&mut first).await.unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    assert!(
        closed_within(&mut kept, Duration::from_secs(20)).await,
        "idle keep-alive closed"
    );
    for stream in idle.iter_mut().step_by(97) {
        assert!(
            closed_within(stream, Duration::from_secs(20)).await,
            "idle connection closed"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_bound_get_a_503_at_once() {
    let app = spawn_app_with(|s| s.max_connections = 20).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    let mut extra = TcpStream::connect(app.addr).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(2), extra.read_to_string(&mut answer))
        .await
        .expect("answered at once")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(held);
    assert!(
        eventually(Duration::from_secs(5), || async {
            anonymous()
                .get(app.url("/healthz"))
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        })
        .await
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_share_one_metric_series() {
    let app = spawn_app().await;
    let client = anonymous();
    let calls = (0..2000).map(|i| {
        let client = client.clone();
        let url = app.fn_url(&format!("/fn/ghost-{i}"));
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    });
    let statuses = futures_util::stream::iter(calls)
        .buffer_unordered(32)
        .collect::<Vec<u16>>()
        .await;
    assert!(statuses.iter().all(|s| *s == 404));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(!metrics.contains("ghost-"), "no series per unknown name");
    assert!(
        metrics.contains(
            r#"openlambda_invocations_total{function="(unknown)",status="not_found"} 2000"#
        ),
        "{metrics}"
    );
    app.stop().await;
}

/// Runs `ol ARGS` against `app` with `key` in OL_API_KEY.
fn ol(app: &TestApp, key: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ol"))
        .args(args)
        .env("OL_URL", format!("http://{}", app.addr))
        .env("OL_API_KEY", key)
        .env_remove("OL_ADMIN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_keys_and_shows_the_audit_log() {
    let app = spawn_app().await;
    let (ok, key, err) = ol(
        &app,
        ADMIN_TOKEN,
        &[
            "keys", "create", "ci", "--scope", "deploy", "--prefix", "team-",
        ],
    );
    assert!(ok, "{err}");
    assert!(key.starts_with("ol_"), "{key}");
    let (ok, listed, _) = ol(&app, ADMIN_TOKEN, &["keys", "list"]);
    assert!(
        ok && listed.contains("ci") && listed.contains("team-"),
        "{listed}"
    );
    assert!(!listed.contains(&key), "{listed}");
    let (ok, _, err) = ol(&app, &key, &["keys", "list"]);
    assert!(!ok && err.contains("admin scope"), "{err}");
    let (ok, log, err) = ol(&app, ADMIN_TOKEN, &["audit"]);
    assert!(ok && log.contains("key_created"), "{log} {err}");
    let (ok, _, err) = ol(&app, ADMIN_TOKEN, &["keys", "revoke", "ci"]);
    assert!(ok, "{err}");
    let (ok, _, err) = ol(&app, &key, &["list"]);
    assert!(!ok && err.contains("revoked"), "{err}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_keys_is_limited_per_address() {
    let app = spawn_app().await;
    for _ in 0..5 {
        let r = anonymous()
            .get(app.url("/api/v1/functions"))
            .bearer_auth("guess")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = anonymous()
        .get(app.url("/api/v1/functions"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "even a right key waits: a guess must not be confirmed"
    );
    assert!(r.headers().contains_key("retry-after"));
    app.stop().await;
}
