//! The bookkeeping alone, with made-up containers: no Docker here.

use super::*;
use crate::pool::testing::function;

fn settings(queue_length: usize) -> PoolSettings {
    let mut s = crate::pool::testing::settings();
    s.queue_length = queue_length;
    s
}

fn sandbox(id: &str, f: &FunctionSpec) -> Sandbox {
    Sandbox {
        id: id.into(),
        container_id: format!("c-{id}"),
        dir: PathBuf::from("/nowhere"),
        kind: crate::sandbox::Kind::of(f.runtime, Some(f)),
        memory_mb: f.memory_mb,
        memory_peak: Default::default(),
    }
}

fn wait(step: Result<Step, Refusal>) -> oneshot::Receiver<Grant> {
    match step {
        Ok(Step::Wait { grant, .. }) => grant,
        _ => panic!("expected the call to wait"),
    }
}

fn used(step: Result<Step, Refusal>) -> Arc<Sandbox> {
    match step {
        Ok(Step::Use(s)) => s,
        _ => panic!("expected a running container"),
    }
}

/// Starts a container for `f` through the queue; returns it leased.
fn busy_container(state: &mut State, f: &Arc<FunctionSpec>, id: &str) -> Arc<Sandbox> {
    let mut grant = wait(state.choose(f, Path::new("/code"), &settings(10)));
    assert_eq!(state.take_starts().len(), 1);
    state.started(
        f,
        Ok((sandbox(id, f), Duration::from_millis(5))),
        false,
        GRACE,
    );
    let Ok(Grant::Use {
        sandbox,
        init,
        start,
    }) = grant.try_recv()
    else {
        panic!("the new container goes to the waiting call")
    };
    assert!(init.is_some(), "a started container is a cold start");
    assert_eq!(start, Start::New);
    sandbox
}

/// Starts a container for `f` and leaves it idle.
fn idle_container(state: &mut State, f: &Arc<FunctionSpec>, id: &str) -> Arc<Sandbox> {
    let sandbox = busy_container(state, f, id);
    assert!(
        state.release(&sandbox, false, GRACE),
        "idle after its only call"
    );
    sandbox
}

/// The sweeper's part: pauses every idle container (the grace is zero).
fn pause_all(state: &mut State) {
    for sandbox in state.pause_due() {
        state.pause_done(&sandbox, true, GRACE);
    }
}

const GRACE: Duration = Duration::ZERO;

#[test]
fn released_slot_goes_to_the_first_waiter() {
    let mut state = State::new(10_000);
    let f = function("a", 128, 1, 1);
    let mut first = wait(state.choose(&f, Path::new("/code"), &settings(10)));
    assert_eq!(state.take_starts().len(), 1);
    let mut second = wait(state.choose(&f, Path::new("/code"), &settings(10)));
    assert!(
        state.take_starts().is_empty(),
        "max_concurrency 1: no second container"
    );

    assert!(!state.started(&f, Ok((sandbox("s1", &f), Duration::ZERO)), false, GRACE));
    let Ok(Grant::Use { sandbox: s, .. }) = first.try_recv() else {
        panic!()
    };
    assert!(second.try_recv().is_err(), "second still waits");

    assert!(!state.release(&s, false, GRACE), "handed on, not idle");
    let Ok(Grant::Use {
        sandbox: s2,
        init,
        start,
    }) = second.try_recv()
    else {
        panic!()
    };
    assert_eq!((s2.id.as_str(), init), ("s1", None));
    assert_eq!(
        start,
        Start::Running,
        "a released container is a running one"
    );
    assert!(state.release(&s2, false, GRACE), "idle now");
    assert_eq!(state.status().idle, 1);
}

#[test]
fn concurrency_packs_calls_into_one_container() {
    let mut state = State::new(10_000);
    let f = function("a", 128, 3, 10);
    idle_container(&mut state, &f, "s1");
    for _ in 0..3 {
        assert_eq!(
            used(state.choose(&f, Path::new("/c"), &settings(10))).id,
            "s1"
        );
    }
    let _fourth = wait(state.choose(&f, Path::new("/c"), &settings(10)));
    assert_eq!(
        state.take_starts().len(),
        1,
        "a full container means a new one"
    );
}

#[test]
fn most_recently_used_idle_container_first() {
    let mut state = State::new(10_000);
    let f = function("a", 128, 1, 10);
    let old = busy_container(&mut state, &f, "old");
    let new = busy_container(&mut state, &f, "new");
    state.release(&old, false, GRACE);
    std::thread::sleep(Duration::from_millis(2));
    state.release(&new, false, GRACE);
    assert_eq!(
        used(state.choose(&f, Path::new("/c"), &settings(10))).id,
        "new"
    );
}

#[test]
fn short_budget_evicts_least_recently_used_paused() {
    let mut state = State::new(256);
    let (a, b, c) = (
        function("a", 128, 1, 5),
        function("b", 128, 1, 5),
        function("c", 128, 1, 5),
    );
    idle_container(&mut state, &a, "sa");
    std::thread::sleep(Duration::from_millis(2));
    idle_container(&mut state, &b, "sb");
    pause_all(&mut state);
    assert_eq!(state.status().paused, 2);
    assert_eq!(state.status().used_mb, 256);

    let _waiting = wait(state.choose(&c, Path::new("/c"), &settings(10)));
    assert_eq!(state.take_starts().len(), 1, "room was made");
    let evicted: Vec<_> = state.take_retired().iter().map(|s| s.id.clone()).collect();
    assert_eq!(evicted, ["sa"], "the least recently used one goes");
    assert_eq!(state.containers("b").len(), 1);
    assert_eq!(state.status().used_mb, 256);
}

#[test]
fn no_room_means_no_start_and_nothing_evicted() {
    let mut state = State::new(200);
    let (a, b) = (function("a", 128, 1, 5), function("b", 128, 1, 5));
    // a's container is busy: not evictable.
    let mut grant = wait(state.choose(&a, Path::new("/c"), &settings(10)));
    state.take_starts();
    state.started(&a, Ok((sandbox("sa", &a), Duration::ZERO)), false, GRACE);
    assert!(grant.try_recv().is_ok());
    let _waiting = wait(state.choose(&b, Path::new("/c"), &settings(10)));
    assert!(state.take_starts().is_empty());
    assert!(state.take_retired().is_empty());
}

#[test]
fn paused_container_is_unpaused_for_a_call() {
    let mut state = State::new(10_000);
    let f = function("a", 128, 1, 5);
    idle_container(&mut state, &f, "s1");
    pause_all(&mut state);
    match state.choose(&f, Path::new("/c"), &settings(10)) {
        Ok(Step::Unpause(s)) => assert_eq!(s.id, "s1"),
        _ => panic!("expected an unpause"),
    }
}

#[test]
fn prewarmed_container_of_the_runtime_is_taken_before_starting_one() {
    let mut state = State::new(10_000);
    let f = function("a", 256, 1, 5);
    assert_eq!(state.want_prewarm(Runtime::Python, 1, 128, 4), 1);
    assert_eq!(
        state.want_prewarm(Runtime::Python, 1, 128, 4),
        0,
        "one is on its way"
    );
    assert_eq!(state.want_prewarm(Runtime::Node, 1, 128, 4), 1);
    let generic = |id: &str| Sandbox {
        kind: crate::sandbox::Kind::Generic(Runtime::Python),
        memory_mb: 128,
        ..sandbox(id, &f)
    };
    state.prewarmed(Runtime::Python, Arc::new(generic("py")), true);
    state.prewarmed(Runtime::Node, Arc::new(generic("js")), true);
    assert_eq!(state.status().used_mb, 256);
    match state.choose(&f, Path::new("/c"), &settings(10)) {
        Ok(Step::Specialise {
            generic,
            paused,
            start,
        }) => {
            assert_eq!(generic.id, "py", "a Python function takes the Python one");
            assert!(paused);
            assert_eq!(start, Start::Prewarmed);
        }
        _ => panic!("expected the prewarmed container"),
    }
    assert_eq!(
        state.status().used_mb,
        384,
        "now counted at the function's size"
    );
    assert_eq!(
        (
            state.prewarmed_count(Runtime::Python),
            state.prewarmed_count(Runtime::Node)
        ),
        (0, 1)
    );
}

#[test]
fn a_call_waiting_for_its_own_start_is_not_throttled() {
    let mut state = State::new(10_000);
    let f = function("a", 128, 1, 1);
    let _first = wait(state.choose(&f, Path::new("/c"), &settings(10)));
    assert_eq!(state.take_starts().len(), 1);
    let _second = wait(state.choose(&f, Path::new("/c"), &settings(10)));
    let tickets: Vec<u64> = state.functions["a"]
        .waiters
        .iter()
        .map(|w| w.ticket)
        .collect();
    // The first is owed the starting container; the second waits on a full pool.
    assert!(matches!(
        state.leave_queue("a", tickets[0], true),
        Leave::Starting
    ));
    assert!(matches!(
        state.leave_queue("a", tickets[1], true),
        Leave::Left
    ));
    // At its second deadline it leaves whatever comes.
    assert!(matches!(
        state.leave_queue("a", tickets[0], false),
        Leave::Left
    ));
    assert!(state.functions["a"].waiters.is_empty());
}

#[test]
fn full_queue_and_oversized_functions_are_refused() {
    let mut state = State::new(1024);
    let f = function("a", 128, 1, 1);
    let _first = wait(state.choose(&f, Path::new("/c"), &settings(1)));
    assert!(matches!(
        state.choose(&f, Path::new("/c"), &settings(1)),
        Err(Refusal::QueueFull)
    ));
    let big = function("big", 2048, 1, 1);
    assert!(matches!(
        state.choose(&big, Path::new("/c"), &settings(1)),
        Err(Refusal::TooLarge {
            needed: 2048,
            budget: 1024
        })
    ));
}

#[test]
fn load_failure_fails_everyone_in_line() {
    let mut state = State::new(10_000);
    let f = function("a", 128, 1, 1);
    let mut one = wait(state.choose(&f, Path::new("/c"), &settings(10)));
    let mut two = wait(state.choose(&f, Path::new("/c"), &settings(10)));
    state.take_starts();
    let failure = Failure::Load {
        kind: "SyntaxError".into(),
        message: "bad".into(),
    };
    state.started(&f, Err(failure), false, GRACE);
    assert!(matches!(
        one.try_recv(),
        Ok(Grant::Failed(Failure::Load { .. }))
    ));
    assert!(matches!(
        two.try_recv(),
        Ok(Grant::Failed(Failure::Load { .. }))
    ));
    assert_eq!(state.status().used_mb, 0);
}

#[test]
fn update_retires_idle_containers_and_busy_ones_on_release() {
    let mut state = State::new(10_000);
    let f = function("a", 128, 1, 5);
    let busy = busy_container(&mut state, &f, "busy");
    let _ = idle_container(&mut state, &f, "idle");
    state.retire_function("a");
    let retired: Vec<_> = state.take_retired().iter().map(|s| s.id.clone()).collect();
    assert_eq!(retired, ["idle"], "the busy one finishes its call first");
    assert!(!state.release(&busy, false, GRACE));
    let retired: Vec<_> = state.take_retired().iter().map(|s| s.id.clone()).collect();
    assert_eq!(retired, ["busy"]);
    assert_eq!(state.status().used_mb, 0);
}
