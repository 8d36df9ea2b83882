//! This manager's handle on the queue, kept in the shared state: it wakes
//! the worker and stops it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use uuid::Uuid;

/// This manager's handle on the queue: wakes its worker, stops it.
#[derive(Clone)]
pub struct Events {
    shared: Arc<Shared>,
}

struct Shared {
    /// Names this manager's claims (the `owner` of its leases).
    owner: Uuid,
    /// Signalled when an event was queued here or an attempt ended, so the
    /// worker claims at once instead of at its next poll.
    wake: Notify,
    /// Set when the manager stops: no new claims.
    stopping: AtomicBool,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                owner: Uuid::new_v4(),
                wake: Notify::new(),
                stopping: AtomicBool::new(false),
            }),
        }
    }
}

impl Events {
    pub fn owner(&self) -> Uuid {
        self.shared.owner
    }

    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Stops claiming; attempts already running finish and are written.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }

    pub fn stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    pub(super) async fn woken(&self) {
        self.shared.wake.notified().await;
    }
}
