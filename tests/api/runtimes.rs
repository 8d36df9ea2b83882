//! Handler styles and packages on real Docker: OpenLambda's f(event), AWS
//! Lambda's lambda_handler(event, context) with the function URL payload
//! 2.0, WSGI and ASGI apps, and requirements.txt from PyPI into the shared
//! package cache.

use crate::helpers::{json, spawn_app, spawn_app_with, zip_of};

/// Echoes what the AWS-style handler saw, and sets status, headers, cookies.
const AWS_ECHO: &str = r#"
import json
def lambda_handler(event, context):
    seen = {k: event.get(k) for k in ("version", "routeKey", "rawPath", "rawQueryString",
            "cookies", "queryStringParameters", "body", "isBase64Encoded")}
    seen["headers"] = {k: v for k, v in event["headers"].items() if k.startswith("x-")}
    seen["http"] = event["requestContext"]["http"]
    seen["requestId"] = event["requestContext"]["requestId"]
    seen["context"] = {"function_name": context.function_name,
                       "memory_limit_in_mb": context.memory_limit_in_mb,
                       "aws_request_id": context.aws_request_id,
                       "remaining": context.get_remaining_time_in_millis()}
    return {"statusCode": 201, "headers": {"content-type": "application/json", "x-style": "aws"},
            "cookies": ["a=1; Path=/", "b=2"], "body": json.dumps(seen)}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_style_handler_gets_the_payload_and_sets_the_response() {
    let app = spawn_app().await;
    let deployed = app
        .deploy_ok("aws", &[("lambda_function.py", AWS_ECHO)])
        .await;
    assert_eq!(
        deployed["handler"], "lambda_function.lambda_handler",
        "picked by the entry file"
    );

    let response = app
        .http
        .post(app.url("/fn/aws/some/deep%20path?x=1&y=two&x=3"))
        .header("x-custom", "hello")
        .header("cookie", "c1=v1; c2=v2")
        .header("content-type", "application/json")
        .body(r#"{"k": "v"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-style"], "aws");
    let cookies: Vec<_> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2"]);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(seen["version"], "2.0");
    assert_eq!(seen["routeKey"], "$default");
    assert_eq!(seen["rawPath"], "/some/deep%20path");
    assert_eq!(seen["rawQueryString"], "x=1&y=two&x=3");
    assert_eq!(
        seen["queryStringParameters"],
        serde_json::json!({"x": "1,3", "y": "two"})
    );
    assert_eq!(seen["cookies"], serde_json::json!(["c1=v1", "c2=v2"]));
    assert_eq!(seen["headers"]["x-custom"], "hello");
    assert_eq!(seen["body"], r#"{"k": "v"}"#);
    assert_eq!(seen["isBase64Encoded"], false);
    assert_eq!(seen["http"]["method"], "POST");
    assert_eq!(seen["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(seen["http"]["protocol"], "HTTP/1.1");
    assert_eq!(seen["requestId"], request_id, "our request id");
    assert_eq!(seen["context"]["function_name"], "aws");
    assert_eq!(seen["context"]["memory_limit_in_mb"], 128);
    assert_eq!(seen["context"]["aws_request_id"], request_id);
    let remaining = seen["context"]["remaining"].as_i64().unwrap();
    assert!(remaining > 25_000 && remaining <= 30_000, "{remaining}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_bodies_both_ways_and_bare_results() {
    let app = spawn_app().await;
    let handler = r#"
import base64
def lambda_handler(event, context):
    if event["rawPath"] == "/bare":
        return {"just": ["a", "value"]}
    data = base64.b64decode(event["body"]) if event["isBase64Encoded"] else b""
    return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
            "body": base64.b64encode(data[::-1]).decode(), "isBase64Encoded": True}
"#;
    app.deploy_ok("bytes", &[("lambda_function.py", handler)])
        .await;
    let sent: Vec<u8> = (0..=255u8).collect();
    let response = app
        .http
        .put(app.url("/fn/bytes/blob"))
        .header("content-type", "application/octet-stream")
        .body(sent.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let got = response.bytes().await.unwrap();
    let mut reversed = sent;
    reversed.reverse();
    assert_eq!(got.as_ref(), reversed.as_slice());

    let (status, body) = json(app.get("/fn/bytes/bare").await).await;
    assert_eq!(status, 200, "a bare JSON value is a 200");
    assert_eq!(body, serde_json::json!({"just": ["a", "value"]}));
    // /run hands an AWS-style handler the JSON body as its event.
    let (status, body) = json(app.run("bytes", r#"{"rawPath": "/bare"}"#).await).await;
    assert_eq!((status, body["just"][1].as_str()), (200, Some("value")));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wsgi_and_asgi_apps_see_the_request_and_answer_it() {
    let app = spawn_app().await;
    // Each also says whether the runtime imported asyncio: only for an
    // ASGI app, so that every other container leaves its memory to the
    // handler.
    let wsgi = r#"
import sys
def app(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    text = "%s %s ?%s [%s] %s" % (environ["REQUEST_METHOD"], environ["PATH_INFO"],
        environ["QUERY_STRING"], environ.get("HTTP_X_THING", ""), body.decode())
    start_response("202 Accepted", [("Content-Type", "text/plain"), ("Set-Cookie", "w=1"),
                                    ("Set-Cookie", "w=2"),
                                    ("X-Asyncio", str("asyncio" in sys.modules))])
    return [text.encode()]
"#;
    let asgi = r#"
import sys
async def app(scope, receive, send):
    message = await receive()
    headers = dict(scope["headers"])
    text = "%s %s ?%s [%s] %s" % (scope["method"], scope["path"], scope["query_string"].decode(),
        headers.get(b"x-thing", b"").decode(), message["body"].decode())
    await send({"type": "http.response.start", "status": 418,
                "headers": [(b"content-type", b"text/plain"), (b"x-style", b"asgi"),
                            (b"x-asyncio", str("asyncio" in sys.modules).encode())]})
    await send({"type": "http.response.body", "body": text.encode()})
"#;
    app.deploy_ok(
        "wsgi",
        &[("web.py", wsgi), ("ol.yaml", "handler: web.app\n")],
    )
    .await;
    app.deploy_ok(
        "asgi",
        &[("web.py", asgi), ("ol.yaml", "handler: web.app\n")],
    )
    .await;
    for (name, status) in [("wsgi", 202), ("asgi", 418)] {
        let response = app
            .http
            .patch(app.url(&format!("/fn/{name}/items/7?sort=asc")))
            .header("x-thing", "yes")
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{name}");
        assert_eq!(response.headers()["content-type"], "text/plain", "{name}");
        let asyncio = if name == "asgi" { "True" } else { "False" };
        assert_eq!(response.headers()["x-asyncio"], asyncio, "{name}");
        if name == "wsgi" {
            let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
            assert_eq!(cookies.len(), 2, "repeated headers pass through");
        }
        let text = response.text().await.unwrap();
        assert_eq!(text, "PATCH /items/7 ?sort=asc [yes] payload", "{name}");
    }
    app.stop().await;
}

pub fn ca_bundle() -> Option<std::path::PathBuf> {
    std::env::var("OL_CA_BUNDLE")
        .or_else(|_| std::env::var("PIP_CERT"))
        .ok()
        .map(std::path::PathBuf::from)
        .or_else(|| Some("/etc/ssl/certs/ca-certificates.crt".into()))
        .filter(|p| p.exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirements_install_once_into_the_shared_cache() {
    let app = spawn_app_with(|s| s.ca_bundle = ca_bundle()).await;
    let handler = "import six\ndef f(event):\n    return {'version': six.__version__, 'file': six.__file__}\n";

    let first = app
        .deploy_ok(
            "uses-six",
            &[("f.py", handler), ("requirements.txt", "six\n")],
        )
        .await;
    let steps = first["packages"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{first}");
    assert_eq!(steps[0]["name"], "six");
    assert_eq!(steps[0]["status"], "installed");
    let version = steps[0]["version"].as_str().unwrap().to_string();
    let dir = format!("six-{version}");
    assert_eq!(
        first["installed_packages"],
        serde_json::json!([dir.clone()]),
        "resolved and stored"
    );
    assert!(app
        .data_dir
        .path()
        .join("packages/python")
        .join(&dir)
        .join("six.py")
        .is_file());

    let (status, body) = json(app.run("uses-six", "").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], version);
    assert!(
        body["file"]
            .as_str()
            .unwrap()
            .starts_with(&format!("/packages/{dir}/")),
        "{body}"
    );

    // A second function with the same requirements installs nothing.
    let second = app
        .deploy_ok(
            "also-six",
            &[("f.py", handler), ("requirements.txt", "six\n")],
        )
        .await;
    assert_eq!(second["packages"][0]["status"], "cached", "{second}");
    assert_eq!(json(app.run("also-six", "").await).await.0, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_package_fails_the_deploy_clearly() {
    let app = spawn_app_with(|s| s.ca_bundle = ca_bundle()).await;
    // The index must answer, or a missing package and an unreachable index
    // look alike (same 422): a package that exists installs first.
    let control = app
        .deploy(
            "reachable-index",
            zip_of(&[
                ("f.py", "def f(e): return 1\n"),
                ("requirements.txt", "six\n"),
            ]),
        )
        .await;
    let (status, body) = json(control).await;
    assert_eq!(
        status, 201,
        "the package index is not usable from the builder, so this test cannot \
         tell a missing package from an unreachable index: {body}"
    );
    let zip = zip_of(&[
        ("f.py", "def f(e): return 1\n"),
        ("requirements.txt", "no-such-package-openlambda-test==1.0\n"),
    ]);
    let (status, body) = json(app.deploy("broken-reqs", zip).await).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "package_install_failed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no-such-package-openlambda-test"),
        "names the package: {message}"
    );
    assert!(message.contains("pip said"), "{message}");
    assert!(
        message.contains("No matching distribution found for no-such-package-openlambda-test"),
        "the index answered that it has no such package: {message}"
    );
    for unreachable in [
        "NewConnectionError",
        "Failed to establish",
        "ProxyError",
        "SSLError",
    ] {
        assert!(
            !message.contains(unreachable),
            "index unreachable: {message}"
        );
    }
    assert_eq!(
        app.count("SELECT count(*) FROM functions WHERE name = 'broken-reqs'")
            .await,
        0,
        "nothing stored"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM code_versions").await,
        1,
        "only the control's code"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_handlers_with_vendored_modules() {
    let app = spawn_app().await;
    let index = r#"
const greet = require('greet');
exports.handler = async (event, context) => {
  if (event && event.boom) throw new RangeError('too far');
  if (!event || !event.requestContext) return { greeting: greet(event && event.name), fn: context.functionName };
  console.log('node saw', event.rawPath);
  const data = event.isBase64Encoded ? Buffer.from(event.body, 'base64') : Buffer.from(event.body || '');
  if (event.rawPath === '/binary') {
    return { statusCode: 200, headers: { 'content-type': 'application/octet-stream' },
             body: Buffer.from(data).reverse().toString('base64'), isBase64Encoded: true };
  }
  return {
    statusCode: 203,
    headers: { 'content-type': 'application/json', 'x-runtime': 'node' },
    cookies: ['n=1', 'm=2'],
    body: JSON.stringify({ path: event.rawPath, query: event.queryStringParameters, cookies: event.cookies,
                           custom: event.headers['x-custom'], method: event.requestContext.http.method,
                           body: data.toString(), remaining: context.getRemainingTimeInMillis() > 0,
                           greeting: greet('url') }),
  };
};
"#;
    let deployed = app
        .deploy_ok(
            "nodey",
            &[
                ("index.js", index),
                (
                    "package.json",
                    r#"{"name": "nodey", "dependencies": {"greet": "1.0.0"}}"#,
                ),
                (
                    "node_modules/greet/package.json",
                    r#"{"name": "greet", "main": "index.js"}"#,
                ),
                (
                    "node_modules/greet/index.js",
                    "module.exports = (who) => `hello ${who || 'world'}`;\n",
                ),
            ],
        )
        .await;
    assert_eq!(
        (deployed["runtime"].as_str(), deployed["handler"].as_str()),
        (Some("node"), Some("index.handler"))
    );

    let (status, body) = json(app.run("nodey", r#"{"name": "Ada"}"#).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"greeting": "hello Ada", "fn": "nodey"})
    );

    let response = app
        .http
        .post(app.url("/fn/nodey/a/b?x=1&x=2"))
        .header("x-custom", "c")
        .header("cookie", "k=v")
        .header("content-type", "text/plain")
        .body("text body")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 203);
    assert_eq!(response.headers()["x-runtime"], "node");
    assert_eq!(response.headers().get_all("set-cookie").iter().count(), 2);
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(seen["path"], "/a/b");
    assert_eq!(seen["query"], serde_json::json!({"x": "1,2"}));
    assert_eq!(seen["cookies"], serde_json::json!(["k=v"]));
    assert_eq!(
        (seen["custom"].as_str(), seen["method"].as_str()),
        (Some("c"), Some("POST"))
    );
    assert_eq!(
        (seen["body"].as_str(), seen["remaining"].as_bool()),
        (Some("text body"), Some(true))
    );
    assert_eq!(seen["greeting"], "hello url", "vendored node_modules load");

    let sent: Vec<u8> = (0..=255u8).collect();
    let response = app
        .http
        .post(app.url("/fn/nodey/binary"))
        .header("content-type", "application/octet-stream")
        .body(sent.clone())
        .send()
        .await
        .unwrap();
    let got = response.bytes().await.unwrap();
    assert_eq!(got.iter().rev().cloned().collect::<Vec<u8>>(), sent);

    let (status, body) = json(app.run("nodey", r#"{"boom": true}"#).await).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        (
            body["error"]["type"].as_str(),
            body["error"]["code"].as_str()
        ),
        (Some("RangeError"), Some("handler_error"))
    );

    app.flush().await;
    let (_, logs) = json(app.get("/api/v1/functions/nodey/logs").await).await;
    let all: Vec<&str> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["logs"].as_str())
        .collect();
    assert!(all.iter().any(|l| l.contains("node saw /a/b")), "{logs}");
    app.stop().await;
}
