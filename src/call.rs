//! One call, end to end: lease a container, send the event, meter the call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use uuid::Uuid;

use crate::app::AppState;
use crate::meter::billed_ms;
use crate::pool::AcquireError;
use crate::sandbox::{Failure, Invocation, Reply};
use crate::store::functions::Function;
use crate::store::invocations::Invocation as Record;

/// How a call ended.
#[derive(Debug)]
pub enum Outcome {
    /// The handler ran: its result (200) or its exception (500).
    Handled(Reply),
    /// No handler answer: timeout, out of memory, crash, load error.
    Failed(Failure),
    /// No container could be had in time.
    NotStarted(AcquireError),
}

#[derive(Debug)]
pub struct CallResult {
    pub request_id: Uuid,
    pub outcome: Outcome,
}

impl Outcome {
    /// The record's status word and whether the call is billed.
    fn status(&self) -> (&'static str, bool) {
        match self {
            Outcome::Handled(r) if r.raised => ("error", true),
            Outcome::Handled(_) => ("success", true),
            Outcome::Failed(Failure::Timeout(_)) => ("timeout", true),
            Outcome::Failed(Failure::OutOfMemory(_)) => ("oom", true),
            Outcome::Failed(Failure::Crashed(_)) => ("crashed", true),
            Outcome::Failed(Failure::Load { .. }) => ("error", true),
            Outcome::Failed(Failure::Platform(_)) => ("platform_error", false),
            Outcome::NotStarted(AcquireError::Start(Failure::Load { .. })) => ("error", false),
            Outcome::NotStarted(AcquireError::Throttled { .. }) => ("throttled", false),
            Outcome::NotStarted(_) => ("platform_error", false),
        }
    }
}

/// Records a call of a function that does not exist (not billed).
pub fn record_unknown(state: &AppState, name: &str) -> Uuid {
    let request_id = Uuid::new_v4();
    if crate::manifest::FunctionName::parse(name).is_err() {
        return request_id;
    }
    let record = Record {
        request_id,
        function: name.to_string(),
        version: String::new(),
        started_at: Utc::now(),
        duration_ms: 0,
        billed_ms: 0,
        memory_mb: 0,
        max_memory_used_mb: None,
        init_ms: None,
        wait_ms: 0,
        cold: false,
        status: "not_found".into(),
        http_status: 404,
        billed: false,
        logs: None,
    };
    state.recorder.record(&record);
    // One metric series for every unknown name: names a caller makes up
    // must not add series (or memory) without bound.
    state.metrics.observe(&Record {
        function: UNKNOWN_FUNCTION.into(),
        ..record
    });
    request_id
}

/// The `function` label of calls to names that are not deployed; not a
/// valid function name, so it never clashes with one.
pub const UNKNOWN_FUNCTION: &str = "(unknown)";

/// Runs one call of `function` with `event` (JSON bytes). The work runs in
/// its own task: a caller that hangs up does not stop the call half-way, so
/// the container goes back to the pool and the call is still metered.
pub async fn call(
    state: AppState,
    function: Arc<Function>,
    request_id: Uuid,
    invocation: Invocation,
) -> CallResult {
    let task = tokio::spawn(async move { run(&state, &function, request_id, invocation).await });
    match task.await {
        Ok(result) => result,
        Err(e) => CallResult {
            request_id,
            outcome: Outcome::Failed(Failure::Platform(anyhow::anyhow!("call task failed: {e}"))),
        },
    }
}

async fn run(
    state: &AppState,
    function: &Arc<Function>,
    request_id: Uuid,
    invocation: Invocation,
) -> CallResult {
    let started_at = Utc::now();
    let queued = Instant::now();
    let timeout = Duration::from_millis(function.timeout_ms as u64);

    let lease = match state.catalog.code_dir(function).await {
        Err(e) => Err(AcquireError::Start(Failure::Platform(e))),
        Ok(code) => state.pool.acquire(function, &code).await,
    };
    let waited = queued.elapsed();
    let mut peak_mb = None;
    let (outcome, duration, init, cold) = match lease {
        Err(e) => (Outcome::NotStarted(e), Duration::ZERO, None, false),
        Ok(lease) => {
            let init = lease.init;
            let cold = lease.cold();
            let sandbox = lease.sandbox();
            sandbox.memory_peak.reset();
            let began = Instant::now();
            let result = state.sandboxes.invoke(sandbox, invocation, timeout).await;
            let duration = began.elapsed();
            peak_mb = sandbox.memory_peak.read_mb();
            let outcome = match result {
                Ok(reply) => Outcome::Handled(reply),
                Err(failure) => {
                    // Its work must not go on, and the next call needs a
                    // fresh container.
                    lease.discard();
                    Outcome::Failed(failure)
                }
            };
            (outcome, duration, init, cold)
        }
    };
    let wait = waited.saturating_sub(init.unwrap_or_default());
    tracing::debug!(%request_id, function = %function.name, wait_ms = wait.as_millis() as u64,
        duration_ms = duration.as_millis() as u64, cold, "call done");

    let (status, billed) = outcome.status();
    let mut metered = duration;
    if state.settings.billing.bill_init {
        metered += init.unwrap_or_default();
    }
    let record = Record {
        request_id,
        function: function.name.clone(),
        version: function.version.clone(),
        started_at,
        duration_ms: duration.as_millis() as i64,
        billed_ms: if billed {
            billed_ms(
                metered.as_millis() as u64,
                state.settings.billing.granularity_ms,
            ) as i64
        } else {
            0
        },
        memory_mb: function.memory_mb,
        max_memory_used_mb: peak_mb,
        init_ms: init.map(|d| d.as_millis() as i64),
        wait_ms: wait.as_millis() as i64,
        cold,
        status: status.to_string(),
        http_status: i32::from(crate::api::invoke::http_status(&outcome).as_u16()),
        billed,
        logs: match &outcome {
            Outcome::Handled(reply) => reply.output.clone().filter(|o| !o.is_empty()),
            _ => None,
        },
    };
    state.metrics.observe(&record);
    state.recorder.record(&record);
    CallResult {
        request_id,
        outcome,
    }
}
