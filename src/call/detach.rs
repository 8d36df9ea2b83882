//! A call's future, run in its caller's task, that finishes in a task of its
//! own if the caller goes away first.
//!
//! A caller who hangs up drops the request's future. A call must not stop
//! half-way then: the container would be lost to the pool and the call left
//! unmetered. Spawning every call into its own task guarantees that, but
//! costs every call a task and two more wakeups (the task's, then the
//! caller's when it ends). Here the call is polled in place, and moved into
//! its own task only when the caller drops it unfinished, which is rare.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Polls `F` in place; on drop before it finished, spawns the rest of it.
pub struct Detachable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// `None` once it has finished.
    future: Option<Pin<Box<F>>>,
}

impl<F> Detachable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    pub fn new(future: F) -> Self {
        Self {
            future: Some(Box::pin(future)),
        }
    }
}

impl<F> Future for Detachable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let future = self
            .future
            .as_mut()
            .expect("a Detachable polled after it finished");
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(output)
    }
}

impl<F> Drop for Detachable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        let Some(rest) = self.future.take() else {
            return;
        };
        // Dropped outside any runtime means the runtime is going down with
        // everything in it; there is nowhere left to finish the call.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // The new task polls it at once, so it wakes on its own waker
            // from then on.
            runtime.spawn(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    #[tokio::test]
    async fn a_finished_call_gives_its_output_and_is_not_run_again() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let call = Detachable::new(async move {
            tokio::task::yield_now().await;
            counted.fetch_add(1, Ordering::SeqCst) + 41
        });
        assert_eq!(call.await, 41);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_call_dropped_half_way_runs_to_its_end() {
        let (go, wait) = oneshot::channel::<()>();
        let (done, finished) = oneshot::channel::<&str>();
        let call = Detachable::new(async move {
            let _ = wait.await;
            let _ = done.send("finished");
        });
        // The caller gives up while the call waits half-way.
        let hung_up = tokio::time::timeout(Duration::from_millis(20), call).await;
        assert!(hung_up.is_err(), "the call cannot finish before `go`");
        go.send(()).unwrap();
        let end = tokio::time::timeout(Duration::from_secs(5), finished).await;
        assert_eq!(end.expect("the call went on").unwrap(), "finished");
    }
}
