//! Destinations: `on_success` and `on_failure` name a function that gets
//! the outcome of each async or scheduled call as its own async event,
//! queued in the same transaction that records the outcome.
//!
//! The event a destination gets:
//!
//! ```json
//! {"request_id": "<the call it follows>", "function": "resize",
//!  "trigger": "async", "condition": "success", "attempts": 1,
//!  "request": <the call's event>, "response": <its result>}
//! ```
//!
//! with `"condition": "failure"` and `"error": {"code", "message", ...}`
//! in place of `response` when the call failed for good.

use serde_json::{json, Value};

use crate::store::events::{Claimed, Finish};

/// Destinations deep a chain may go; past it the outcome is only kept, so
/// a function that names itself (or a loop of them) ends.
pub const MAX_DEPTH: i32 = 8;

/// The destination's event for `c`'s final outcome; `None` past
/// [`MAX_DEPTH`] or when the attempt did not end the event.
pub fn payload(c: &Claimed, finish: &Finish) -> Option<Vec<u8>> {
    if c.depth >= MAX_DEPTH {
        tracing::warn!(request_id = %c.request_id, function = %c.function, depth = c.depth,
            "destination chain too deep; the outcome is kept but not sent on");
        return None;
    }
    let (condition, key, value) = match finish {
        Finish::Succeeded(result) => ("success", "response", result),
        Finish::Failed { error, .. } => ("failure", "error", error),
        Finish::NotStarted(_) => return None,
    };
    let request = serde_json::from_slice::<Value>(&c.payload).unwrap_or(Value::Null);
    let mut event = json!({
        "request_id": c.request_id,
        "function": c.function,
        "trigger": c.trigger,
        "condition": condition,
        "attempts": c.attempts,
        "request": request,
    });
    event[key] = value.clone();
    serde_json::to_vec(&event).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn claimed(depth: i32) -> Claimed {
        Claimed {
            request_id: uuid::Uuid::nil(),
            function: "src".into(),
            trigger: "async".into(),
            payload: br#"{"x": 1}"#.to_vec(),
            attempts: 3,
            depth,
        }
    }

    #[test]
    fn failure_carries_the_error_and_the_request() {
        let finish = Finish::Failed {
            error: json!({"code": "handler_error", "message": "boom"}),
            backoff: Duration::ZERO,
        };
        let event: Value = serde_json::from_slice(&payload(&claimed(0), &finish).unwrap()).unwrap();
        assert_eq!(event["condition"], "failure");
        assert_eq!(event["error"]["message"], "boom");
        assert_eq!(event["request"]["x"], 1);
        assert_eq!(event["attempts"], 3);
        assert!(event.get("response").is_none());
    }

    #[test]
    fn chains_end() {
        let ok = Finish::Succeeded(json!(1));
        assert!(payload(&claimed(MAX_DEPTH - 1), &ok).is_some());
        assert!(payload(&claimed(MAX_DEPTH), &ok).is_none());
        assert!(payload(&claimed(0), &Finish::NotStarted(Duration::ZERO)).is_none());
    }
}
