//! The manager's side of the runtime protocol: HTTP/1.1 over the Unix socket
//! `/host/ol.sock` in each sandbox. The contract, for both sides, is written
//! once in `images/PROTOCOL.md`; the runtime servers (`images/python/server.py`,
//! `images/node/server.js`) follow it, and these types are its Rust half.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use super::conns::Connections;

/// The protocol version this manager speaks. Sent in every load spec; a
/// runtime server answers a different one with `ProtocolMismatch` and echoes
/// its own in [`HEADER_PROTOCOL`] on every reply. Bump it on any change a
/// server of the old version would misread.
pub const PROTOCOL_VERSION: u32 = 1;

/// Request header of a function-URL call: the length of the request
/// description ([`RequestMeta`] as JSON) at the start of the body.
pub const HEADER_META_LENGTH: &str = "x-ol-meta-length";
/// Reply header: where the result ends in the body; the call's output follows.
pub const HEADER_RESULT_LENGTH: &str = "x-ol-result-length";
/// Reply header, `error` when the handler raised.
pub const HEADER_STATUS: &str = "x-ol-status";
/// Reply header: the protocol version the runtime server speaks.
pub const HEADER_PROTOCOL: &str = "x-ol-protocol";

/// What a call may print on top of its result: the runtime servers keep
/// 64 KiB and add a short note when they cut it.
pub const OUTPUT_ALLOWANCE: usize = 64 * 1024 + 1024;

/// A reply whose result is larger than the manager accepts
/// (`OL_MAX_RESPONSE_BYTES`). Nothing past the limit was read.
#[derive(Debug, thiserror::Error)]
#[error("the reply is larger than the limit of {limit} bytes")]
pub struct TooLarge {
    pub limit: usize,
}

/// `POST /load`: makes a (possibly generic) container a function's.
#[derive(Debug, Serialize)]
pub struct LoadSpec<'a> {
    pub protocol: u32,
    /// The code directory inside the container.
    pub dir: &'a str,
    pub module: &'a str,
    pub function: &'a str,
    pub env: &'a BTreeMap<String, String>,
    /// Package directories to put on the import path, first wins.
    pub packages: Vec<String>,
    pub function_name: &'a str,
    pub version: &'a str,
    pub memory_mb: i32,
}

/// A function URL request's description, from which the runtime builds the
/// handler's event (payload 2.0, WSGI environ, ASGI scope, or the JSON body).
#[derive(Clone, Debug, Serialize)]
pub struct RequestMeta {
    pub method: String,
    /// The path below `script_name`, from `/`.
    pub path: String,
    /// `/fn/{name}` or `/run/{name}`: a web app's `SCRIPT_NAME`.
    #[serde(rename = "scriptName")]
    pub script_name: String,
    /// Came in on OpenLambda's `/run`: its conventions apply.
    pub run: bool,
    pub query: String,
    /// In order, repeats kept; values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    #[serde(rename = "sourceIp")]
    pub source_ip: String,
    #[serde(rename = "requestId")]
    pub request_id: String,
    #[serde(rename = "timeoutMs")]
    pub timeout_ms: i64,
}

/// What a call hands the runtime (`POST /invoke`).
#[derive(Clone, Debug)]
pub enum Payload {
    /// OpenLambda's `/run`: the event as JSON bytes.
    Event(Bytes),
    /// The function URL: the request's description and its body.
    Http { meta: RequestMeta, body: Bytes },
}

impl Payload {
    /// The `/invoke` body and, for a function-URL call, the meta length
    /// ([`HEADER_META_LENGTH`]).
    pub fn framed(self) -> anyhow::Result<(Bytes, Option<usize>)> {
        match self {
            Payload::Event(event) => Ok((event, None)),
            Payload::Http { meta, body } => {
                let meta = serde_json::to_vec(&meta).context("encoding the request description")?;
                let mut framed = bytes::BytesMut::with_capacity(meta.len() + body.len());
                framed.extend_from_slice(&meta);
                framed.extend_from_slice(&body);
                Ok((framed.freeze(), Some(meta.len())))
            }
        }
    }
}

/// What the runtime server answered.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The function's response headers (HTTP mode), without the runtime's own.
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    /// The handler's result or response body (or its error).
    pub body: Bytes,
    /// What the call printed, when the runtime sent any.
    pub output: Option<String>,
    /// The handler raised: `body` is `{"error": {"type", "message"}}`.
    pub raised: bool,
    /// The protocol version the server sent, if any.
    pub protocol: Option<u32>,
}

impl Reply {
    /// Fails unless the server speaks [`PROTOCOL_VERSION`].
    pub fn check_protocol(&self) -> anyhow::Result<()> {
        match self.protocol {
            Some(PROTOCOL_VERSION) => Ok(()),
            other => Err(anyhow!(
                "the runtime server speaks protocol {}, the manager {PROTOCOL_VERSION}; \
                 rebuild the runtime images with this manager (ol images)",
                other.map_or_else(|| "(none)".to_string(), |v| v.to_string())
            )),
        }
    }
}

/// The runtime server's `{"error": {"type", "message"}}`, or the raw body.
pub fn error_parts(body: &[u8]) -> (String, String) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let field = |k: &str| {
        error
            .and_then(|e| e.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    (
        field("type").unwrap_or_else(|| "Error".into()),
        field("message").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
    )
}

/// Headers of the runtime's reply that are not the function's.
fn is_transport_header(name: &str) -> bool {
    name.starts_with("x-ol-")
        || matches!(
            name,
            "content-length"
                | "connection"
                | "transfer-encoding"
                | "server"
                | "date"
                | "keep-alive"
        )
}

/// One HTTP/1.1 exchange with the runtime server on `socket`, on one of
/// its kept connections ([`Connections`]) or a new one; the connection is
/// kept again only when the exchange ended well, its reply read whole.
///
/// The reply is untrusted (the handler runs in the same process as the
/// runtime server): at most `limit` bytes of result and
/// [`OUTPUT_ALLOWANCE`] of output are ever read ([`TooLarge`] past that),
/// and framing that is missing, repeated or out of range is refused.
pub async fn request(
    conns: &Connections,
    socket: &Path,
    method: &str,
    path: &str,
    meta_length: Option<usize>,
    body: Bytes,
    limit: usize,
) -> anyhow::Result<Reply> {
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "sandbox")
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(n) = meta_length {
        request = request.header(HEADER_META_LENGTH, n);
    }
    let (conn, response) = conns.send(socket, request.body(Full::new(body))?).await?;
    let reply = read_reply(response, limit).await?;
    conns.put_back(conn);
    Ok(reply)
}

/// Reads and checks the runtime's reply, within the limits.
async fn read_reply(response: hyper::Response<Incoming>, limit: usize) -> anyhow::Result<Reply> {
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let framing = Framing::read(&parts.headers)?;
    let most = limit.saturating_add(OUTPUT_ALLOWANCE);
    // A declared length past the limit is refused before a byte is read.
    if framing.content_length.is_some_and(|n| n > most)
        || framing.result_length.is_some_and(|n| n > limit)
    {
        return Err(TooLarge { limit }.into());
    }
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| !is_transport_header(name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let mut body = match Limited::new(body, most).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(TooLarge { limit }.into())
        }
        Err(e) => return Err(anyhow!("reading the runtime's reply: {e}")),
    };
    // The call's output follows the result.
    let output = match framing.result_length {
        Some(n) if n > body.len() => {
            return Err(anyhow!(
                "the runtime's reply says its result is {n} bytes but the body holds {}",
                body.len()
            ))
        }
        Some(n) if n < body.len() => {
            let output = body.split_off(n);
            Some(String::from_utf8_lossy(&output).into_owned())
        }
        _ => None,
    };
    if body.len() > limit {
        return Err(TooLarge { limit }.into());
    }
    Ok(Reply {
        status,
        headers,
        body,
        output,
        raised: framing.raised,
        protocol: framing.protocol,
    })
}

/// The runtime's own reply headers. Each `X-Ol-*` may appear once: a repeat
/// means a handler's header got through next to the runtime's, and the
/// reply cannot be read safely.
#[derive(Debug, Default, PartialEq)]
struct Framing {
    content_length: Option<usize>,
    result_length: Option<usize>,
    raised: bool,
    protocol: Option<u32>,
}

impl Framing {
    fn read(headers: &hyper::HeaderMap) -> anyhow::Result<Self> {
        let one = |name: &str| -> anyhow::Result<Option<&str>> {
            let mut values = headers.get_all(name).iter();
            let first = values.next();
            if values.next().is_some() {
                return Err(anyhow!(
                    "the runtime's reply repeats {name}; a handler may not set it"
                ));
            }
            first
                .map(|v| {
                    v.to_str()
                        .map_err(|_| anyhow!("the runtime's reply has a bad {name}"))
                })
                .transpose()
        };
        let number = |name: &str| -> anyhow::Result<Option<usize>> {
            one(name)?
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| anyhow!("the runtime's reply has a bad {name}: {v:?}"))
                })
                .transpose()
        };
        // hyper has checked the body's framing; a repeated, equal
        // Content-Length (a WSGI app's next to the server's) is fine here,
        // where it only serves to refuse a large reply before reading it.
        let content_length = headers
            .get_all(hyper::header::CONTENT_LENGTH)
            .iter()
            .filter_map(|v| v.to_str().ok()?.trim().parse::<usize>().ok())
            .max();
        Ok(Self {
            content_length,
            result_length: number(HEADER_RESULT_LENGTH)?,
            raised: match one(HEADER_STATUS)? {
                None => false,
                Some("error") => true,
                Some(other) => {
                    return Err(anyhow!(
                        "the runtime's reply has {HEADER_STATUS}: {other:?}"
                    ))
                }
            },
            protocol: number(HEADER_PROTOCOL)?.and_then(|v| u32::try_from(v).ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn http_payload_is_meta_then_body() {
        let meta = RequestMeta {
            method: "POST".into(),
            path: "/a".into(),
            script_name: "/fn/x".into(),
            run: false,
            query: "x=1".into(),
            headers: vec![("h".into(), "v".into())],
            source_ip: "127.0.0.1".into(),
            request_id: "r".into(),
            timeout_ms: 5,
        };
        let (framed, n) = Payload::Http {
            meta,
            body: Bytes::from_static(b"BODY"),
        }
        .framed()
        .unwrap();
        let n = n.unwrap();
        let meta: serde_json::Value = serde_json::from_slice(&framed[..n]).unwrap();
        assert_eq!(meta["sourceIp"], "127.0.0.1");
        assert_eq!(meta["headers"][0], serde_json::json!(["h", "v"]));
        assert_eq!(meta["timeoutMs"], 5);
        assert_eq!(&framed[n..], b"BODY");
    }

    #[test]
    fn protocol_mismatch_says_how_to_fix() {
        let reply = |protocol| Reply {
            status: 200,
            headers: Vec::new(),
            body: Bytes::new(),
            output: None,
            raised: false,
            protocol,
        };
        assert!(reply(Some(PROTOCOL_VERSION)).check_protocol().is_ok());
        let e = reply(Some(PROTOCOL_VERSION + 1))
            .check_protocol()
            .unwrap_err();
        assert!(e.to_string().contains("ol images"), "{e}");
        assert!(reply(None).check_protocol().is_err());
    }

    /// A good reply, on a connection the server keeps open.
    const OK: &str =
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Ol-Result-Length: 2\r\nX-Ol-Protocol: 1\r\n\r\nok";
    /// A streamed reply's head: 64 KiB chunks follow.
    const STREAMED: &str =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Ol-Protocol: 1\r\n\r\n";

    /// What the fake server does on one connection.
    #[derive(Clone, Copy)]
    enum Script {
        /// Answers every request with [`OK`] until the client hangs up.
        Keep,
        /// Answers one request with [`OK`], then closes the connection.
        Once,
        /// Answers one request with [`OK`], then closes the connection
        /// when the test says ([`FakeServer::close_idle`]).
        CloseWhenTold,
        /// Reads a request and never answers.
        Silent,
        /// Answers one request with `head` and that many 64 KiB chunks
        /// (chunked encoding), then goes on as [`Script::Keep`].
        Chunks(&'static str, usize),
    }

    /// A fake runtime server on a fresh socket: connection `i` (from 0)
    /// follows `scripts[i]`, or the last one. Counts the connections it
    /// accepted and the chunks it wrote.
    struct FakeServer {
        _dir: tempfile::TempDir,
        socket: std::path::PathBuf,
        accepted: Arc<AtomicUsize>,
        chunks_sent: Arc<AtomicUsize>,
        close: Arc<tokio::sync::Notify>,
        closed: Arc<tokio::sync::Notify>,
    }

    impl FakeServer {
        fn start(scripts: &'static [Script]) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("s.sock");
            let listener = tokio::net::UnixListener::bind(&socket).unwrap();
            let (accepted, chunks_sent): (Arc<AtomicUsize>, Arc<AtomicUsize>) = Default::default();
            let (close, closed): (Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>) =
                Default::default();
            let (count, sent) = (Arc::clone(&accepted), Arc::clone(&chunks_sent));
            let told = (Arc::clone(&close), Arc::clone(&closed));
            tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let i = count.fetch_add(1, Ordering::SeqCst);
                    let script = scripts[i.min(scripts.len() - 1)];
                    tokio::spawn(serve(stream, script, Arc::clone(&sent), told.clone()));
                }
            });
            Self {
                _dir: dir,
                socket,
                accepted,
                chunks_sent,
                close,
                closed,
            }
        }

        /// Has a [`Script::CloseWhenTold`] connection closed; returns once
        /// it is.
        async fn close_idle(&self) {
            self.close.notify_one();
            self.closed.notified().await;
        }

        fn accepted(&self) -> usize {
            self.accepted.load(Ordering::SeqCst)
        }
    }

    type Told = (Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>);

    async fn serve(
        mut stream: tokio::net::UnixStream,
        mut script: Script,
        sent: Arc<AtomicUsize>,
        (close, closed): Told,
    ) {
        use tokio::io::AsyncWriteExt;
        while read_request(&mut stream).await {
            match script {
                Script::Keep | Script::Once | Script::CloseWhenTold => {
                    if stream.write_all(OK.as_bytes()).await.is_err() {
                        return;
                    }
                    if let Script::Once = script {
                        return;
                    }
                    if let Script::CloseWhenTold = script {
                        close.notified().await;
                        drop(stream);
                        closed.notify_one();
                        return;
                    }
                }
                Script::Silent => {
                    // Until the client hangs up.
                    read_request(&mut stream).await;
                    return;
                }
                Script::Chunks(head, chunks) => {
                    if stream.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
                    for _ in 0..chunks {
                        if stream.write_all(chunk.as_bytes()).await.is_err() {
                            return;
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                    if head.contains("chunked") && stream.write_all(b"0\r\n\r\n").await.is_err() {
                        return;
                    }
                    script = Script::Keep;
                }
            }
        }
    }

    /// Reads one request (head, and a body of its Content-Length); false
    /// when the client hung up.
    async fn read_request(stream: &mut tokio::net::UnixStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if buf.len() >= end + 4 + length {
                    return true;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// One `/invoke` exchange on `conns`, the manager accepting 1 MiB.
    async fn invoke(conns: &Connections, server: &FakeServer) -> anyhow::Result<Reply> {
        let body = Bytes::from_static(b"{\"event\": 1}");
        request(
            conns,
            &server.socket,
            "POST",
            "/invoke",
            None,
            body,
            1 << 20,
        )
        .await
    }

    #[tokio::test]
    async fn calls_one_after_another_share_one_connection() {
        let server = FakeServer::start(&[Script::Keep]);
        let conns = Connections::default();
        for _ in 0..3 {
            assert_eq!(&invoke(&conns, &server).await.unwrap().body[..], b"ok");
        }
        assert_eq!(server.accepted(), 1);
        assert_eq!(conns.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closes_after_its_reply_is_not_reused() {
        let server = FakeServer::start(&[Script::Once]);
        let conns = Connections::default();
        for round in 1..=3 {
            let reply = invoke(&conns, &server).await;
            assert_eq!(&reply.unwrap().body[..], b"ok", "call {round}");
        }
        assert_eq!(server.accepted(), 3, "a fresh connection for each call");
    }

    /// Closed while idle, after the client saw its reply end: the kernel
    /// knows at once, hyper only once its connection task has run again
    /// (on the manager's runtime, often after the next request was
    /// written: a failed call without the check).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_the_server_closed_while_idle_does_not_fail_the_next_call() {
        let server = FakeServer::start(&[Script::CloseWhenTold]);
        let conns = Connections::default();
        for round in 1..=100 {
            let reply = invoke(&conns, &server).await;
            assert_eq!(&reply.unwrap().body[..], b"ok", "call {round}");
            server.close_idle().await;
        }
        assert_eq!(server.accepted(), 100);
    }

    #[tokio::test]
    async fn a_reply_cut_at_the_limit_is_not_read_further_nor_reused() {
        // 100 MiB offered, 1 MiB accepted.
        let server = FakeServer::start(&[Script::Chunks(STREAMED, 1600), Script::Keep]);
        let conns = Connections::default();
        let e = invoke(&conns, &server).await.unwrap_err();
        assert!(e.is::<TooLarge>(), "{e:#}");
        assert_eq!(conns.idle_count(), 0, "the cut connection is dropped");
        assert_eq!(&invoke(&conns, &server).await.unwrap().body[..], b"ok");
        assert_eq!(server.accepted(), 2, "the next call had a new connection");
        let sent = server.chunks_sent.load(Ordering::SeqCst);
        assert!(sent < 1600, "the manager read all {sent} chunks");
    }

    #[tokio::test]
    async fn a_connection_whose_exchange_timed_out_is_not_reused() {
        let server = FakeServer::start(&[Script::Silent, Script::Keep]);
        let conns = Connections::default();
        let waited = tokio::time::timeout(Duration::from_millis(50), invoke(&conns, &server)).await;
        assert!(waited.is_err(), "the silent server answered");
        assert_eq!(&invoke(&conns, &server).await.unwrap().body[..], b"ok");
        assert_eq!(server.accepted(), 2);
    }

    #[tokio::test]
    async fn a_streamed_reply_within_the_limit_is_read_whole_and_kept() {
        let server = FakeServer::start(&[Script::Chunks(STREAMED, 2)]);
        let conns = Connections::default();
        assert_eq!(invoke(&conns, &server).await.unwrap().body.len(), 0x20000);
        assert_eq!(&invoke(&conns, &server).await.unwrap().body[..], b"ok");
        assert_eq!(server.accepted(), 1);
    }

    #[tokio::test]
    async fn a_declared_length_past_the_limit_is_refused_unread() {
        static HEADS: [[Script; 2]; 2] = [
            [
                Script::Chunks("HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n", 0),
                Script::Keep,
            ],
            [
                Script::Chunks(
                    "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Ol-Result-Length: 104857600\r\n\r\n",
                    0,
                ),
                Script::Keep,
            ],
        ];
        for scripts in &HEADS {
            let server = FakeServer::start(scripts);
            let conns = Connections::default();
            let e = invoke(&conns, &server).await.unwrap_err();
            assert!(e.is::<TooLarge>(), "{e:#}");
            assert_eq!(conns.idle_count(), 0, "its unread body stays with it");
            assert_eq!(&invoke(&conns, &server).await.unwrap().body[..], b"ok");
        }
    }

    #[tokio::test]
    async fn a_failed_connect_says_nothing_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let e = request(
            &Connections::default(),
            &dir.path().join("none.sock"),
            "POST",
            "/invoke",
            None,
            Bytes::new(),
            1 << 20,
        )
        .await
        .unwrap_err();
        assert!(super::super::engine::never_reached(&e), "{e:#}");
    }

    #[test]
    fn repeated_or_bad_framing_is_refused() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = hyper::HeaderMap::new();
            for (k, v) in pairs {
                map.append(*k, hyper::header::HeaderValue::from_static(v));
            }
            map
        };
        let ok = Framing::read(&headers(&[
            ("x-ol-result-length", "3"),
            ("x-ol-protocol", "1"),
            ("x-ol-status", "error"),
        ]))
        .unwrap();
        assert_eq!(
            ok,
            Framing {
                content_length: None,
                result_length: Some(3),
                raised: true,
                protocol: Some(1)
            }
        );
        let twice = Framing::read(&headers(&[
            ("content-length", "5"),
            ("content-length", "5"),
        ]))
        .unwrap();
        assert_eq!(twice.content_length, Some(5));
        for bad in [
            &[("x-ol-result-length", "0"), ("x-ol-result-length", "3")][..],
            &[("x-ol-status", "error"), ("x-ol-status", "error")],
            &[("x-ol-status", "fine")],
            &[("x-ol-result-length", "-1")],
        ] {
            assert!(Framing::read(&headers(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_parts_fall_back_to_the_raw_body() {
        let (kind, message) = error_parts(br#"{"error":{"type":"KeyError","message":"x"}}"#);
        assert_eq!((kind.as_str(), message.as_str()), ("KeyError", "x"));
        let (kind, message) = error_parts(b"plain");
        assert_eq!((kind.as_str(), message.as_str()), ("Error", "plain"));
    }
}
