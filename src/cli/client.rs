//! The CLI's client of the HTTP API: `OL_URL` (default
//! `http://127.0.0.1:8080`), with the key of `OL_API_KEY` (else
//! `OL_ADMIN_TOKEN`) sent when set.

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::ClientSettings;

pub struct Api {
    pub base: String,
    token: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// An answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("the manager's answer is not JSON")
    }

    /// The platform's error message, or the raw body.
    pub fn error_message(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_string())
    }

    /// Fails unless the call succeeded, with the platform's message.
    pub fn ok(self) -> anyhow::Result<Self> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(anyhow!("{} ({})", self.error_message(), self.status))
        }
    }
}

impl Api {
    pub fn from_env() -> Self {
        let settings = ClientSettings::from_env();
        Self {
            base: settings.url,
            token: settings.api_key,
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut request = hyper::Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let request = request
            .body(Full::new(body))
            .with_context(|| format!("{url} is not a valid URL; check OL_URL"))?;
        let response = self.http.request(request).await.map_err(|e| {
            anyhow!(
                "could not reach the manager at {} (set OL_URL to change it): {e}. \
                 Is `ol serve` or `docker compose up` running?",
                self.base
            )
        })?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        if status == 401 && self.token.is_none() {
            return Err(anyhow!(
                "the manager at {} wants an API key: set OL_API_KEY (the manager printed an \
                 admin key in its log on first start; `ol admin-key --rotate` makes a new one)",
                self.base
            ));
        }
        Ok(Answer { status, body })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(Method::GET, path, None, Bytes::new()).await
    }
}
