//! The pool's async half (acquire, leases, the sweeper, prewarming,
//! shutdown) against the in-memory fake engine: no Docker, milliseconds.
//! The Docker-backed tests in `tests/api/pool.rs` show the same with real
//! containers once.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::testing::{function, settings};
use super::{AcquireError, Lease, Pool, Start};
use crate::config::PoolSettings;
use crate::sandbox::fake::{FakeEngine, Op};
use crate::sandbox::Failure;

const CODE: &str = "/code";

fn pool(settings: PoolSettings) -> (Pool, Arc<FakeEngine>) {
    let engine = Arc::new(FakeEngine::default());
    (Pool::new(engine.clone(), settings), engine)
}

/// A pool with one prewarmed Python container ready, after `change` to the
/// test settings.
async fn prewarmed_pool(change: impl FnOnce(&mut PoolSettings)) -> (Pool, Arc<FakeEngine>) {
    let mut s = settings();
    s.prewarm = 1;
    change(&mut s);
    let (pool, engine) = pool(s);
    assert!(
        pool.wait_prewarmed("python", 1, Duration::from_secs(2))
            .await
    );
    (pool, engine)
}

/// Waits for `condition`, failing the test after two seconds.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn acquire(pool: &Pool, f: &Arc<crate::function::FunctionSpec>) -> Lease {
    pool.acquire(f, Path::new(CODE)).await.expect("a container")
}

/// The engine operations done on one sandbox, in order.
fn ops_on(engine: &FakeEngine, id: &str) -> Vec<Op> {
    engine
        .log()
        .into_iter()
        .filter(|(_, s)| s == id)
        .map(|(op, _)| op)
        .collect()
}

#[tokio::test]
async fn new_container_when_nothing_is_ready() {
    let (pool, engine) = pool(settings());
    let f = function("a", 128, 1, 5);
    let lease = acquire(&pool, &f).await;
    assert!(lease.cold());
    assert_eq!(lease.start, Start::New);
    assert_eq!(ops_on(&engine, &lease.sandbox().id), [Op::Create, Op::Load]);
}

#[tokio::test]
async fn idle_running_container_is_reused_before_a_prewarmed_one() {
    let (pool, engine) = prewarmed_pool(|_| {}).await;
    let f = function("a", 128, 1, 5);
    let first = acquire(&pool, &f).await;
    let id = first.sandbox().id.clone();
    drop(first);
    assert!(
        pool.wait_prewarmed("python", 1, Duration::from_secs(2))
            .await
    );
    let ops = engine.log().len();
    let again = acquire(&pool, &f).await;
    assert_eq!(again.sandbox().id, id, "the idle container serves again");
    assert!(!again.cold());
    assert_eq!(again.start, Start::Running);
    assert_eq!(engine.log().len(), ops, "no engine work for a warm call");
    assert_eq!(pool.status().prewarmed, 1, "the prewarmed one is left");
}

#[tokio::test]
async fn paused_container_is_unpaused_before_a_prewarmed_one() {
    let (pool, engine) = prewarmed_pool(|s| s.pause_grace = Duration::from_millis(1)).await;
    let f = function("a", 128, 1, 5);
    let id = acquire(&pool, &f).await.sandbox().id.clone();
    until("the sweeper to pause it", || pool.status().paused == 1).await;
    assert!(
        pool.wait_prewarmed("python", 1, Duration::from_secs(2))
            .await
    );
    let lease = acquire(&pool, &f).await;
    assert_eq!(lease.sandbox().id, id);
    assert!(!lease.cold(), "an unpause is a warm start");
    assert_eq!(lease.start, Start::Paused);
    assert_eq!(ops_on(&engine, &id).last(), Some(&Op::Unpause));
    assert_eq!(pool.status().prewarmed, 1, "the prewarmed one is left");
}

#[tokio::test]
async fn prewarmed_container_is_specialised_before_a_new_one() {
    let (pool, engine) = prewarmed_pool(|_| {}).await;
    let f = function("a", 256, 1, 5);
    let lease = acquire(&pool, &f).await;
    assert!(lease.cold(), "specialising is a cold start");
    assert_eq!(lease.start, Start::Prewarmed);
    assert_eq!(lease.sandbox().serves(), Some(("a", "v1")));
    assert_eq!(lease.sandbox().memory_mb, 256);
    assert_eq!(
        ops_on(&engine, &lease.sandbox().id),
        [Op::Create, Op::SetMemory, Op::Load],
        "the generic container (running, not paused), made the function's (memory raised to its size)"
    );
    assert!(
        pool.wait_prewarmed("python", 1, Duration::from_secs(2))
            .await,
        "taking one refills"
    );
    assert_eq!(pool.status().used_mb, 256 + 128);
}

#[tokio::test]
async fn failed_specialisation_is_retried_on_another_container_unless_the_code_is_broken() {
    for op in [Op::Load, Op::SetMemory] {
        let (pool, engine) = prewarmed_pool(|_| {}).await;
        let generic = engine.live().pop().unwrap();
        engine.fail(op, 1);
        let f = function("a", 256, 1, 5);
        match pool.acquire(&f, Path::new(CODE)).await {
            // Broken code fails the same in any container.
            Err(AcquireError::Start(Failure::Load { .. })) => assert_eq!(op, Op::Load),
            // The container's own trouble: the call is served by another.
            Ok(lease) => {
                assert_ne!(op, Op::Load);
                assert_ne!(lease.sandbox().id, generic, "{op:?}");
                assert_eq!(lease.sandbox().serves(), Some(("a", "v1")));
            }
            Err(other) => panic!("{op:?}: unexpected {other:?}"),
        }
        until("the generic container's removal", || {
            !engine.live().contains(&generic)
        })
        .await;
        assert!(
            pool.wait_prewarmed("python", 1, Duration::from_secs(2))
                .await
        );
        // (The retry counts as demand: more may be prewarmed now.)
        until("the prewarm filler to settle", || {
            pool.status().prewarming == 0
        })
        .await;
        let status = pool.status();
        assert_eq!((status.busy, status.starting), (0, 0), "{op:?}");
        let serving = if op == Op::Load { 0 } else { 256 };
        assert_eq!(
            status.used_mb,
            128 * status.prewarmed as u64 + serving,
            "{op:?}: the prewarmed ones and the function's container count"
        );
        // The next call works.
        let lease = acquire(&pool, &f).await;
        assert_eq!(lease.sandbox().serves(), Some(("a", "v1")));
    }
}

#[tokio::test]
async fn queued_call_is_throttled_at_its_deadline() {
    let mut s = settings();
    s.queue_timeout = Duration::from_millis(50);
    let (pool, _engine) = pool(s);
    let f = function("a", 128, 1, 1);
    let _busy = acquire(&pool, &f).await;
    match pool.acquire(&f, Path::new(CODE)).await {
        Err(AcquireError::Throttled { limit, waited }) => {
            assert_eq!(limit, 1);
            assert!(waited >= Duration::from_millis(50), "{waited:?}");
        }
        other => panic!("expected throttling, got {other:?}"),
    }
    assert_eq!(pool.status().queued, 0, "it left the line");
}

#[tokio::test]
async fn dropped_lease_hands_its_slot_to_the_queue_head() {
    // A long queue deadline and pause grace: only the hand-off can serve
    // the queued call within the test's limit.
    let mut s = settings();
    s.queue_timeout = Duration::from_secs(30);
    let (pool, engine) = pool(s);
    let f = function("a", 128, 1, 1);
    let first = acquire(&pool, &f).await;
    let id = first.sandbox().id.clone();
    let queued = tokio::spawn({
        let (pool, f) = (pool.clone(), f.clone());
        async move { pool.acquire(&f, Path::new(CODE)).await }
    });
    until("the second call to queue", || pool.status().queued == 1).await;
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(1), queued)
        .await
        .expect("the queued call is served when the lease drops")
        .unwrap()
        .expect("a container");
    assert_eq!(second.sandbox().id, id, "the same container, handed on");
    assert!(!second.cold());
    assert_eq!(engine.count(Op::Create), 1);
}

#[tokio::test]
async fn discarded_lease_removes_its_container() {
    let (pool, engine) = pool(settings());
    let f = function("a", 128, 1, 5);
    let lease = acquire(&pool, &f).await;
    let id = lease.sandbox().id.clone();
    lease.discard();
    until("the removal", || !engine.live().contains(&id)).await;
    assert!(pool.containers("a").is_empty());
    assert_eq!(pool.status().used_mb, 0);
    let next = acquire(&pool, &f).await;
    assert_ne!(
        next.sandbox().id,
        id,
        "the next call gets a fresh container"
    );
}

#[tokio::test]
async fn short_budget_evicts_the_least_recently_used_paused_container() {
    let mut s = settings();
    s.memory_budget_mb = 256;
    s.pause_grace = Duration::from_millis(1);
    let (pool, engine) = pool(s);
    let (a, b, c) = (
        function("a", 128, 1, 5),
        function("b", 128, 1, 5),
        function("c", 128, 1, 5),
    );
    let old = acquire(&pool, &a).await.sandbox().id.clone();
    let recent = acquire(&pool, &b).await.sandbox().id.clone();
    until("both paused", || pool.status().paused == 2).await;
    let lease = acquire(&pool, &c).await;
    until("the eviction", || !engine.live().contains(&old)).await;
    assert!(engine.live().contains(&recent), "the more recent one stays");
    assert!(engine.live().contains(&lease.sandbox().id));
    assert_eq!(pool.status().used_mb, 256);
}

#[tokio::test]
async fn shutdown_removes_every_container() {
    let (pool, engine) = prewarmed_pool(|_| {}).await;
    let f = function("a", 128, 1, 5);
    let busy = acquire(&pool, &f).await; // the prewarmed one, specialised
    drop(acquire(&pool, &f).await); // another, now idle
                                    // One more being created (or specialised) when the shutdown begins.
    engine.delay(Op::Create, Duration::from_millis(100));
    engine.delay(Op::Load, Duration::from_millis(100));
    let g = function("g", 128, 1, 5);
    let starting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(&g, Path::new(CODE)).await }
    });
    until("a container being created", || pool.status().starting >= 1).await;
    pool.shutdown().await;
    drop(busy);
    // Whatever the late call got, its lease (if any) ends by removal.
    drop(starting.await.unwrap());
    until("every container removed", || engine.live().is_empty()).await;
    assert!(matches!(
        pool.acquire(&f, Path::new(CODE)).await,
        Err(AcquireError::ShuttingDown)
    ));
}

// Containers that die: the engine's events (follow.rs).

#[tokio::test]
async fn a_dead_idle_container_is_never_handed_out() {
    let (pool, engine) = pool(settings());
    let f = function("a", 128, 2, 5);
    let first = acquire(&pool, &f).await;
    let dead = first.sandbox().id.clone();
    drop(first);
    until("the follower to subscribe", || engine.subscriptions() == 1).await;
    engine.kill(&dead);
    until("the dead container to leave the pool", || {
        pool.containers("a").is_empty()
    })
    .await;
    let lease = acquire(&pool, &f).await;
    assert_ne!(lease.sandbox().id, dead);
    assert!(lease.cold(), "a fresh container");
    assert_eq!(ops_on(&engine, &dead).last(), Some(&Op::Remove));
}

#[tokio::test]
async fn a_container_dying_under_a_call_gets_no_more_calls_and_goes_after_it() {
    let (pool, engine) = pool(settings());
    let f = function("a", 128, 2, 5);
    let busy = acquire(&pool, &f).await;
    let dead = busy.sandbox().id.clone();
    until("the follower to subscribe", || engine.subscriptions() == 1).await;
    engine.kill(&dead);
    until("the pool to mark it", || {
        pool.containers("a").first().map(|c| c.phase) == Some("dead")
    })
    .await;
    assert_eq!(
        engine.count(Op::Remove),
        0,
        "not removed under its call (the call diagnoses its end)"
    );
    // A second call would share it (concurrency 2) were it alive.
    let other = acquire(&pool, &f).await;
    assert_ne!(
        other.sandbox().id,
        dead,
        "no second call on a dead container"
    );
    drop(busy);
    until("the dead container to be removed", || {
        !pool.containers("a").iter().any(|c| c.sandbox == dead)
    })
    .await;
}

#[tokio::test]
async fn a_dead_prewarmed_container_is_replaced() {
    let (pool, engine) = prewarmed_pool(|_| {}).await;
    let dead = engine.live().pop().expect("one prewarmed");
    until("the follower to subscribe", || engine.subscriptions() == 1).await;
    engine.kill(&dead);
    until("a new prewarmed container", || {
        let live = engine.live();
        pool.status().prewarmed == 1 && live.len() == 1 && live[0] != dead
    })
    .await;
    let f = function("a", 128, 1, 5);
    let lease = acquire(&pool, &f).await;
    assert_ne!(lease.sandbox().id, dead);
    assert_eq!(
        ops_on(&engine, &dead),
        [Op::Create, Op::Remove],
        "the dead one was never specialised"
    );
}

#[tokio::test]
async fn after_an_engine_restart_the_pool_rebuilds_and_refills() {
    let (pool, engine) = prewarmed_pool(|_| {}).await;
    let f = function("a", 128, 1, 5);
    let before = acquire(&pool, &f).await.sandbox().id.clone();
    until("the follower to subscribe", || engine.subscriptions() == 1).await;
    // Every container dies with no event, and the stream ends.
    engine.restart();
    until("the follower to reconnect and rebuild", || {
        engine.subscriptions() == 2 && pool.containers("a").is_empty()
    })
    .await;
    assert!(
        pool.wait_prewarmed("python", 1, Duration::from_secs(2))
            .await,
        "prewarmed containers refilled"
    );
    let lease = acquire(&pool, &f).await;
    assert_ne!(lease.sandbox().id, before);
    assert!(engine.live().contains(&lease.sandbox().id));
}
