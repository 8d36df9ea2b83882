//! `PUT/GET/DELETE /api/v1/functions/{name}`: deploys, and every way an
//! upload is refused, with nothing stored.

use std::io::{Cursor, Write};

use crate::helpers::{json, spawn_app, spawn_app_with, zip_of, TestApp, ECHO};
use zip::write::SimpleFileOptions;

/// A refused upload leaves no row, no file and no container.
async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(app.count("SELECT count(*) FROM functions").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM code_versions").await, 0);
    let code = app.data_dir.path().join("code");
    let files: Vec<_> = match std::fs::read_dir(&code) {
        Ok(dir) => dir.map(|e| e.unwrap().file_name()).collect(),
        Err(_) => Vec::new(),
    };
    assert!(
        files.is_empty(),
        "files left in {}: {files:?}",
        code.display()
    );
    assert!(app.all_containers().await.is_empty());
}

async fn refused(app: &TestApp, name: &str, zip: Vec<u8>, status: u16, code: &str) -> String {
    let (got, body) = json(app.deploy(name, zip).await).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap().to_string();
    assert_nothing_stored(app).await;
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_creates_then_updates() {
    let app = spawn_app().await;
    let zip = zip_of(&[("f.py", ECHO)]);
    let sha = openlambda::code::hex_sha256(&zip);

    let (status, body) = json(app.deploy("hello", zip.clone()).await).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "hello");
    assert_eq!(body["version"], sha);
    assert_eq!(body["runtime"], "python");
    assert_eq!(body["handler"], "f.f");
    assert_eq!(body["memory_mb"], 128);
    assert_eq!(body["timeout_ms"], 30_000);
    assert_eq!(body["url"], format!("http://{}/fn/hello", app.fn_addr));
    // Content-addressed: the unpacked code sits under its sha256.
    assert!(app
        .data_dir
        .path()
        .join("code")
        .join(&sha)
        .join("f.py")
        .is_file());

    let (status, body) = json(app.deploy("hello", zip).await).await;
    assert_eq!(status, 200, "same zip again is an update: {body}");
    let zip2 = zip_of(&[
        ("f.py", "def f(e):\n    return 2\n"),
        ("ol.yaml", "memory_mb: 256\ntimeout_s: 3\n"),
    ]);
    let (status, body) = json(app.deploy("hello", zip2).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["memory_mb"], 256);
    assert_eq!(body["timeout_ms"], 3000);
    assert_ne!(body["version"], sha);
    assert_eq!(app.count("SELECT count(*) FROM code_versions").await, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_list_and_delete() {
    let app = spawn_app().await;
    app.deploy_ok("one", &[("f.py", ECHO)]).await;
    app.deploy_ok("two", &[("f.py", ECHO)]).await;

    let (status, body) = json(app.get("/api/v1/functions").await).await;
    assert_eq!(status, 200);
    let names: Vec<_> = body["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].clone())
        .collect();
    assert_eq!(names, ["one", "two"]);

    let (status, body) = json(app.get("/api/v1/functions/one").await).await;
    assert_eq!((status, body["name"].as_str()), (200, Some("one")));

    // A call makes a container and a record; delete removes the container,
    // keeps the record.
    assert_eq!(app.run("one", "1").await.status(), 200);
    assert_eq!(app.containers("one").await.len(), 1);
    let response = app
        .http
        .delete(app.url("/api/v1/functions/one"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(
        crate::helpers::eventually(std::time::Duration::from_secs(10), || async {
            app.containers("one").await.is_empty()
        })
        .await,
        "delete removes the function's containers"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM invocations WHERE function = 'one'")
            .await,
        1
    );

    for (method, path) in [
        ("GET", "/api/v1/functions/one"),
        ("DELETE", "/api/v1/functions/one"),
    ] {
        let response = app
            .http
            .request(method.parse().unwrap(), app.url(path))
            .send()
            .await
            .unwrap();
        let (status, body) = json(response).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    assert_eq!(app.run("one", "1").await.status(), 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_bad_names() {
    let app = spawn_app().await;
    let too_long = "a".repeat(64);
    for name in ["Hello", "a_b", too_long.as_str(), "-x"] {
        let message = refused(&app, name, zip_of(&[("f.py", ECHO)]), 400, "invalid_name").await;
        assert!(
            message.contains("lowercase letters, digits and '-'"),
            "{message}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_bad_archives() {
    let app = spawn_app().await;
    let message = refused(&app, "x", b"def f(e): pass".to_vec(), 422, "not_a_zip").await;
    assert!(message.contains("not a zip"), "{message}");

    let message = refused(
        &app,
        "x",
        zip_of(&[("main.py", ECHO), ("util.py", "")]),
        422,
        "handler_not_found",
    )
    .await;
    assert!(
        message.contains("f.py not found in the zip; found: main.py, util.py"),
        "{message}"
    );

    let message = refused(
        &app,
        "x",
        zip_of(&[("f.py", ECHO), ("../escape.py", "")]),
        422,
        "unsafe_path",
    )
    .await;
    assert!(message.contains("'..'"), "{message}");
    let message = refused(
        &app,
        "x",
        zip_of(&[("f.py", ECHO), ("/etc/cron.d/x", "")]),
        422,
        "unsafe_path",
    )
    .await;
    assert!(message.contains("absolute path"), "{message}");

    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    w.start_file("f.py", SimpleFileOptions::default()).unwrap();
    w.write_all(ECHO.as_bytes()).unwrap();
    w.add_symlink("secrets", "/etc/shadow", SimpleFileOptions::default())
        .unwrap();
    let zip = w.finish().unwrap().into_inner();
    let message = refused(&app, "x", zip, 422, "unsafe_path").await;
    assert!(message.contains("symlink"), "{message}");

    let response = app
        .http
        .put(app.url("/api/v1/functions/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "an empty body is refused");
    assert_nothing_stored(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_bad_manifests() {
    let app = spawn_app().await;
    for (yaml, needle) in [
        ("memory_mb: [", "ol.yaml is not valid"),
        ("colour: blue", "unknown field `colour`"),
        ("memory_mb: 20000", "memory_mb 20000 is out of range"),
        ("timeout_s: 0", "timeout_s 0 is out of range"),
        ("runtime: cobol", "not supported"),
    ] {
        let zip = zip_of(&[("f.py", ECHO), ("ol.yaml", yaml)]);
        let message = refused(&app, "x", zip, 422, "invalid_manifest").await;
        assert!(message.contains(needle), "{yaml}: {message}");
    }
    // A handler named in ol.yaml must exist.
    let zip = zip_of(&[("f.py", ECHO), ("ol.yaml", "handler: main.handle")]);
    let message = refused(&app, "x", zip, 422, "handler_not_found").await;
    assert!(message.contains("main.py not found"), "{message}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_oversized_uploads() {
    let app = spawn_app().await;
    // Over 50 MiB zipped: incompressible bytes, stored as they are.
    let mut noise = vec![0u8; 51 * 1024 * 1024];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in noise.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let message = refused(&app, "big", noise, 413, "too_large").await;
    assert!(message.contains("50 MiB"), "{message}");

    // Over 250 MiB unzipped: a small zip of zeros (a zip bomb, mildly).
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    w.start_file("f.py", SimpleFileOptions::default()).unwrap();
    w.write_all(ECHO.as_bytes()).unwrap();
    w.start_file("zeros.bin", SimpleFileOptions::default())
        .unwrap();
    let block = vec![0u8; 1024 * 1024];
    for _ in 0..251 {
        w.write_all(&block).unwrap();
    }
    let zip = w.finish().unwrap().into_inner();
    assert!(zip.len() < 2 * 1024 * 1024);
    let message = refused(&app, "bomb", zip, 413, "too_large").await;
    assert!(message.contains("250 MiB unzipped"), "{message}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_guards_management() {
    let app = spawn_app_with(|s| s.admin_token = Some("s3cret".into())).await;
    let zip = zip_of(&[("f.py", ECHO)]);
    let anonymous = reqwest::Client::new();
    let (status, body) = json(
        anonymous
            .put(app.url("/api/v1/functions/guarded"))
            .body(zip.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Bearer"));
    assert_nothing_stored(&app).await;
    let wrong = anonymous
        .get(app.url("/api/v1/functions"))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let response = anonymous
        .put(app.url("/api/v1/functions/guarded"))
        .bearer_auth("s3cret")
        .body(zip)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // Function URLs are public: that is what they are for.
    assert_eq!(app.run("guarded", "7").await.text().await.unwrap(), "7");
    app.stop().await;
}
