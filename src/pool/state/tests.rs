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
        conns: Default::default(),
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
    let mut grant = wait(state.choose(f, Path::new("/code"), &settings(10), true));
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
    let mut first = wait(state.choose(&f, Path::new("/code"), &settings(10), true));
    assert_eq!(state.take_starts().len(), 1);
    let mut second = wait(state.choose(&f, Path::new("/code"), &settings(10), true));
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
            used(state.choose(&f, Path::new("/c"), &settings(10), true)).id,
            "s1"
        );
    }
    let _fourth = wait(state.choose(&f, Path::new("/c"), &settings(10), true));
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
        used(state.choose(&f, Path::new("/c"), &settings(10), true)).id,
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

    let _waiting = wait(state.choose(&c, Path::new("/c"), &settings(10), true));
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
    let mut grant = wait(state.choose(&a, Path::new("/c"), &settings(10), true));
    state.take_starts();
    state.started(&a, Ok((sandbox("sa", &a), Duration::ZERO)), false, GRACE);
    assert!(grant.try_recv().is_ok());
    let _waiting = wait(state.choose(&b, Path::new("/c"), &settings(10), true));
    assert!(state.take_starts().is_empty());
    assert!(state.take_retired().is_empty());
}

#[test]
fn paused_container_is_unpaused_for_a_call() {
    let mut state = State::new(10_000);
    let f = function("a", 128, 1, 5);
    idle_container(&mut state, &f, "s1");
    pause_all(&mut state);
    match state.choose(&f, Path::new("/c"), &settings(10), true) {
        Ok(Step::Unpause(s)) => assert_eq!(s.id, "s1"),
        _ => panic!("expected an unpause"),
    }
}

#[test]
fn prewarmed_container_of_the_runtime_is_taken_before_starting_one() {
    let mut state = State::new(10_000);
    let f = function("a", 256, 1, 5);
    let mut s = settings(10);
    s.prewarm = 1;
    let runtimes = [Runtime::Python, Runtime::Node];
    assert_eq!(
        state.prewarm_plan(&s, &runtimes, 4),
        [
            WarmKind::plain(Runtime::Python),
            WarmKind::plain(Runtime::Node)
        ]
    );
    assert!(
        state.prewarm_plan(&s, &runtimes, 4).is_empty(),
        "one of each is on its way"
    );
    let generic = |id: &str| Sandbox {
        kind: crate::sandbox::Kind::Generic(Runtime::Python),
        memory_mb: 128,
        ..sandbox(id, &f)
    };
    state.prewarmed(
        WarmKind::plain(Runtime::Python),
        Arc::new(generic("py")),
        None,
    );
    state.prewarmed(
        WarmKind::plain(Runtime::Node),
        Arc::new(generic("js")),
        None,
    );
    assert_eq!(state.status().used_mb, 256);
    match state.choose(&f, Path::new("/c"), &settings(10), true) {
        Ok(Step::Specialise { generic, start }) => {
            assert_eq!(generic.id, "py", "a Python function takes the Python one");
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
    let _first = wait(state.choose(&f, Path::new("/c"), &settings(10), true));
    assert_eq!(state.take_starts().len(), 1);
    let _second = wait(state.choose(&f, Path::new("/c"), &settings(10), true));
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
    let _first = wait(state.choose(&f, Path::new("/c"), &settings(1), true));
    assert!(matches!(
        state.choose(&f, Path::new("/c"), &settings(1), true),
        Err(Refusal::QueueFull)
    ));
    let big = function("big", 2048, 1, 1);
    assert!(matches!(
        state.choose(&big, Path::new("/c"), &settings(1), true),
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
    let mut one = wait(state.choose(&f, Path::new("/c"), &settings(10), true));
    let mut two = wait(state.choose(&f, Path::new("/c"), &settings(10), true));
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

// The prewarmed pool: demand, the import cache, the budget.

fn generic(id: &str, runtime: Runtime) -> Arc<Sandbox> {
    Arc::new(Sandbox {
        id: id.into(),
        container_id: format!("c-{id}"),
        dir: PathBuf::from("/nowhere"),
        kind: crate::sandbox::Kind::Generic(runtime),
        memory_mb: 128,
        memory_peak: Default::default(),
        conns: Default::default(),
    })
}

fn six(version: &str) -> crate::sandbox::ImportSet {
    let dir = format!("six-{version}");
    crate::sandbox::ImportSet {
        dirs: vec![dir.clone()],
        import: vec![dir],
        env: Default::default(),
    }
}

fn with_packages(name: &str, packages: &[&str]) -> Arc<FunctionSpec> {
    Arc::new(FunctionSpec {
        packages: packages.iter().map(|p| p.to_string()).collect(),
        ..(*function(name, 128, 1, 5)).clone()
    })
}

fn specialised(step: Result<Step, Refusal>) -> (String, Start) {
    match step {
        Ok(Step::Specialise { generic, start, .. }) => (generic.id.clone(), start),
        _ => panic!("expected a prewarmed container"),
    }
}

#[test]
fn a_function_takes_the_container_that_imported_its_exact_versions_and_no_other() {
    let mut state = State::new(10_000);
    let s = settings(10);
    let cached = WarmKind {
        runtime: Runtime::Python,
        set: Some(Arc::new(six("1.16.0"))),
    };
    let imported = Imported {
        modules: vec!["six".into()],
        memory_mb: Some(30),
        took: Duration::ZERO,
    };
    state.prewarmed(
        WarmKind::plain(Runtime::Python),
        generic("plain", Runtime::Python),
        None,
    );
    state.prewarmed(cached, generic("six16", Runtime::Python), Some(imported));
    let (f15, f16, bare) = (
        with_packages("f15", &["six-1.15.0"]),
        with_packages("f16", &["idna-3.7", "six-1.16.0"]),
        with_packages("bare", &[]),
    );
    for f in [&f15, &f16, &bare] {
        state.set_code_names(f, Some(["f".to_string()].into()));
    }
    assert_eq!(
        specialised(state.choose(&f15, Path::new("/c"), &s, true)),
        ("plain".into(), Start::Prewarmed),
        "another version of six: the plain one"
    );
    wait(state.choose(&bare, Path::new("/c"), &s, true));
    let f16_unread = with_packages("f16-new", &["six-1.16.0"]);
    wait(state.choose(&f16_unread, Path::new("/c"), &s, true));
    assert_eq!(
        specialised(state.choose(&f16, Path::new("/c"), &s, true)),
        ("six16".into(), Start::ImportCache),
        "a function with no packages, or whose code was not looked at, did not take it"
    );
}

#[test]
fn the_prewarm_plan_puts_the_floor_then_the_sets_then_the_demand_within_the_budget() {
    let mut state = State::new(128 * 8);
    let mut s = settings(100);
    s.prewarm = 2;
    state.pin_import_sets(vec![six("1.16.0"), six("1.15.0")]);
    // Ten calls of a never-called function at once: ten containers wanted.
    let f = function("a", 128, 1, 10);
    for _ in 0..10 {
        wait(state.choose(&f, Path::new("/c"), &s, true));
    }
    let plan = state.prewarm_plan(&s, &[Runtime::Python], 100);
    let labels: Vec<String> = plan.iter().map(WarmKind::label).collect();
    // Plain ones are capped at three quarters of the budget (6 of 8).
    assert_eq!(
        labels,
        ["-", "-", "six-1.16.0", "six-1.15.0", "-", "-", "-", "-"],
        "the floor, the pinned sets, then the demand"
    );
    assert_eq!(
        state.status().used_mb,
        128 * 8,
        "all of the budget, no more"
    );
    assert!(state.prewarm_plan(&s, &[Runtime::Python], 100).is_empty());
}

#[test]
fn prewarming_for_demand_evicts_idle_containers_of_functions_but_no_call_and_no_prewarmed_one() {
    let mut state = State::new(128 * 4);
    let mut s = settings(100);
    s.prewarm = 1;
    idle_container(&mut state, &function("a1", 128, 1, 5), "a1");
    idle_container(&mut state, &function("a2", 128, 1, 5), "a2");
    pause_all(&mut state);
    let b = function("b", 128, 1, 5);
    let busy = busy_container(&mut state, &b, "b1");
    assert_eq!(state.status().used_mb, 384);
    let c = function("c", 128, 1, 5);
    for _ in 0..3 {
        wait(state.choose(&c, Path::new("/c"), &s, true));
    }
    let plan = state.prewarm_plan(&s, &[Runtime::Python], 100);
    assert_eq!(
        plan.len(),
        3,
        "the floor from free memory, two for the demand"
    );
    let mut retired: Vec<String> = state.take_retired().iter().map(|s| s.id.clone()).collect();
    retired.sort();
    assert_eq!(retired, ["a1", "a2"], "the paused ones made room");
    assert_eq!(state.status().used_mb, 128 * 4);
    assert_eq!(state.status().busy, 1, "{} still serves its call", busy.id);
}

#[test]
fn prewarmed_containers_beyond_a_demand_that_decayed_are_let_go() {
    let mut state = State::new(10_000);
    let mut s = settings(100);
    s.prewarm = 1;
    // The demand's half-life is the keep-alive.
    s.keep_alive = Duration::from_millis(200);
    let f = function("a", 128, 1, 10);
    for _ in 0..5 {
        wait(state.choose(&f, Path::new("/c"), &s, true));
    }
    let plan = state.prewarm_plan(&s, &[Runtime::Python], 100);
    assert!(plan.len() > 1, "more than the floor: {plan:?}");
    for (i, kind) in plan.into_iter().enumerate() {
        state.prewarmed(kind, generic(&format!("p{i}"), Runtime::Python), None);
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(state.prewarm_plan(&s, &[Runtime::Python], 100).is_empty());
    assert_eq!(
        state.prewarmed_count(Runtime::Python),
        1,
        "back to the floor"
    );
    assert_eq!(state.status().used_mb, 128);
    assert!(!state.take_retired().is_empty());
}

#[test]
fn a_burst_under_way_is_not_refilled_for_until_its_calls_end() {
    let mut state = State::new(10_000);
    let mut s = settings(100);
    s.prewarm = 1;
    let f = function("a", 128, 1, 10);
    let busy: Vec<Arc<Sandbox>> = (0..5)
        .map(|i| busy_container(&mut state, &f, &format!("a{i}")))
        .collect();
    assert_eq!(
        state.prewarm_plan(&s, &[Runtime::Python], 100).len(),
        1,
        "the floor only, while five containers serve the burst"
    );
    for sandbox in &busy {
        state.release(sandbox, false, GRACE);
    }
    assert_eq!(
        state.prewarm_plan(&s, &[Runtime::Python], 100).len(),
        4,
        "ready for the next burst of five"
    );
}
