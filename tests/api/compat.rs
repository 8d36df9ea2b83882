//! OpenLambda's conventions, as its own examples and tests use them, with
//! handlers written here: `/run/NAME/...` as a pass-through to web apps
//! (`SCRIPT_NAME` the prefix), `app` in `f.py`, `OL_ENTRY_FILE` and
//! `OL_WSGI_ENTRY`, names with `_`, a text 405 on `/run`, `{}` for an empty
//! body, raised maxima, and apps that print and stream keeping one framing.

use crate::helpers::{json, spawn_app, spawn_app_with};

/// A WSGI app named `app` in `f.py` (no `f`): answers what it was asked.
const WSGI_ECHO: &str = r#"
import json

def app(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    seen = {"method": environ["REQUEST_METHOD"], "script": environ["SCRIPT_NAME"],
            "path": environ["PATH_INFO"], "query": environ["QUERY_STRING"],
            "body": body.decode()}
    status = "418 I'm a teapot" if environ["PATH_INFO"] == "/" else "200 OK"
    start_response(status, [("Content-Type", "application/json"), ("A", "B")])
    return [json.dumps(seen).encode()]
"#;

/// An ASGI app whose `__call__` is async, named `app` in `f.py`.
const ASGI_ECHO: &str = r#"
import json

class Echo:
    async def __call__(self, scope, receive, send):
        message = await receive()
        seen = {"method": scope["method"], "script": scope["root_path"], "path": scope["path"],
                "body": message["body"].decode()}
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(seen).encode()})

app = Echo()
"#;

async fn call(
    app: &crate::helpers::TestApp,
    method: reqwest::Method,
    path: &str,
    body: &str,
) -> reqwest::Response {
    app.http
        .request(method, app.url(path))
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_hands_web_apps_the_request_with_its_prefix() {
    use reqwest::Method;
    let app = spawn_app().await;
    let deployed = app.deploy_ok("web", &[("f.py", WSGI_ECHO)]).await;
    assert_eq!(
        deployed["handler"], "f.f",
        "f.py with no f falls back to app"
    );
    app.deploy_ok("asgi", &[("f.py", ASGI_ECHO)]).await;

    // GET with no body, as OpenLambda's test of flask-test sends it.
    let response = call(&app, Method::GET, "/run/web", "").await;
    assert_eq!(response.status(), 418, "the app's status passes through");
    assert_eq!(
        response.headers()["a"],
        "B",
        "the app's headers pass through"
    );
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(seen["script"], "/run/web");
    assert_eq!(seen["path"], "/");

    for (method, path, body, script, below, query) in [
        (Method::GET, "/run/web/", "", "/run/web", "/", ""),
        (
            Method::GET,
            "/run/web/info?x=1",
            "",
            "/run/web",
            "/info",
            "x=1",
        ),
        (
            Method::PUT,
            "/run/web/a/b",
            "plain text",
            "/run/web",
            "/a/b",
            "",
        ),
        (Method::GET, "/run/web/a%20b", "", "/run/web", "/a b", ""),
        (Method::DELETE, "/fn/web/", "", "/fn/web", "/", ""),
        (Method::POST, "/fn/web/x", "not json", "/fn/web", "/x", ""),
    ] {
        let response = call(&app, method.clone(), path, body).await;
        let (status, seen) = json(response).await;
        assert!(
            matches!(status, 200 | 418),
            "{method} {path}: {status} {seen}"
        );
        assert_eq!(seen["method"], method.as_str(), "{path}");
        assert_eq!(seen["script"], script, "{path}: SCRIPT_NAME");
        assert_eq!(seen["path"], below, "{path}: PATH_INFO");
        assert_eq!(seen["query"], query, "{path}");
        assert_eq!(seen["body"], body, "{path}: the body as sent");
    }

    for (path, script) in [
        ("/run/asgi/it%65ms", "/run/asgi"),
        ("/fn/asgi/items", "/fn/asgi"),
    ] {
        let (status, seen) = json(call(&app, Method::PATCH, path, "raw").await).await;
        assert_eq!(status, 200, "{path}: {seen}");
        assert_eq!(seen["script"], script, "{path}: root_path");
        assert_eq!(
            (seen["path"].as_str(), seen["body"].as_str()),
            (Some("/items"), Some("raw"))
        );
    }
    app.stop().await;
}

/// Prints, sets its own Content-Length, writes through `write` and streams
/// the rest from a generator that prints between chunks.
const WSGI_STREAM: &str = r#"
def app(environ, start_response):
    print("wsgi says hello")
    chunks = [b"one,", b"two,", b"three"]
    write = start_response("200 OK", [("Content-Type", "text/plain"),
                                      ("Content-Length", str(5 + sum(map(len, chunks))))])
    write(b"zero,")
    def stream():
        for chunk in chunks:
            print("sending", chunk.decode())
            yield chunk
    return stream()
"#;

/// Prints and streams its body in parts, with its own Content-Length.
const ASGI_STREAM: &str = r#"
async def app(scope, receive, send):
    await receive()
    print("asgi says hello")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"15")]})
    await send({"type": "http.response.body", "body": b"hello, ", "more_body": True})
    print("between parts")
    await send({"type": "http.response.body", "body": b"streamed", "more_body": False})
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_that_print_and_stream_keep_one_framing() {
    let app = spawn_app().await;
    app.deploy_ok("wsgi-stream", &[("f.py", WSGI_STREAM)]).await;
    app.deploy_ok("asgi-stream", &[("f.py", ASGI_STREAM)]).await;
    for (name, body, printed) in [
        (
            "wsgi-stream",
            "zero,one,two,three",
            "wsgi says hello\nsending one,\nsending two,\nsending three\n",
        ),
        (
            "asgi-stream",
            "hello, streamed",
            "asgi says hello\nbetween parts\n",
        ),
    ] {
        let mut ids = Vec::new();
        for path in [format!("/run/{name}"), format!("/fn/{name}/")] {
            let response = app.get(&path).await;
            assert_eq!(response.status(), 200, "{path}");
            let length = response.headers()["content-length"]
                .to_str()
                .unwrap()
                .to_string();
            ids.push(
                response.headers()["x-request-id"]
                    .to_str()
                    .unwrap()
                    .to_string(),
            );
            let text = response.text().await.unwrap();
            assert_eq!(text, body, "{path}: the body only, the output kept apart");
            assert_eq!(length, body.len().to_string(), "{path}: one Content-Length");
        }
        let containers = app.containers(name).await;
        assert_eq!(
            containers.len(),
            1,
            "{name}: the container was not replaced"
        );
        app.flush().await;
        for id in ids {
            let url = app.url(&format!("/api/v1/functions/{name}/logs?request_id={id}"));
            let (status, logs) = json(app.http.get(url).send().await.unwrap()).await;
            assert_eq!(status, 200, "{logs}");
            assert_eq!(
                logs["logs"][0]["logs"], printed,
                "{name}: the printed output"
            );
        }
    }
    app.stop().await;
}

/// Not named `app`: `OL_WSGI_ENTRY` names it, and `OL_ENTRY_FILE` its file.
const NAMED_WSGI: &str = r#"
def my_web(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("entry %s%s" % (environ["SCRIPT_NAME"], environ["PATH_INFO"])).encode()]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ol_yaml_entry_settings_names_with_underscores_and_run_405s() {
    let app = spawn_app().await;
    let yaml = "triggers:\n  http:\n    - method: GET\n    - method: POST\n\
                environment:\n  OL_ENTRY_FILE: \"main.py\"\n  OL_WSGI_ENTRY: \"my_web\"\n";
    let deployed = app
        .deploy_ok("wsgi_entry", &[("main.py", NAMED_WSGI), ("ol.yaml", yaml)])
        .await;
    assert_eq!(deployed["handler"], "main.my_web");
    let app_yaml = "environment:\n  OL_ENTRY_FILE: app.py\n";
    app.deploy_ok(
        "flask_entry",
        &[("app.py", WSGI_ECHO), ("ol.yaml", app_yaml)],
    )
    .await;

    let response = app.get("/run/wsgi_entry/info").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "entry /run/wsgi_entry/info");
    let (status, seen) = json(app.get("/run/flask_entry/info").await).await;
    assert_eq!(
        (status, seen["path"].as_str()),
        (200, Some("/info")),
        "{seen}"
    );

    // A method outside triggers.http: OpenLambda's text naming the allowed
    // ones on /run (its tests compare it), JSON on the function URL.
    let response = call(&app, reqwest::Method::PUT, "/run/wsgi_entry", "").await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, POST");
    let text = response.text().await.unwrap();
    assert_eq!(
        text,
        "HTTP method not allowed. Sent: PUT, Allowed: [GET POST]\n"
    );
    let (status, body) = json(call(&app, reqwest::Method::PUT, "/fn/wsgi_entry/x", "").await).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );

    // A name that starts with '_' is still refused, saying what is allowed.
    let (status, body) = json(
        app.deploy("_x", crate::helpers::zip_of(&[("f.py", "")]))
            .await,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("'_'"),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_gives_f_its_conventions_and_every_error_a_body() {
    use reqwest::Method;
    let app = spawn_app().await;
    app.deploy_ok("echo", &[("f.py", "def f(event):\n    return event\n")])
        .await;
    for method in [Method::GET, Method::POST, Method::PUT] {
        let (status, body) = json(call(&app, method.clone(), "/run/echo", "").await).await;
        assert_eq!(
            (status, body),
            (200, serde_json::json!({})),
            "{method}: empty is {{}}"
        );
    }
    let (status, body) = json(app.run("echo", "[1, 2]").await).await;
    assert_eq!((status, body), (200, serde_json::json!([1, 2])));
    // The function URL keeps AWS's convention: an empty body is null.
    let (status, body) = json(call(&app, Method::POST, "/fn/echo", "").await).await;
    assert_eq!((status, body), (200, serde_json::Value::Null));

    let (status, body) = json(app.run("echo", "not json").await).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("must be JSON"),
        "{body}"
    );
    // Every 404 on these paths says what to do.
    for (path, hint) in [
        ("/run/", "/run/NAME"),
        ("/fn", "/run/NAME"),
        ("/run/nobody/x", "deploy it"),
        ("/run/nobody/", "deploy it"),
        ("/fn/nobody/", "deploy it"),
    ] {
        let (status, body) = json(app.get(path).await).await;
        assert_eq!(status, 404, "{path}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(hint), "{path}: {body}");
    }

    // The default maximum timeout is AWS's 900 s, and the error names the
    // setting that raises it.
    let slow = [
        ("f.py", "def f(event):\n    return 1\n"),
        ("ol.yaml", "timeout_s: 3600\n"),
    ];
    let (status, body) = json(app.deploy("slow", crate::helpers::zip_of(&slow)).await).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("OL_MAX_TIMEOUT_S"),
        "{body}"
    );
    app.stop().await;

    // An operator who raised the maxima gets OpenLambda's pandas-tests limits.
    let app = spawn_app_with(|s| {
        s.packages.limits.max_timeout_s = 3600;
        s.packages.limits.max_memory_mb = 2000;
    })
    .await;
    let yaml = "timeout_s: 3600\nmemory_mb: 2000\n";
    let deployed = app
        .deploy_ok(
            "slow",
            &[("f.py", "def f(event):\n    return 1\n"), ("ol.yaml", yaml)],
        )
        .await;
    assert_eq!(
        (
            deployed["timeout_ms"].as_i64(),
            deployed["memory_mb"].as_i64()
        ),
        (Some(3_600_000), Some(2000))
    );
    let (status, body) = json(app.run("slow", "").await).await;
    assert_eq!((status, body), (200, serde_json::json!(1)));
    app.stop().await;
}

/// OpenLambda sets limits worker-wide (its package tests: 2000 MB, 3600 s)
/// and its examples carry no `ol.yaml`: the operator's defaults apply to
/// a zip that names none, and what an `ol.yaml` names still wins.
#[tokio::test]
async fn operator_defaults_apply_to_a_zip_without_ol_yaml() {
    let app = spawn_app_with(|s| {
        s.packages.limits.max_timeout_s = 3600;
        s.packages.limits.max_memory_mb = 2000;
        s.packages.limits.default_timeout_s = 3600;
        s.packages.limits.default_memory_mb = 2000;
    })
    .await;
    let limits =
        |body: &serde_json::Value| (body["timeout_ms"].as_i64(), body["memory_mb"].as_i64());
    let bare = app
        .deploy_ok("bare", &[("f.py", "def f(event):\n    return 1\n")])
        .await;
    assert_eq!(limits(&bare), (Some(3_600_000), Some(2000)), "{bare}");
    let named = app
        .deploy_ok(
            "named",
            &[
                ("f.py", "def f(event):\n    return 1\n"),
                ("ol.yaml", "memory_mb: 256\n"),
            ],
        )
        .await;
    assert_eq!(limits(&named), (Some(3_600_000), Some(256)), "{named}");
    let (status, body) = json(app.run("bare", "").await).await;
    assert_eq!((status, body), (200, serde_json::json!(1)));
    app.stop().await;
}
