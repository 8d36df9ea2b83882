//! The async workers of one manager: claim due events, run each attempt
//! through [`crate::call`] while renewing its lease, write its outcome.
//!
//! Every manager sharing the database runs this loop; the claim SQL
//! (`store::events::claim`) keeps each function within its async
//! concurrency over all of them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::{destinations, MAX_EVENT_BYTES};
use crate::call::{self, CallResult, Origin, Outcome};
use crate::pool::AcquireError;
use crate::sandbox::{error_parts, Payload};
use crate::state::AppState;
use crate::store::events::{self as store, error_json, Claimed, Finish, Finished};

/// Runs (with the cron loop beside it) until [`super::Events::stop`], then
/// waits for the attempts in flight to be written.
pub async fn run(state: AppState) {
    let settings = state.settings.events.clone();
    let slots = Arc::new(Semaphore::new(settings.workers));
    let mut attempts = JoinSet::new();
    let cron = tokio::spawn(super::cron::run(state.clone()));
    while !state.events.stopping() {
        claim_due(&state, &slots, &mut attempts).await;
        while attempts.try_join_next().is_some() {}
        tokio::select! {
            () = state.events.woken() => {}
            () = tokio::time::sleep(settings.poll) => {}
        }
    }
    cron.abort();
    while attempts.join_next().await.is_some() {}
}

async fn claim_due(state: &AppState, slots: &Arc<Semaphore>, attempts: &mut JoinSet<()>) {
    let functions = match store::ready_functions(&state.db).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "async queue: could not look for due events");
            return;
        }
    };
    for function in functions {
        let free = slots.available_permits();
        if free == 0 {
            return;
        }
        let lease = state.settings.events.lease;
        match store::claim(
            &state.db,
            &function,
            state.events.owner(),
            lease,
            free as i64,
        )
        .await
        {
            Ok(claim) => {
                if claim.expired > 0 {
                    tracing::warn!(%function, events = claim.expired,
                        "async events failed unrun: past their maximum age, or the function is gone");
                }
                for c in claim.claimed {
                    let permit = slots
                        .clone()
                        .try_acquire_owned()
                        .expect("claimed within free slots");
                    attempts.spawn(attempt(state.clone(), c, permit));
                }
            }
            Err(e) => tracing::warn!(%function, error = %e, "async queue: claim failed"),
        }
    }
}

/// One attempt of one event, from claim to its written outcome.
async fn attempt(state: AppState, c: Claimed, _slot: OwnedSemaphorePermit) {
    let finish = match state.catalog.get(&c.function).await {
        Ok(Some(function)) => {
            let origin = Origin {
                trigger: trigger_word(&c.trigger),
                attempt: c.attempts,
            };
            let payload = Payload::Event(Bytes::from(c.payload.clone()));
            let call = call::call_as(state.clone(), function, c.request_id, payload, origin);
            let renew = keep_lease(&state, &c);
            tokio::pin!(call, renew);
            let result = tokio::select! {
                result = &mut call => result,
                () = &mut renew => call.await,
            };
            outcome(&state, &c, result)
        }
        Ok(None) => Finish::Failed {
            error: error_json(
                "function_not_found",
                &format!("function {} does not exist (deleted?)", c.function),
            ),
            backoff: state.settings.events.backoff_after(c.attempts),
        },
        // The catalog cannot answer (Postgres away, first read): try later.
        Err(e) => {
            tracing::warn!(function = %c.function, error = %e, "async attempt: function unknown yet");
            Finish::NotStarted(state.settings.events.backoff)
        }
    };
    write(&state, &c, finish).await;
    state.events.wake();
}

/// Renews the attempt's lease every third of it; returns if the lease is
/// lost (the call then runs on, but its outcome is not written).
async fn keep_lease(state: &AppState, c: &Claimed) {
    let lease = state.settings.events.lease;
    let mut tick = tokio::time::interval(lease / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        match store::renew(&state.db, c, state.events.owner(), lease).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(request_id = %c.request_id, "async attempt lost its lease");
                return;
            }
            Err(e) => tracing::warn!(request_id = %c.request_id, error = %e,
                "async attempt: could not renew its lease"),
        }
    }
}

fn trigger_word(trigger: &str) -> &'static str {
    match trigger {
        "cron" => "cron",
        "destination" => "destination",
        _ => "async",
    }
}

/// What the call's end means for the event.
fn outcome(state: &AppState, c: &Claimed, result: CallResult) -> Finish {
    let status = result.outcome.status();
    let failed = |code: &str, message: String| Finish::Failed {
        error: error_json(code, &message),
        backoff: state.settings.events.backoff_after(c.attempts),
    };
    match result.outcome {
        Outcome::Handled(reply) if !reply.raised => Finish::Succeeded(result_json(&reply.body)),
        Outcome::Handled(reply) => {
            let (kind, message) = error_parts(&reply.body);
            let mut f = failed("handler_error", format!("{kind}: {message}"));
            if let Finish::Failed { error, .. } = &mut f {
                error["type"] = Value::String(kind);
            }
            f
        }
        Outcome::NotStarted(AcquireError::ShuttingDown | AcquireError::Throttled { .. }) => {
            Finish::NotStarted(state.settings.events.backoff)
        }
        Outcome::Failed(failure) | Outcome::NotStarted(AcquireError::Start(failure)) => {
            failed(status.word, failure.to_string())
        }
        Outcome::NotStarted(e @ AcquireError::TooLarge { .. }) => {
            failed(status.word, e.to_string())
        }
    }
}

/// A handler's result as stored: its JSON, or its text when it is not
/// JSON; a note in place of one over [`MAX_EVENT_BYTES`]. Postgres' `jsonb`
/// refuses `\u0000`, so it becomes U+FFFD (the handler's bytes are untrusted
/// and must not make the outcome unwritable).
pub fn result_json(body: &[u8]) -> Value {
    if body.len() > MAX_EVENT_BYTES {
        return serde_json::json!({ "truncated": true, "bytes": body.len() });
    }
    let value = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    let text = value.to_string();
    if text.contains("\\u0000") {
        let clean = text.replace("\\u0000", "\\ufffd");
        return serde_json::from_str(&clean).unwrap_or(Value::Null);
    }
    value
}

/// Writes the outcome; retries while Postgres is away, for as long as the
/// lease would have lasted (then the event runs again elsewhere: an
/// interrupted attempt). An outcome Postgres refuses becomes a failure.
async fn write(state: &AppState, c: &Claimed, finish: Finish) {
    let owner = state.events.owner();
    let give_up = tokio::time::Instant::now() + state.settings.events.lease;
    let mut finish = finish;
    let mut replaced = false;
    loop {
        let sent = store::finish(&state.db, c, owner, &finish, |f| {
            destinations::payload(c, f)
        })
        .await;
        match sent {
            Ok(Finished::LeaseLost) => {
                tracing::warn!(request_id = %c.request_id, attempt = c.attempts,
                    "async attempt ended after another manager took the event; outcome dropped");
                return;
            }
            Ok(done) => {
                tracing::debug!(request_id = %c.request_id, attempt = c.attempts, ?done,
                    "async attempt written");
                return;
            }
            Err(e) if crate::store::is_unreachable(&e) => {
                if tokio::time::Instant::now() >= give_up {
                    tracing::warn!(request_id = %c.request_id, error = %e,
                        "async attempt's outcome not written; the event will run again");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                tracing::error!(request_id = %c.request_id, error = %e,
                    "Postgres refused an async outcome; recording it as a failure");
                if replaced {
                    return;
                }
                replaced = true;
                finish = Finish::Failed {
                    error: error_json(
                        "platform_error",
                        &format!("the outcome could not be stored: {e}"),
                    ),
                    backoff: state.settings.events.backoff_after(c.attempts),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_json_text_or_a_note() {
        assert_eq!(result_json(br#"{"a": 1}"#)["a"], 1);
        assert_eq!(result_json(b"plain"), Value::String("plain".into()));
        assert_eq!(
            result_json(br#""a\u0000b""#),
            Value::String("a\u{FFFD}b".into())
        );
        let big = vec![b'1'; MAX_EVENT_BYTES + 1];
        assert_eq!(result_json(&big)["truncated"], true);
    }
}
