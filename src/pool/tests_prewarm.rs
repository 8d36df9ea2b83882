//! The prewarmed pool sized by demand and the import cache, through the
//! pool's async half against the fake engine. The real engine shows the
//! same in `tests/api/import_cache.rs` and `ol bench --only burst-defaults`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::testing::{function, settings};
use super::{Lease, Pool, Start};
use crate::config::PoolSettings;
use crate::function::FunctionSpec;
use crate::sandbox::fake::{FakeEngine, Op};
use crate::sandbox::ImportSet;

fn pool(change: impl FnOnce(&mut PoolSettings)) -> (Pool, Arc<FakeEngine>) {
    let mut s = settings();
    s.prewarm = 1;
    s.queue_length = 100;
    change(&mut s);
    let engine = Arc::new(FakeEngine::default());
    (Pool::new(engine.clone(), s), engine)
}

/// Waits for `condition`, failing the test after five seconds.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn with_packages(name: &str, packages: &[&str]) -> Arc<FunctionSpec> {
    Arc::new(FunctionSpec {
        packages: packages.iter().map(|p| p.to_string()).collect(),
        ..(*function(name, 128, 1, 50)).clone()
    })
}

fn set(dir: &str) -> ImportSet {
    ImportSet {
        dirs: vec![dir.into()],
        import: vec![dir.into()],
        env: Default::default(),
    }
}

/// A code directory holding `files`.
fn code(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in files {
        std::fs::write(dir.path().join(file), "").unwrap();
    }
    dir
}

/// `n` calls of `f` at once, each holding its container until all have one.
async fn burst(pool: &Pool, f: &Arc<FunctionSpec>, n: usize, code: &Path) -> Vec<Lease> {
    let calls = (0..n).map(|_| pool.acquire(f, code));
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|lease| lease.expect("a container"))
        .collect()
}

#[tokio::test]
async fn a_burst_is_remembered_and_the_next_never_called_function_finds_containers_ready() {
    let (pool, engine) = pool(|_| {});
    let dir = code(&["f.py"]);
    let first = burst(&pool, &function("first", 128, 1, 20), 20, dir.path()).await;
    let new = first.iter().filter(|l| l.start == Start::New).count();
    assert!(
        new >= 15,
        "the first burst ever is mostly new containers: {new}"
    );
    drop(first);
    until("the pool to size itself to the burst", || {
        pool.prewarmed("python") >= 20
    })
    .await;
    let creates = engine.count(Op::Create);
    let second = burst(&pool, &function("second", 128, 1, 20), 20, dir.path()).await;
    let starts: HashSet<Start> = second.iter().map(|l| l.start).collect();
    assert_eq!(
        starts,
        [Start::Prewarmed].into(),
        "every call found one ready"
    );
    assert_eq!(
        engine.count(Op::Create),
        creates,
        "no container created on the calls' path"
    );
    assert!(pool.status().used_mb <= pool.status().budget_mb);
}

#[tokio::test]
async fn a_pinned_set_serves_functions_with_its_exact_versions_only() {
    let (pool, engine) = pool(|_| {});
    pool.pin_import_sets(vec![set("six-1.16.0")]);
    until("the set's container", || pool.import_cache().len() == 1).await;
    let cached = &pool.import_cache()[0];
    assert_eq!(
        (cached.set.as_str(), cached.modules.as_slice()),
        ("six-1.16.0", &["six".to_string()][..])
    );
    assert!(
        pool.wait_prewarmed("python", 1, Duration::from_secs(2))
            .await
    );

    let dir = code(&["f.py"]);
    let other = pool
        .acquire(&with_packages("f15", &["six-1.15.0"]), dir.path())
        .await
        .unwrap();
    assert_eq!(
        other.start,
        Start::Prewarmed,
        "another version: a plain container"
    );
    let shadowing = code(&["f.py", "six.py"]);
    let own_six = pool
        .acquire(&with_packages("own", &["six-1.16.0"]), shadowing.path())
        .await
        .unwrap();
    assert_ne!(own_six.start, Start::ImportCache, "its own six.py must win");
    let lease = pool
        .acquire(&with_packages("f16", &["six-1.16.0"]), dir.path())
        .await
        .unwrap();
    assert_eq!(lease.start, Start::ImportCache);
    assert!(lease.cold());
    let ops: Vec<Op> = engine
        .log()
        .into_iter()
        .filter(|(_, id)| *id == lease.sandbox().id)
        .map(|(op, _)| op)
        .collect();
    assert_eq!(ops[..2], [Op::Create, Op::Preimport], "{ops:?}");
    until("the set's container to be made again", || {
        pool.import_cache().len() == 1
    })
    .await;
}

#[tokio::test]
async fn the_packages_of_functions_started_cold_are_kept_imported() {
    let (pool, _engine) = pool(|_| {});
    let dir = code(&["f.py"]);
    let first = pool
        .acquire(&with_packages("a", &["idna-3.7"]), dir.path())
        .await
        .unwrap();
    assert_ne!(first.start, Start::ImportCache);
    until("a container of a's packages", || {
        pool.import_cache().iter().any(|c| c.set == "idna-3.7")
    })
    .await;
    let lease = pool
        .acquire(&with_packages("b", &["idna-3.7"]), dir.path())
        .await
        .unwrap();
    assert_eq!(lease.start, Start::ImportCache, "b needs what a needed");
}

#[tokio::test]
async fn sets_beyond_the_budget_are_not_made() {
    let (pool, _engine) = pool(|s| {
        s.memory_budget_mb = 128 * 3;
        s.import_cache_auto = 0;
    });
    pool.pin_import_sets((0..5).map(|i| set(&format!("p{i}-1.0"))).collect());
    until("the budget to fill", || pool.status().used_mb == 128 * 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = pool.status();
    assert_eq!(status.used_mb, 128 * 3, "never past the budget");
    assert_eq!(
        pool.import_cache().len(),
        2,
        "the plain floor first, then what fits"
    );
    assert_eq!(status.prewarmed, 3);
}

#[tokio::test]
async fn a_set_that_fails_to_import_is_left_out_for_a_while() {
    let (pool, engine) = pool(|_| {});
    engine.fail(Op::Preimport, 1);
    pool.pin_import_sets(vec![set("broken-1.0")]);
    until("the failed import", || engine.count(Op::Preimport) == 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(engine.count(Op::Preimport), 1, "not tried again at once");
    assert!(pool.import_cache().is_empty());
    assert!(
        pool.wait_prewarmed("python", 1, Duration::from_secs(2))
            .await,
        "plain ones still come"
    );
}
