//! Kept connections to one sandbox's runtime server.
//!
//! Opening a Unix-socket connection costs a connect, an accept and, in the
//! Python server, a new thread: more than a warm call itself. So each
//! sandbox keeps the HTTP/1.1 connections its calls opened and the next
//! call takes one of them. A container serves `concurrency` calls at once,
//! so there can be several; at most [`MAX_IDLE`] wait idle.
//!
//! A connection goes back only after an exchange that ended well, its
//! reply read to the end ([`super::protocol::request`] decides). One that
//! failed, timed out, was cut at the size limit or left unread is dropped
//! (closed): nothing of an old reply can reach the next call.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Idle connections kept per sandbox. A sandbox never has more open than
/// the calls it served at once; this bounds what a burst leaves behind
/// (each is a thread in the Python server, counted in the pids limit).
pub const MAX_IDLE: usize = 32;

/// The idle connections to one runtime server.
#[derive(Default)]
pub struct Connections {
    idle: Mutex<Vec<Conn>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connections({} idle)", self.idle_count())
    }
}

/// One connection: hyper's handle to send on, and the same socket to see,
/// without hyper, whether the server hung up while it sat idle.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    probe: std::os::unix::net::UnixStream,
}

impl Connections {
    /// Sends `request` on an idle connection, or on a new one. A kept
    /// connection that turns out closed (the server hung up: it stopped,
    /// or closed it after its reply) is dropped, and the request goes on
    /// another one when hyper gives it back unsent; once sent, an error is
    /// the caller's (the handler may have run). A failed connect means
    /// nothing was sent ([`super::engine::never_reached`]).
    pub async fn send(
        &self,
        socket: &Path,
        mut request: hyper::Request<Full<Bytes>>,
    ) -> anyhow::Result<(Conn, hyper::Response<Incoming>)> {
        loop {
            let (mut conn, kept) = match self.take_open().await {
                Some(conn) => (conn, true),
                None => (Conn::open(socket).await?, false),
            };
            match conn.sender.try_send_request(request).await {
                Ok(response) => return Ok((conn, response)),
                Err(mut e) => match e.take_message() {
                    // It closed between the check and the send: never sent.
                    Some(unsent) if kept => request = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// Keeps `conn` for the next call, unless enough are kept already.
    pub fn put_back(&self, conn: Conn) {
        let mut idle = self.idle.lock().expect("connections lock");
        if idle.len() < MAX_IDLE && !conn.sender.is_closed() {
            idle.push(conn);
        }
    }

    /// The kept connections, moved out (a generic container becoming a
    /// function's takes its connections along).
    pub fn take(&self) -> Self {
        let idle = std::mem::take(&mut *self.idle.lock().expect("connections lock"));
        Self {
            idle: Mutex::new(idle),
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().expect("connections lock").len()
    }

    /// The most recently used idle connection that is still open; closed
    /// ones met on the way are dropped.
    async fn take_open(&self) -> Option<Conn> {
        loop {
            let mut conn = self.idle.lock().expect("connections lock").pop()?;
            // `ready` waits for hyper to take the next request, which it
            // does as soon as it has seen the last reply's end; it fails
            // once hyper saw the server close.
            if !conn.hung_up() && conn.sender.ready().await.is_ok() {
                return Some(conn);
            }
        }
    }
}

impl Conn {
    async fn open(socket: &Path) -> anyhow::Result<Self> {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        // A second descriptor of the same socket, non-blocking like the first.
        let probe = stream.as_fd().try_clone_to_owned()?.into();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender, probe })
    }

    /// Whether the server closed its end (or sent something nobody asked
    /// for). hyper learns this only when its connection task next runs; a
    /// read that would block says now, from the kernel, that the
    /// connection is open and quiet.
    fn hung_up(&self) -> bool {
        let mut byte = [0u8; 1];
        !matches!(
            (&self.probe).read(&mut byte),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }
}
