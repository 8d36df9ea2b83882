//! The manager's side of the runtime protocol: HTTP/1.1 over the Unix socket
//! `/host/ol.sock` in each sandbox. The contract, for both sides, is written
//! once in `images/PROTOCOL.md`; the runtime servers (`images/python/server.py`,
//! `images/node/server.js`) follow it, and these types are its Rust half.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::UnixStream;

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

/// One HTTP/1.1 exchange over a Unix socket. One connection per request:
/// the runtime servers answer with `Connection: close` semantics (HTTP/1.0
/// in Python), and a fresh connection never carries a stale reply. Servers
/// handle requests concurrently (a thread or an event loop per request).
///
/// The reply is untrusted (the handler runs in the same process as the
/// runtime server): at most `limit` bytes of result and
/// [`OUTPUT_ALLOWANCE`] of output are ever read ([`TooLarge`] past that),
/// and framing that is missing, repeated or out of range is refused.
pub async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    meta_length: Option<usize>,
    body: Bytes,
    limit: usize,
) -> anyhow::Result<Reply> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "sandbox")
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(n) = meta_length {
        request = request.header(HEADER_META_LENGTH, n);
    }
    let response = sender.send_request(request.body(Full::new(body))?).await?;
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

    /// Serves one connection on a fresh socket: reads the request head and
    /// answers with `head`, then `chunks` chunks of 64 KiB (chunked
    /// encoding) until the client hangs up. Returns the socket and how many
    /// chunks were written.
    async fn serve_once(
        head: &'static str,
        chunks: usize,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        tokio::task::JoinHandle<usize>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = stream.read(&mut buf).await;
            if stream.write_all(head.as_bytes()).await.is_err() {
                return 0;
            }
            let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
            let mut sent = 0;
            while sent < chunks && stream.write_all(chunk.as_bytes()).await.is_ok() {
                sent += 1;
            }
            let _ = stream.write_all(b"0\r\n\r\n").await;
            sent
        });
        (dir, path, task)
    }

    /// One exchange with a server answering `head` and `chunks` chunks,
    /// the manager accepting 1 MiB; also how many chunks the server wrote.
    async fn exchange(head: &'static str, chunks: usize) -> (anyhow::Result<Reply>, usize) {
        let (_dir, socket, server) = serve_once(head, chunks).await;
        let reply = request(&socket, "POST", "/invoke", None, Bytes::new(), 1 << 20).await;
        (reply, server.await.unwrap())
    }

    #[tokio::test]
    async fn a_streamed_reply_is_cut_at_the_limit() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Ol-Protocol: 1\r\n\r\n";
        // 100 MiB offered, 1 MiB accepted.
        let (reply, sent) = exchange(head, 1600).await;
        let e = reply.unwrap_err();
        assert!(e.is::<TooLarge>(), "{e:#}");
        assert!(sent < 1600, "the manager read all {sent} chunks");
        // A reply within the limit is read whole.
        let (reply, _) = exchange(head, 2).await;
        assert_eq!(reply.unwrap().body.len(), 2 * 0x10000);
    }

    #[tokio::test]
    async fn a_declared_length_past_the_limit_is_refused_unread() {
        for head in [
            "HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Ol-Result-Length: 104857600\r\n\r\n",
        ] {
            let e = exchange(head, 0).await.0.unwrap_err();
            assert!(e.is::<TooLarge>(), "{head:?}: {e:#}");
        }
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
