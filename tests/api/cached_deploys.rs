//! Instant cached deploys on the real engine: a fully pinned requirement set
//! that a builder resolved before, with every package still in the cache,
//! deploys without any container; anything else (an unpinned requirement, a
//! package gone from the cache, a damaged memo entry, other hashes) goes
//! through the builder as before.
//!
//! Whether a deploy started a container is read from the engine's own
//! event stream, watched while the deploy runs ([`Watch`]).

use crate::helpers::{json, spawn_app_with, zip_of, TestApp};
use crate::runtimes::ca_bundle;
use crate::watch::Watch;

/// Deploys `handler` with `requirements`; checks it worked.
async fn deploy(app: &TestApp, name: &str, handler: &str, requirements: &str) -> serde_json::Value {
    app.deploy_ok(
        name,
        &[("f.py", handler), ("requirements.txt", requirements)],
    )
    .await
}

fn statuses(deployed: &serde_json::Value) -> Vec<String> {
    deployed["packages"]
        .as_array()
        .unwrap_or_else(|| panic!("packages in {deployed}"))
        .iter()
        .map(|s| s["status"].as_str().unwrap().to_string())
        .collect()
}

const DATEUTIL: &str = "import dateutil, six\n\
def f(event):\n    return {'dateutil': dateutil.__version__, 'six': six.__version__}\n";

const SIX: &str = "import six\ndef f(event):\n    return six.__version__\n";

/// sha256 of six 1.16.0's wheel, the file the builder downloads.
const SIX_WHEEL_SHA256: &str =
    "sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254";

/// python-dateutil pinned brings six, which requirements.txt does not name:
/// the memo must hold the whole resolution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_set_in_the_cache_deploys_without_a_builder_and_imports() {
    let app = spawn_app_with(|s| s.ca_bundle = ca_bundle()).await;
    let mut watch = Watch::start(&app).await;
    let first = deploy(&app, "first", DATEUTIL, "python-dateutil==2.9.0.post0\n").await;
    assert_eq!(first["packages_resolution"], "resolved", "{first}");
    let dirs = first["installed_packages"].clone();
    let listed: Vec<&str> = dirs
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d.as_str())
        .collect();
    assert!(listed.contains(&"python-dateutil-2.9.0.post0"), "{first}");
    assert!(
        listed.iter().any(|d| d.starts_with("six-")),
        "the dependency: {first}"
    );
    assert_eq!(
        watch.builders().await,
        ["first"; 3],
        "a resolve and an install per package, seen in the engine's events"
    );

    // The same set written otherwise (case, spelling, comments), by another function.
    let same = "# the same pin\nPython_DateUtil==2.9.0.post0  # dates\n";
    let second = deploy(&app, "second", DATEUTIL, same).await;
    assert_eq!(second["packages_resolution"], "cached", "{second}");
    assert_eq!(second["installed_packages"], dirs, "the same resolution");
    assert!(statuses(&second).iter().all(|s| s == "cached"), "{second}");
    let created = watch.created().await;
    assert!(
        created.is_empty(),
        "no container for the cached deploy: {created:?}"
    );
    let (resolved_ms, cached_ms) = (
        first["packages_ms"].as_u64(),
        second["packages_ms"].as_u64(),
    );
    assert!(
        cached_ms.unwrap() * 10 < resolved_ms.unwrap(),
        "packages took {cached_ms:?} ms from the memo, {resolved_ms:?} ms through builders"
    );
    let (status, body) = json(app.run("second", "{}").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dateutil"], "2.9.0.post0", "{body}");

    // Not pinned: the resolver decides, in a builder, though all is cached.
    for (name, requirements) in [
        ("ranged", "python-dateutil>=2.9,<2.9.1\n"),
        ("bare", "python-dateutil\n"),
    ] {
        let deployed = deploy(&app, name, DATEUTIL, requirements).await;
        assert_eq!(deployed["packages_resolution"], "resolved", "{deployed}");
        let installed = statuses(&deployed)
            .iter()
            .filter(|s| *s == "installed")
            .count();
        assert_eq!(
            watch.builders().await,
            vec![name; 1 + installed],
            "one resolve (and an install per new version): {deployed}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memo_whose_package_left_the_cache_or_that_is_damaged_falls_back_to_the_builder() {
    let app = spawn_app_with(|s| s.ca_bundle = ca_bundle()).await;
    let mut watch = Watch::start(&app).await;
    let packages = app.data_dir.path().join("packages");
    let first = deploy(&app, "first", SIX, "six==1.16.0\n").await;
    assert_eq!(statuses(&first), ["installed"], "{first}");
    assert_eq!(watch.builders().await, ["first"; 2], "resolve and install");

    // Its cache directory went: the memo alone does not make it installed.
    std::fs::remove_dir_all(packages.join("python/six-1.16.0")).unwrap();
    let gone = deploy(&app, "gone", SIX, "six==1.16.0\n").await;
    assert_eq!(gone["packages_resolution"], "resolved", "{gone}");
    assert_eq!(statuses(&gone), ["installed"], "installed again: {gone}");
    assert_eq!(watch.builders().await, ["gone"; 2], "resolve and install");
    let (status, body) = json(app.run("gone", "{}").await).await;
    assert_eq!((status, body), (200, serde_json::json!("1.16.0")));

    // A damaged entry is not trusted, and the builder's answer replaces it.
    let entries: Vec<_> = std::fs::read_dir(packages.join("python.resolved"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "one memo entry: {entries:?}");
    let text = std::fs::read_to_string(&entries[0]).unwrap();
    let mut evil: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        evil["packages"],
        serde_json::json!(["six==1.16.0"]),
        "{text}"
    );
    evil["packages"] = serde_json::json!(["six==1.16.0", "../x==1"]);
    for (name, damage) in [
        ("torn", text[..text.len() / 2].to_string()),
        ("evil", evil.to_string()),
    ] {
        std::fs::write(&entries[0], damage).unwrap();
        let deployed = deploy(&app, name, SIX, "six==1.16.0\n").await;
        assert_eq!(deployed["packages_resolution"], "resolved", "{deployed}");
        assert_eq!(statuses(&deployed), ["cached"], "{deployed}");
        assert_eq!(
            deployed["installed_packages"],
            serde_json::json!(["six-1.16.0"])
        );
        assert_eq!(watch.builders().await, [name], "resolve only");
    }
    let rewritten = deploy(&app, "rewritten", SIX, "six==1.16.0\n").await;
    assert_eq!(rewritten["packages_resolution"], "cached", "{rewritten}");
    assert!(watch.created().await.is_empty(), "no container");
    app.stop().await;
}

/// The cache records the hashes an install was checked against; a
/// requirement with hashes is met only by an install checked against them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_pin_is_not_met_by_an_install_checked_against_other_hashes() {
    let app = spawn_app_with(|s| s.ca_bundle = ca_bundle()).await;
    let mut watch = Watch::start(&app).await;
    let marker = app
        .data_dir
        .path()
        .join("packages/python.verified/six-1.16.0");
    let plain = deploy(&app, "plain", SIX, "six==1.16.0\n").await;
    assert_eq!(statuses(&plain), ["installed"], "{plain}");
    assert_eq!(watch.builders().await, ["plain"; 2], "resolve and install");

    let hashed = format!("six==1.16.0 --hash={SIX_WHEEL_SHA256}\n");
    let first = deploy(&app, "hashed", SIX, &hashed).await;
    assert_eq!(first["packages_resolution"], "resolved", "{first}");
    assert_eq!(
        statuses(&first),
        ["installed"],
        "the install checked against no hash does not count: {first}"
    );
    assert_eq!(watch.builders().await, ["hashed"; 2], "resolve and install");
    let recorded = std::fs::read_to_string(&marker).unwrap();
    assert!(recorded.contains(SIX_WHEEL_SHA256), "{recorded}");
    let again = deploy(&app, "hashed-again", SIX, &hashed).await;
    assert_eq!(again["packages_resolution"], "cached", "{again}");
    assert!(watch.created().await.is_empty(), "no container");

    let wrong = format!("six==1.16.0 --hash=sha256:{}\n", "0".repeat(64));
    let zip = zip_of(&[("f.py", SIX), ("requirements.txt", &wrong)]);
    let (status, body) = json(app.deploy("wrong-hash", zip).await).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "package_install_failed", "{body}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), recorded);
    for name in ["plain", "hashed-again"] {
        let (status, body) = json(app.run(name, "{}").await).await;
        assert_eq!((status, body), (200, serde_json::json!("1.16.0")), "{name}");
    }
    app.stop().await;
}
