//! The HTTP server of both listeners, with bounds on what callers may hold:
//! at most `OL_MAX_CONNECTIONS` connections (more get a 503 at once and are
//! closed), `OL_HEADER_TIMEOUT_S` to send a request's headers (which also
//! closes idle keep-alive and silent connections), and `OL_BODY_TIMEOUT_S`
//! for every request's body, counted from its headers (a handler answers
//! 408 when [`past_deadline`] says that is why its body read failed).
//!
//! axum's own `serve` sets none of these, so slow or idle clients could hold
//! the manager's sockets and tasks without limit.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::timeout::{DeadlineBody, TimeoutError};

/// Whether a body read failed because the body missed its deadline.
pub fn past_deadline(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// What each listener bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
}

/// The answer to a connection over the bound, written without parsing
/// anything the client sent.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 82\r\n\r\n\
{\"error\":{\"code\":\"busy\",\"message\":\"too many open connections; retry in a second\"}}";

/// Serves `router` on `listener` until `shutdown` resolves, then lets the
/// requests in flight finish (up to 30 s).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    tokio::pin!(shutdown);
    loop {
        let (stream, source) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: pause, not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service(router.clone(), source, limits.body_timeout);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open 30 s after shutdown began");
    }
}

/// The router as a hyper service that knows the caller's address and
/// bounds each request body's time.
fn service(
    router: Router,
    source: SocketAddr,
    body_timeout: Duration,
) -> hyper_util::service::TowerToHyperService<
    impl tower::Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future = impl Send,
        > + Clone,
> {
    let service = router.map_request(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(source));
        request.map(|body| axum::body::Body::new(DeadlineBody::new(body_timeout, body)))
    });
    hyper_util::service::TowerToHyperService::new(service)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_busy_answer_is_well_formed() {
        let text = std::str::from_utf8(super::BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{}",
            body.len()
        );
        assert!(serde_json::from_str::<serde_json::Value>(body.trim()).is_ok());
    }
}
