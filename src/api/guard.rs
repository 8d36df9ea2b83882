//! What stands between a caller and a function: the function's URL auth
//! mode (`auth: key` needs one of its invoke keys), its rate limit, and the
//! clean-up of what crosses between the two origins: the platform's
//! credentials never reach a handler, and a handler's response cannot set
//! the dashboard's session cookie (cookies are scoped by host, not port, so
//! the function listener shares them with the management listener).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};

use super::credentials::{bearer, constant_time_eq, SESSION_COOKIE};
use super::error::ApiError;
use crate::ratelimit::FunctionLimits;
use crate::store::access::{self, Access};
use crate::store::keys::{self, KEY_PREFIX};
use sqlx::PgPool;

/// How long a node trusts its copy of a function's access settings; a
/// change on this node is seen at once, on other nodes within this.
const FRESH: Duration = Duration::from_secs(2);

/// Access settings of recently called functions, and their rate buckets.
#[derive(Default)]
pub struct Guard {
    cache: Mutex<HashMap<String, (Access, Instant)>>,
    limits: FunctionLimits,
}

impl Guard {
    /// Forgets what is known of `function` (deployed, patched or deleted).
    pub fn invalidate(&self, function: &str) {
        self.cache
            .lock()
            .expect("access cache lock")
            .remove(function);
        self.limits.forget(function);
    }

    /// The function's access settings: fresh from the cache, else from
    /// Postgres; while Postgres is away, the last ones read keep serving (as
    /// the catalog does), and a function never read fails closed.
    async fn access(&self, db: &PgPool, function: &str) -> Result<Access, ApiError> {
        let cached = self
            .cache
            .lock()
            .expect("access cache lock")
            .get(function)
            .cloned();
        if let Some((a, at)) = &cached {
            if at.elapsed() < FRESH {
                return Ok(a.clone());
            }
        }
        let found = match (access::get(db, function).await, cached) {
            (Ok(found), _) => found,
            (Err(e), Some((stale, _))) => {
                tracing::warn!(error = %e, function, "Postgres is away; using the access settings read last");
                return Ok(stale);
            }
            (Err(e), None) => return Err(e.into()),
        };
        self.cache
            .lock()
            .expect("access cache lock")
            .insert(function.to_string(), (found.clone(), Instant::now()));
        Ok(found)
    }

    /// Lets a call of an existing `function` through, or says why not (401
    /// without a valid invoke key, 429 over its rate limit).
    pub async fn admit(
        &self,
        db: &PgPool,
        function: &str,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        let access = self.access(db, function).await?;
        if access.auth == "key" {
            let given = invoke_key(headers);
            let valid = match given {
                Some(key) => keys::is_invoke_key(db, function, key).await?,
                None => false,
            };
            if !valid {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    format!(
                        "{function} needs one of its invoke keys (auth: key): send \
                         Authorization: Bearer <key> or X-Ol-Key: <key>; its owner makes one \
                         with POST /api/v1/functions/{function}/keys"
                    ),
                ));
            }
        }
        if let (Some(rate), burst) = (access.rate_per_s, access.rate_burst) {
            let burst = burst.unwrap_or(1).max(1) as u32;
            if let Err(secs) = self.limits.take(function, rate, burst) {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "{function} takes at most {rate} calls per second (burst {burst}; \
                         rate_limit in its ol.yaml); retry after {secs} s"
                    ),
                );
                e.retry_after = Some(secs);
                return Err(e);
            }
        }
        Ok(())
    }
}

/// The invoke key a caller sent: `X-Ol-Key`, else the bearer token.
fn invoke_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-ol-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .or_else(|| bearer(headers))
}

/// Removes the platform's credentials from a call's headers before the
/// handler sees them: `X-Ol-Key`, an `Authorization` that carries a
/// platform key (all start with `ol_`) or `OL_ADMIN_TOKEN`, and the
/// dashboard's session cookie. A caller's own `Authorization` for the
/// function (any other value) passes.
pub fn strip_credentials(headers: &mut HeaderMap, admin_token: Option<&str>) {
    headers.remove("x-ol-key");
    if let Some(token) = bearer(headers) {
        let ours = token.starts_with(KEY_PREFIX)
            || admin_token.is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
        if ours {
            headers.remove(header::AUTHORIZATION);
        }
    }
    let cookies: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !pair.is_empty() && name != SESSION_COOKIE
        })
        .map(str::to_string)
        .collect();
    headers.remove(header::COOKIE);
    if let Ok(value) = HeaderValue::from_str(&cookies.join("; ")) {
        if !cookies.is_empty() {
            headers.insert(header::COOKIE, value);
        }
    }
}

/// Whether a handler's response header may go to the caller: never a
/// `Set-Cookie` of the dashboard's session cookie name.
pub fn response_header_allowed(name: &str, value: &[u8]) -> bool {
    if !name.eq_ignore_ascii_case("set-cookie") {
        return true;
    }
    let value = String::from_utf8_lossy(value);
    let cookie_name = value.split(['=', ';']).next().unwrap_or_default().trim();
    !cookie_name.eq_ignore_ascii_case(SESSION_COOKIE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_credentials_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer ol_abc".parse().unwrap());
        h.insert("x-ol-key", "ol_def".parse().unwrap());
        h.insert(header::COOKIE, "a=1; ol_session=s; b=2".parse().unwrap());
        strip_credentials(&mut h, None);
        assert!(h.get(header::AUTHORIZATION).is_none());
        assert!(h.get("x-ol-key").is_none());
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1; b=2");

        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        h.insert(header::COOKIE, "ol_session=s".parse().unwrap());
        strip_credentials(&mut h, Some("s3cret"));
        assert!(h.get(header::AUTHORIZATION).is_none());
        assert!(h.get(header::COOKIE).is_none());

        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer theirs".parse().unwrap());
        strip_credentials(&mut h, Some("s3cret"));
        assert!(
            h.get(header::AUTHORIZATION).is_some(),
            "the function's own auth passes"
        );
    }

    #[test]
    fn handlers_cannot_set_the_session_cookie() {
        assert!(!response_header_allowed(
            "Set-Cookie",
            b"ol_session=x; Path=/"
        ));
        assert!(!response_header_allowed("set-cookie", b" OL_SESSION=x"));
        assert!(response_header_allowed("set-cookie", b"theirs=x"));
        assert!(response_header_allowed("content-type", b"ol_session"));
    }
}
