//! The manager's side of the runtime protocol: HTTP/1.1 over the Unix socket
//! `/host/ol.sock` in each sandbox. The contract, for both sides, is written
//! once in `images/PROTOCOL.md`; the runtime servers (`images/python/server.py`,
//! `images/node/server.js`) follow it, and these types are its Rust half.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
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
#[derive(Debug, Serialize)]
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
#[derive(Debug)]
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
pub async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    meta_length: Option<usize>,
    body: Bytes,
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
    let number = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
    };
    let result_len = number(HEADER_RESULT_LENGTH);
    let protocol = number(HEADER_PROTOCOL).and_then(|v| u32::try_from(v).ok());
    let raised = parts.headers.contains_key(HEADER_STATUS);
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| !is_transport_header(name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let mut body = body.collect().await?.to_bytes();
    // The call's output follows the result.
    let output = match result_len {
        Some(n) if n < body.len() => {
            let output = body.split_off(n);
            Some(String::from_utf8_lossy(&output).into_owned())
        }
        _ => None,
    };
    Ok(Reply {
        status,
        headers,
        body,
        output,
        raised,
        protocol,
    })
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

    #[test]
    fn error_parts_fall_back_to_the_raw_body() {
        let (kind, message) = error_parts(br#"{"error":{"type":"KeyError","message":"x"}}"#);
        assert_eq!((kind.as_str(), message.as_str()), ("KeyError", "x"));
        let (kind, message) = error_parts(b"plain");
        assert_eq!((kind.as_str(), message.as_str()), ("Error", "plain"));
    }
}
