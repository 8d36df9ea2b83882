//! One call, end to end: lease a container, send the event, meter the call.

mod attempt;
mod detach;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use uuid::Uuid;

use crate::function::FunctionSpec;
use crate::meter::billed_ms;
use crate::pool::AcquireError;
use crate::sandbox::{Failure, Payload, Reply};
use crate::state::AppState;
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

/// What a call's end means for its record, its bill and its HTTP answer, in
/// one place: the `api` only renders it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallStatus {
    /// The record's status word: success, error, timeout, oom, crashed,
    /// throttled, platform_error or not_found.
    pub word: &'static str,
    /// Whether the call is billed (the handler ran, or tried to).
    pub billed: bool,
    /// The HTTP status the caller gets.
    pub http: u16,
}

impl CallStatus {
    const fn new(word: &'static str, billed: bool, http: u16) -> Self {
        Self { word, billed, http }
    }

    /// A call of a function that does not exist.
    pub const NOT_FOUND: Self = Self::new("not_found", false, 404);
}

impl Outcome {
    pub fn status(&self) -> CallStatus {
        let failed = |f: &Failure, billed| match f {
            Failure::Timeout(_) => CallStatus::new("timeout", billed, 504),
            Failure::OutOfMemory(_) => CallStatus::new("oom", billed, 502),
            Failure::Crashed(_) => CallStatus::new("crashed", billed, 502),
            // The handler ran and answered; its answer was too large to pass on.
            Failure::ResponseTooLarge(_) => CallStatus::new("error", billed, 502),
            Failure::Load { .. } => CallStatus::new("error", billed, 500),
            Failure::Platform(_) => CallStatus::new("platform_error", false, 500),
        };
        match self {
            Outcome::Handled(r) => {
                // A handler's status that HTTP cannot carry is its error.
                let http = if (100..=999).contains(&r.status) {
                    r.status
                } else {
                    500
                };
                CallStatus::new(if r.raised { "error" } else { "success" }, true, http)
            }
            Outcome::Failed(failure) => failed(failure, true),
            // No handler ran: never billed, and only broken code is the
            // function's error; the rest is the platform's.
            Outcome::NotStarted(AcquireError::Start(failure)) => match failure {
                Failure::Load { .. } => failed(failure, false),
                _ => CallStatus::new("platform_error", false, failed(failure, false).http),
            },
            Outcome::NotStarted(AcquireError::Throttled { .. }) => {
                CallStatus::new("throttled", false, 429)
            }
            Outcome::NotStarted(AcquireError::ShuttingDown | AcquireError::TooLarge { .. }) => {
                CallStatus::new("platform_error", false, 503)
            }
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
        status: CallStatus::NOT_FOUND.word.into(),
        http_status: i32::from(CallStatus::NOT_FOUND.http),
        billed: CallStatus::NOT_FOUND.billed,
        logs: None,
        trigger: Origin::HTTP.trigger.into(),
        attempt: Origin::HTTP.attempt,
        start: None,
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
/// What started a call, as its record says: the trigger and, for an async
/// event, which attempt this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// http, async, cron or destination.
    pub trigger: &'static str,
    pub attempt: i32,
}

impl Origin {
    pub const HTTP: Self = Self {
        trigger: "http",
        attempt: 1,
    };
}

/// Runs one call of `function` with `event` (JSON bytes). A caller that
/// hangs up does not stop the call half-way (it goes on in a task of its
/// own), so the container goes back to the pool and the call is still
/// metered.
pub async fn call(
    state: AppState,
    function: Arc<FunctionSpec>,
    request_id: Uuid,
    payload: Payload,
) -> CallResult {
    call_as(state, function, request_id, payload, Origin::HTTP).await
}

/// [`call`] for a call that did not come over HTTP (`crate::events`).
pub async fn call_as(
    state: AppState,
    function: Arc<FunctionSpec>,
    request_id: Uuid,
    payload: Payload,
    origin: Origin,
) -> CallResult {
    let call = async move { run(&state, &function, request_id, payload, origin).await };
    match detach::Detachable::new(AssertUnwindSafe(call).catch_unwind()).await {
        Ok(result) => result,
        Err(_) => CallResult {
            request_id,
            outcome: Outcome::Failed(Failure::Platform(anyhow::anyhow!("the call panicked"))),
        },
    }
}

async fn run(
    state: &AppState,
    function: &Arc<FunctionSpec>,
    request_id: Uuid,
    payload: Payload,
    origin: Origin,
) -> CallResult {
    let started_at = Utc::now();
    let queued = Instant::now();
    let timeout = Duration::from_millis(function.timeout_ms as u64);

    // A node that never saw the deploy installs the pinned packages first:
    // a cold start for that reason, its time counted as init.
    let mut prepared = None;
    let ran = match state.catalog.code_dir(function).await {
        Err(e) => attempt::Ran::not_started(AcquireError::Start(Failure::Platform(e))),
        Ok(code) => match crate::cluster::prepare(state, function, &code).await {
            Err(e) => attempt::Ran::not_started(AcquireError::Start(Failure::Platform(e))),
            Ok(took) => {
                prepared = took;
                let sandboxes = state.sandboxes.clone();
                let send: &attempt::Send = &move |sandbox, payload| {
                    let sandboxes = sandboxes.clone();
                    Box::pin(async move { sandboxes.invoke(sandbox, payload, timeout).await })
                };
                attempt::attempt(&state.pool, function, &code, payload, send).await
            }
        },
    };
    let waited = queued.elapsed().saturating_sub(ran.duration);
    let attempt::Ran {
        outcome,
        duration,
        init,
        cold,
        start,
        peak_mb,
    } = ran;
    let init = match (init, prepared) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    };
    let cold = cold || prepared.is_some();
    let wait = waited.saturating_sub(init.unwrap_or_default());
    tracing::debug!(%request_id, function = %function.name, wait_ms = wait.as_millis() as u64,
        duration_ms = duration.as_millis() as u64, cold, "call done");

    let status = outcome.status();
    let billed = status.billed;
    let mut metered = duration;
    if state.settings.billing.bill_init {
        // Not the package install a node did because the call was routed
        // there: that is the platform's cost, not the function's.
        metered += init
            .unwrap_or_default()
            .saturating_sub(prepared.unwrap_or_default());
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
        status: status.word.to_string(),
        http_status: i32::from(status.http),
        billed,
        logs: match &outcome {
            Outcome::Handled(reply) => reply.output.clone().filter(|o| !o.is_empty()),
            // What the container printed before it stopped: the owner's to
            // read, never the caller's (it may be an earlier call's).
            Outcome::Failed(Failure::Crashed(crash)) => crash.output.clone(),
            _ => None,
        },
        trigger: origin.trigger.into(),
        attempt: origin.attempt,
        start: start.map(|s| s.as_str().to_string()),
    };
    state.metrics.observe(&record);
    state.recorder.record(&record);
    CallResult {
        request_id,
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn handled(status: u16, raised: bool) -> Outcome {
        Outcome::Handled(Reply {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            output: None,
            raised,
            protocol: None,
        })
    }

    #[test]
    fn every_outcome_has_one_status() {
        let load = || Failure::Load {
            kind: "SyntaxError".into(),
            message: "bad".into(),
        };
        let cases = [
            (handled(201, false), ("success", true, 201)),
            (handled(500, true), ("error", true, 500)),
            (handled(42, false), ("success", true, 500)),
            (
                Outcome::Failed(Failure::Timeout(Duration::from_secs(1))),
                ("timeout", true, 504),
            ),
            (
                Outcome::Failed(Failure::OutOfMemory(128)),
                ("oom", true, 502),
            ),
            (
                Outcome::Failed(Failure::Crashed("x".into())),
                ("crashed", true, 502),
            ),
            (Outcome::Failed(load()), ("error", true, 500)),
            (
                Outcome::Failed(Failure::ResponseTooLarge(6)),
                ("error", true, 502),
            ),
            (
                Outcome::Failed(Failure::Platform(anyhow::anyhow!("x"))),
                ("platform_error", false, 500),
            ),
            (
                Outcome::NotStarted(AcquireError::Start(load())),
                ("error", false, 500),
            ),
            (
                Outcome::NotStarted(AcquireError::Start(Failure::Crashed("x".into()))),
                ("platform_error", false, 502),
            ),
            (
                Outcome::NotStarted(AcquireError::Throttled {
                    limit: 1,
                    waited: Duration::ZERO,
                }),
                ("throttled", false, 429),
            ),
            (
                Outcome::NotStarted(AcquireError::ShuttingDown),
                ("platform_error", false, 503),
            ),
        ];
        for (outcome, (word, billed, http)) in cases {
            assert_eq!(
                outcome.status(),
                CallStatus { word, billed, http },
                "{outcome:?}"
            );
        }
        assert_eq!(
            (CallStatus::NOT_FOUND.word, CallStatus::NOT_FOUND.http),
            ("not_found", 404)
        );
    }
}
