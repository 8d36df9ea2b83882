//! Untrusted packages and zips on the real engine: requirement lines that
//! are not package names, the builder container's restrictions, a cache
//! directory nobody verified, a hung install against its deadline, and zips
//! that would only fail when unpacked.

use std::io::{Cursor, Write};
use std::time::Duration;

use zip::write::SimpleFileOptions;

use crate::helpers::{json, labelled_containers, spawn_app, spawn_app_with, zip_of, TestApp};
use crate::runtimes::ca_bundle;
use crate::watch::Watch;

/// Nothing of a refused deploy is left: no row, no code, no package.
async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(app.count("SELECT count(*) FROM functions").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM code_versions").await, 0);
    let code = app.data_dir.path().join("code");
    let left = std::fs::read_dir(&code).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "nothing unpacked in {}", code.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirement_lines_that_are_not_packages_are_refused_before_any_container() {
    let app = spawn_app().await;
    let mut watch = Watch::start(&app).await;
    let cases = [
        ("--index-url https://example.invalid/simple\nsix\n", 1),
        ("six\n-r /proc/self/environ\n", 2),
        ("# ok\nsix @ https://example.invalid/six.tar.gz\n", 2),
        ("-e git+https://example.invalid/x.git#egg=x\n", 1),
        ("six==${DATABASE_URL}\n", 1),
    ];
    for (requirements, line) in cases {
        let zip = zip_of(&[
            ("f.py", "def f(e): return 1\n"),
            ("requirements.txt", requirements),
        ]);
        let (status, body) = json(app.deploy("sneaky", zip).await).await;
        assert_eq!(status, 422, "{requirements}: {body}");
        assert_eq!(body["error"]["code"], "invalid_requirements", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("line {line}")), "{message}");
        assert!(message.contains("Only package requirements"), "{message}");
        // Nothing of the manager's environment reaches the caller.
        let text = body.to_string();
        for (key, value) in std::env::vars() {
            if value.len() >= 8 {
                assert!(!text.contains(&value), "{key}'s value leaked: {text}");
            }
        }
        assert!(!text.contains(&app.settings.database_url), "{text}");
    }
    assert!(watch.created().await.is_empty(), "no builder was started");
    assert_nothing_stored(&app).await;
    app.stop().await;
}

/// Two deploys that need the same new version at once: one builder
/// installs it, the other deploy waits for that install (or finds it done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_version_is_installed_once_for_concurrent_deploys() {
    let app = spawn_app_with(|s| s.ca_bundle = ca_bundle()).await;
    let mut watch = Watch::start(&app).await;
    let handler = "import six\ndef f(event):\n    return six.__version__\n";
    let files = [("f.py", handler), ("requirements.txt", "six==1.16.0\n")];
    let (a, b) = tokio::join!(
        app.deploy_ok("six-a", &files),
        app.deploy_ok("six-b", &files)
    );
    let statuses = [&a, &b].map(|d| d["packages"][0]["status"].as_str().unwrap().to_string());
    assert_eq!(
        statuses.iter().filter(|s| *s == "installed").count(),
        1,
        "{statuses:?}"
    );
    // Two resolves and one install: three builders, never four.
    let builders = watch.builders().await;
    assert_eq!(builders.len(), 3, "{builders:?} {a} {b}");
    for name in ["six-a", "six-b"] {
        let (status, body) = json(app.run(name, "").await).await;
        assert_eq!((status, body), (200, serde_json::json!("1.16.0")));
    }
    app.stop().await;
}

/// A package with dependencies: each version gets a builder of its own
/// (several at once), and together they import as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flask_example_installs_its_dependencies_in_parallel_builders() {
    let app = spawn_app_with(|s| s.ca_bundle = ca_bundle()).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/flask-app");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let (code, manifest, requirements) =
        (read("app.py"), read("ol.yaml"), read("requirements.txt"));
    let deployed = app
        .deploy_ok(
            "flask-app",
            &[
                ("app.py", &code),
                ("ol.yaml", &manifest),
                ("requirements.txt", &requirements),
            ],
        )
        .await;
    let steps = deployed["packages"].as_array().unwrap();
    assert!(steps.len() > 3, "flask and its dependencies: {deployed}");
    assert!(
        steps.iter().all(|s| s["status"] == "installed"),
        "{deployed}"
    );
    for dir in deployed["installed_packages"].as_array().unwrap() {
        let dir = dir.as_str().unwrap();
        let verified = app
            .data_dir
            .path()
            .join("packages/python.verified")
            .join(dir);
        assert!(verified.is_file(), "{dir} marked by the manager");
    }
    let response = app.get("/fn/flask-app?name=box").await;
    let (status, body) = json(response).await;
    assert_eq!((status, body), (200, serde_json::json!({"hello": "box"})));
    app.stop().await;
}

/// A hung build (its install command replaced by a sleep, standing for a
/// `setup.py` that never ends) is killed at `OL_PACKAGES_TIMEOUT_S` and
/// stores nothing, while another deploy with packages succeeds meanwhile.
/// While it hangs, its container shows the builder's restrictions. The other
/// deploy also finds a poisoned `six` directory that no manager verified in
/// the cache, and installs six anew instead of trusting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_install_hits_its_deadline_without_blocking_others() {
    let app = spawn_app_with(|s| {
        s.ca_bundle = ca_bundle();
        s.packages.timeout = Duration::from_secs(60);
    })
    .await;
    openlambda::packages::Installer::override_install_for_tests(
        &app.settings.instance,
        "idna",
        vec!["sleep".into(), "3600".into()],
    );

    let hung = {
        let zip = zip_of(&[
            ("f.py", "def f(e): return 1\n"),
            ("requirements.txt", "idna\n"),
        ]);
        let (http, url) = (app.http.clone(), app.url("/api/v1/functions/hung"));
        tokio::spawn(async move {
            let response = http
                .put(url)
                .header("content-type", "application/zip")
                .body(zip)
                .send()
                .await
                .unwrap();
            json(response).await
        })
    };
    // The hung install's builder, seen from the engine.
    let mut builder = None;
    for _ in 0..600 {
        let found = labelled_containers(&app.docker, &app.settings.instance, None).await;
        builder = found.into_iter().find(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get("openlambda.builder"))
                .map(String::as_str)
                == Some("hung")
                && c.command
                    .as_deref()
                    .is_some_and(|cmd| cmd.contains("sleep"))
        });
        if builder.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let builder = builder.expect("the hung install's builder container appears");
    let inspected = app
        .docker
        .inspect_container(builder.id.as_deref().unwrap(), None)
        .await
        .unwrap();
    let config = inspected.config.unwrap();
    let host = inspected.host_config.unwrap();
    let user = config.user.unwrap_or_default();
    assert!(
        !user.is_empty() && !user.starts_with("0:") && user != "root",
        "user {user}"
    );
    assert_eq!(host.cap_drop.unwrap_or_default(), ["ALL"]);
    assert_eq!(host.readonly_rootfs, Some(true));
    assert!(host
        .security_opt
        .unwrap_or_default()
        .iter()
        .any(|o| o.starts_with("no-new-privileges")));
    assert!(host.pids_limit.unwrap_or(0) > 0);
    assert!(host.tmpfs.unwrap_or_default()["/tmp"].contains("size="));
    let binds = host.binds.unwrap_or_default();
    let writable: Vec<_> = binds.iter().filter(|b| !b.ends_with(":ro")).collect();
    assert_eq!(writable.len(), 1, "only its build directory: {binds:?}");
    assert!(writable[0].contains("/packages/builds/"), "{binds:?}");
    let cache = app.data_dir.path().join("packages/python");
    assert!(
        binds
            .iter()
            .all(|b| !b.starts_with(&format!("{}:", cache.display()))),
        "the shared cache is not mounted: {binds:?}"
    );
    let env = config.env.unwrap_or_default();
    assert!(
        env.iter()
            .all(|e| !e.starts_with("OL_") && !e.contains("postgres")),
        "no platform setting in its environment: {env:?}"
    );

    // A six directory that a container (not the manager) made.
    let poisoned = cache.join("six-1.16.0");
    std::fs::create_dir_all(&poisoned).unwrap();
    std::fs::write(poisoned.join("six.py"), "raise ImportError('poisoned')\n").unwrap();
    let handler = "import six\ndef f(event):\n    return six.__version__\n";
    let other = app
        .deploy_ok(
            "uses-six",
            &[("f.py", handler), ("requirements.txt", "six==1.16.0\n")],
        )
        .await;
    assert!(!hung.is_finished(), "six was installed while idna hung");
    assert_eq!(other["packages"][0]["status"], "installed", "{other}");
    let (status, body) = json(app.run("uses-six", "").await).await;
    assert_eq!(
        (status, body.clone()),
        (200, serde_json::json!("1.16.0")),
        "{body}"
    );

    let (status, body) = hung.await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "package_install_timeout");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("idna"), "{message}");
    assert!(message.contains("OL_PACKAGES_TIMEOUT_S=60"), "{message}");
    assert_eq!(
        app.count("SELECT count(*) FROM functions WHERE name = 'hung'")
            .await,
        0
    );
    let idna: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("idna"))
        .collect();
    assert!(idna.is_empty(), "nothing of idna stored");
    let left = labelled_containers(&app.docker, &app.settings.instance, None).await;
    assert!(
        left.iter().all(|c| c
            .labels
            .as_ref()
            .and_then(|l| l.get("openlambda.builder"))
            .is_none()),
        "the hung builder was removed"
    );
    app.stop().await;
}

fn handler_zip(extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("f.py", stored).unwrap();
    w.write_all(b"def f(e): return 'original'\n").unwrap();
    for (name, body) in extra {
        w.start_file(*name, stored).unwrap();
        w.write_all(body).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Sets the 16-bit field at `offset` of every local and central header.
fn patch_headers(zip: &mut [u8], local_offset: usize, central_offset: usize, value: u16) {
    let mut i = 0;
    while i + 4 <= zip.len() {
        let field = match &zip[i..i + 4] {
            [0x50, 0x4b, 0x03, 0x04] => Some(i + local_offset),
            [0x50, 0x4b, 0x01, 0x02] => Some(i + central_offset),
            _ => None,
        };
        if let Some(at) = field {
            zip[at..at + 2].copy_from_slice(&value.to_le_bytes());
        }
        i += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zips_that_would_fail_when_unpacked_are_refused_at_upload() {
    let app = spawn_app().await;
    let mut watch = Watch::start(&app).await;

    let mut bzip2 = handler_zip(&[]);
    patch_headers(&mut bzip2, 8, 10, 12);
    let mut encrypted = handler_zip(&[]);
    patch_headers(&mut encrypted, 6, 8, 1);
    let mut bad_crc = handler_zip(&[]);
    let at = bad_crc.windows(8).position(|w| w == b"original").unwrap();
    bad_crc[at] = b'O';
    let clash = handler_zip(&[("lib", b"x"), ("lib/util.py", b"y")]);
    let many: Vec<(String, Vec<u8>)> = (0..20_000)
        .map(|i| (format!("d/{i}.txt"), Vec::new()))
        .collect();
    let many: Vec<(&str, &[u8])> = many
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let many = handler_zip(&many);

    let cases = [
        (bzip2, "unsupported_zip", "deflate"),
        (encrypted, "unsupported_zip", "password"),
        (bad_crc, "bad_zip_entry", "CRC"),
        (clash, "name_clash", "rename"),
        (many, "too_many_entries", "OL_ZIP_MAX_ENTRIES"),
    ];
    for (zip, code, hint) in cases {
        let (status, body) = json(app.deploy("bad-zip", zip).await).await;
        assert!((400..500).contains(&status), "{code}: {status} {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(hint), "{message}");
    }
    assert_nothing_stored(&app).await;
    assert!(watch.created().await.is_empty(), "no container");

    // The same zips' honest versions deploy.
    let fine = handler_zip(&[("lib/util.py", b"y")]);
    assert_eq!(app.deploy("bad-zip", fine).await.status().as_u16(), 201);
    app.stop().await;
}
