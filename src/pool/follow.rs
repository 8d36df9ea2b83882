//! Follows the engine's events so that the pool never hands a call a dead
//! container: one that died (exit, kill, out of memory) or was removed
//! behind the manager's back leaves the pool as soon as the engine says so.
//! When the event stream is lost (the engine restarted or the connection
//! broke), what happened meanwhile is unknown: the follower reconnects with
//! backoff, then rebuilds its view from the engine's list of live
//! containers, and the prewarm filler replaces what was lost.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::Inner;
use crate::sandbox::engine::EngineEvent;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a quiet follower checks that its pool still exists.
const CHECK: Duration = Duration::from_secs(1);

pub(super) async fn follow(pool: Weak<Inner>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(inner) = pool.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        // Subscribe first, then list: whatever dies after the list is in
        // the stream.
        let subscribed = inner.engine.events().await;
        let listed = Instant::now();
        let synced = match subscribed {
            Ok(stream) => inner.engine.running().await.map(|alive| (stream, alive)),
            Err(e) => Err(e),
        };
        let mut stream = match synced {
            Ok((stream, alive)) => {
                let lost = inner.update(|state| state.keep_only(&alive, listed));
                if lost > 0 {
                    tracing::warn!(
                        containers = lost,
                        "containers vanished while the engine's events were not followed; taken out of the pool"
                    );
                    inner.refill.notify_one();
                }
                backoff = FIRST_BACKOFF;
                stream
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff,
                    "cannot follow the container engine's events");
                drop(inner);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        drop(inner);
        loop {
            let next = tokio::time::timeout(CHECK, stream.next()).await;
            let Some(inner) = pool.upgrade() else { return };
            if inner.closed.load(Ordering::Acquire) {
                return;
            }
            match next {
                Err(_) => continue,
                Ok(None) => {
                    tracing::warn!("the container engine's event stream ended; reconnecting");
                    break;
                }
                Ok(Some(EngineEvent::Gone { sandbox, why })) => {
                    if inner.update(|state| state.gone(&sandbox)) {
                        tracing::info!(%sandbox, %why, "container died; taken out of the pool");
                        inner.refill.notify_one();
                    }
                }
            }
        }
    }
}
