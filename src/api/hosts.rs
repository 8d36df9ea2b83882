//! `OL_ALLOWED_HOSTS`: the management listener answers only for the host
//! names the operator lists and the loopback names, so a page on another
//! site whose DNS name is pointed at this machine (DNS rebinding) cannot
//! drive the API or the dashboard through a visitor's browser.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::state::AppState;

const LOOPBACK: [&str; 4] = ["localhost", "127.0.0.1", "::1", "[::1]"];

/// The name part of a `Host` header: no port, lowercase, IPv6 in brackets.
pub fn host_name(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Whether the management listener answers for `host` (a `Host` header).
pub fn is_allowed(host: &str, allowed: &[String]) -> bool {
    let name = host_name(host).to_ascii_lowercase();
    LOOPBACK.contains(&name.as_str()) || name.ends_with(".localhost") || allowed.contains(&name)
}

pub async fn allowed_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // A balancer's health check names no host (or the node's address); the
    // answer says nothing a rebinding page could use.
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if is_allowed(host, &state.settings.allowed_hosts) {
        return next.run(request).await;
    }
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "host_not_allowed",
        format!(
            "this manager does not answer for host {:?}; add it to OL_ALLOWED_HOSTS \
             (comma-separated) if it is one of its names",
            host_name(host)
        ),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_names_are_allowed() {
        let listed = vec!["ol.example.com".to_string()];
        assert!(is_allowed("localhost:8080", &[]));
        assert!(is_allowed("127.0.0.1:8080", &[]));
        assert!(is_allowed("[::1]:8080", &[]));
        assert!(is_allowed("OL.example.com:443", &listed));
        assert!(!is_allowed("evil.example", &listed));
        assert!(!is_allowed("", &listed));
        assert!(!is_allowed("127.0.0.1.evil.example", &[]));
    }

    #[test]
    fn takes_the_name_from_a_host_header() {
        assert_eq!(host_name("a.b:80"), "a.b");
        assert_eq!(host_name("a.b"), "a.b");
        assert_eq!(host_name("[::1]:80"), "[::1]");
    }
}
