//! Who is calling the management API, and may they do this?
//!
//! A caller proves itself with an API key (`Authorization: Bearer <key>`)
//! or, from the dashboard, a session cookie that a login gave for a key.
//! Keys carry scopes: `admin` (everything), `deploy` (change functions,
//! optionally only those whose name starts with the key's prefix; read
//! everything) and `read` (list, info, logs, billing). What each route
//! needs is decided in one place, [`needs`], from the method and path.

pub use super::credentials::{bearer, constant_time_eq, cookie, SESSION_COOKIE};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use crate::state::AppState;
use crate::store::keys::{self, ApiKey};

/// The name of the key `OL_ADMIN_TOKEN` is kept as.
pub const ADMIN_TOKEN_KEY: &str = "admin-token";
/// The name of the key the manager makes on first start.
pub const FIRST_ADMIN_KEY: &str = "admin";

/// The authenticated caller of a management request, for the handlers'
/// audit records.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The key's name (a session's caller is its key).
    pub key: String,
    pub scopes: Vec<String>,
    pub prefix: Option<String>,
    pub source: SocketAddr,
}

impl Caller {
    fn new(key: ApiKey, source: SocketAddr) -> Self {
        Self {
            key: key.name,
            scopes: key.scopes,
            prefix: key.prefix,
            source,
        }
    }

    fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether this caller may do what `need` asks; else why not.
    fn check(&self, need: &Need) -> Result<(), String> {
        if self.has("admin") {
            return Ok(());
        }
        match need {
            Need::Admin => Err("the admin scope".into()),
            Need::Read if self.has("read") || self.has("deploy") => Ok(()),
            Need::Read => Err("the read scope".into()),
            Need::Deploy(name) if self.has("deploy") => match &self.prefix {
                Some(prefix) if !name.starts_with(prefix.as_str()) => Err(format!(
                    "the deploy scope for {name:?} (this key may only change functions \
                     whose name starts with {prefix:?})"
                )),
                _ => Ok(()),
            },
            Need::Deploy(_) => Err("the deploy scope".into()),
        }
    }

    /// Records a management change made by this caller. A failure is
    /// logged: the change itself is done and stays.
    pub async fn audit(
        &self,
        state: &AppState,
        action: &str,
        function: Option<&str>,
        detail: serde_json::Value,
    ) {
        let source = self.source.ip().to_string();
        if let Err(e) =
            crate::store::audit::record(&state.db, &self.key, &source, action, function, detail)
                .await
        {
            tracing::error!(error = %e, action, key = %self.key, "could not write the audit record");
        }
    }
}

/// What a management route needs.
#[derive(Debug, PartialEq)]
enum Need {
    Admin,
    /// Changing this function.
    Deploy(String),
    Read,
}

/// What `method path` (below `/api/v1`) needs.
fn needs(method: &Method, path: &str) -> Need {
    let reading = matches!(*method, Method::GET | Method::HEAD);
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["keys", ..] | ["audit", ..] => Need::Admin,
        ["functions", name, "keys", ..] => Need::Deploy(name.to_string()),
        _ if reading => Need::Read,
        ["functions", name, ..] => Need::Deploy(name.to_string()),
        _ => Need::Admin,
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// The key behind a request's bearer token or session cookie.
pub async fn identify(
    state: &AppState,
    headers: &HeaderMap,
    source: SocketAddr,
) -> Result<Caller, ApiError> {
    if state.settings.insecure_no_auth {
        return Ok(Caller {
            key: "insecure-no-auth".into(),
            scopes: vec!["admin".into()],
            prefix: None,
            source,
        });
    }
    if let Some(token) = bearer(headers) {
        // Wrong keys count with failed sign-ins: an OL_ADMIN_TOKEN chosen
        // by hand may be guessable, so guesses are limited per address.
        if let Err(secs) = state.logins.check(source.ip()) {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failures",
                format!("too many wrong keys from this address; retry in {secs} s"),
            );
            e.retry_after = Some(secs);
            return Err(e);
        }
        return match keys::find(&state.db, token).await? {
            Some(key) => Ok(Caller::new(key, source)),
            None => {
                state.logins.failed(source.ip());
                Err(unauthorized(
                "this API key is not valid (wrong, or revoked); send Authorization: Bearer <key> \
                 with a key from `ol keys create`, or the admin key the manager printed on its \
                 first start (`ol admin-key --rotate` makes a new one)",
                ))
            }
        };
    }
    if let Some(session) = cookie(headers, SESSION_COOKIE) {
        same_origin(headers)?;
        return match keys::session_key(&state.db, session).await? {
            Some(key) => Ok(Caller::new(key, source)),
            None => Err(unauthorized(
                "the dashboard session has expired or was ended; sign in again at /login",
            )),
        };
    }
    Err(unauthorized(
        "this call needs an API key: send Authorization: Bearer <key> (the ol command takes \
         it from OL_API_KEY); the manager printed an admin key in its log on first start",
    ))
}

/// A request that rides on the session cookie must come from the
/// dashboard's own pages: browsers mark requests from other origins,
/// including a function's page on another port of the same host, in
/// `Sec-Fetch-Site` and `Origin`.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refused = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "a request from another site or origin may not use the dashboard's session",
        )
    };
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(site, Some("cross-site" | "same-site")) {
        return Err(refused());
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let bare = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if bare != Some(host) {
            return Err(refused());
        }
    }
    Ok(())
}

/// Guards `/api/v1`: 401 without a valid key or session, 403 without the
/// scope the route needs. The caller goes into the request's extensions.
pub async fn require_key(
    State(state): State<AppState>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = identify(&state, request.headers(), source).await?;
    let path = request.uri().path();
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let need = needs(request.method(), path);
    if let Err(wanted) = caller.check(&need) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "key {:?} has scopes [{}]; {} {path} needs {wanted}; use a key with that \
                 scope, or ask an admin to create one (ol keys create NAME --scope ...)",
                caller.key,
                caller.scopes.join(", "),
                request.method(),
            ),
        ));
    }
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// On start: keeps `OL_ADMIN_TOKEN` as an admin key (or removes it when the
/// setting is gone), and makes and prints an admin key when there is none.
pub async fn bootstrap(state: &AppState) -> anyhow::Result<()> {
    let settings = &state.settings;
    if settings.insecure_no_auth {
        anyhow::ensure!(
            settings.listen.ip().is_loopback(),
            "OL_INSECURE_NO_AUTH=1 serves the management API to anyone without a key, so it is \
             only allowed on a loopback OL_LISTEN (e.g. 127.0.0.1:8080), not {}; unset it and \
             use the admin key instead",
            settings.listen
        );
        tracing::warn!(
            "OL_INSECURE_NO_AUTH=1: the management API on {} needs no key",
            settings.listen
        );
    }
    // Managers sharing the database start one at a time through here, so
    // that only one makes (and prints) the first admin key.
    let mut lock = state.db.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(BOOTSTRAP_LOCK)
        .execute(&mut *lock)
        .await?;
    let done = admin_keys(state).await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(BOOTSTRAP_LOCK)
        .execute(&mut *lock)
        .await?;
    done
}

/// Advisory lock id of [`bootstrap`] ("olkeys").
const BOOTSTRAP_LOCK: i64 = 0x6f6c_6b65_7973;

async fn admin_keys(state: &AppState) -> anyhow::Result<()> {
    match &state.settings.admin_token {
        Some(token) => keys::put_admin(&state.db, ADMIN_TOKEN_KEY, token).await?,
        None => {
            keys::revoke(&state.db, ADMIN_TOKEN_KEY).await?;
        }
    }
    if !keys::any_admin(&state.db).await? {
        let secret = rotate_first_admin(&state.db).await?;
        tracing::warn!(
            "no admin key existed, so one was made; it is shown only now:\n\n    \
             OL_API_KEY={secret}\n\n\
             Keep it (e.g. export it for the ol command). To make a new one (the old one \
             stops working): `ol admin-key --rotate` with DATABASE_URL set, or \
             `docker compose exec manager ol admin-key --rotate`."
        );
    }
    Ok(())
}

/// Makes (or replaces) the admin key named `admin`; returns its secret.
pub async fn rotate_first_admin(db: &sqlx::PgPool) -> anyhow::Result<String> {
    let secret = keys::new_secret();
    keys::put_admin(db, FIRST_ADMIN_KEY, &secret).await?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(scopes: &[&str], prefix: Option<&str>) -> Caller {
        Caller {
            key: "k".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            prefix: prefix.map(str::to_string),
            source: "127.0.0.1:1".parse().unwrap(),
        }
    }

    #[test]
    fn routes_need_the_right_scope() {
        assert_eq!(needs(&Method::GET, "/functions"), Need::Read);
        assert_eq!(needs(&Method::GET, "/billing"), Need::Read);
        assert_eq!(
            needs(&Method::PUT, "/functions/a"),
            Need::Deploy("a".into())
        );
        assert_eq!(
            needs(&Method::DELETE, "/functions/a"),
            Need::Deploy("a".into())
        );
        assert_eq!(
            needs(&Method::GET, "/functions/a/keys"),
            Need::Deploy("a".into())
        );
        assert_eq!(needs(&Method::GET, "/keys"), Need::Admin);
        assert_eq!(needs(&Method::GET, "/audit"), Need::Admin);
        assert_eq!(needs(&Method::POST, "/other"), Need::Admin);
    }

    #[test]
    fn scopes_grant_what_they_say() {
        let read = caller(&["read"], None);
        assert!(read.check(&Need::Read).is_ok());
        assert!(read.check(&Need::Deploy("a".into())).is_err());
        let deploy = caller(&["deploy"], Some("team-"));
        assert!(deploy.check(&Need::Read).is_ok());
        assert!(deploy.check(&Need::Deploy("team-a".into())).is_ok());
        let err = deploy.check(&Need::Deploy("other".into())).unwrap_err();
        assert!(err.contains("team-"), "{err}");
        assert!(deploy.check(&Need::Admin).is_err());
        assert!(caller(&["admin"], None).check(&Need::Admin).is_ok());
    }

    #[test]
    fn finds_cookies_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "xol_session=1; ol_session=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("2"));
    }

    #[test]
    fn sessions_refuse_other_origins() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "localhost:8080".parse().unwrap());
        assert!(same_origin(&h).is_ok());
        h.insert(header::ORIGIN, "http://localhost:8080".parse().unwrap());
        assert!(same_origin(&h).is_ok());
        h.insert(header::ORIGIN, "http://localhost:8081".parse().unwrap());
        assert!(same_origin(&h).is_err());
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", "same-site".parse().unwrap());
        assert!(same_origin(&h).is_err());
    }

    #[test]
    fn compares_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
