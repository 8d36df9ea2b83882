//! `/login` and `/logout`: the dashboard exchanges an API key for a session.
//!
//! The key is sent once, in the login form; the browser keeps only a random
//! session id (stored hashed, with an expiry) in an HttpOnly, SameSite=Strict
//! cookie, Secure when the page came over HTTPS. Logout ends the session.
//! Failed logins are limited per source address.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use super::layout;
use crate::api::auth::{cookie, identify, Caller, SESSION_COOKIE};
use crate::state::AppState;
use crate::store::keys;

/// Sends a browser without a valid session (or a script without a valid
/// bearer key) to the login form. Every scope may read the pages.
pub async fn require_login(
    State(state): State<AppState>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    match identify(&state, request.headers(), source).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(_) => Redirect::to("/login").into_response(),
    }
}

fn key_form() -> Markup {
    html! {
        form.range method="post" action="/login" {
            label { "API key " input #login-key type="password" name="token" autocomplete="off" autofocus; }
            button #login-submit type="submit" { "Sign in" }
        }
    }
}

pub async fn form() -> Markup {
    layout(
        "Sign in",
        html! {
            (key_form())
            p.note {
                "An API key: the admin key the manager printed on its first start, "
                "OL_ADMIN_TOKEN, or one from " code { "ol keys create" } "."
            }
        },
    )
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
}

fn refused(status: StatusCode, message: &str) -> Response {
    let page = layout(
        "Sign in",
        html! {
            p.error { (message) }
            (key_form())
        },
    );
    (status, page).into_response()
}

/// Whether the browser reached us over HTTPS (directly, or through a proxy
/// that says so), so the cookie is marked Secure.
fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

fn session_cookie(value: &str, max_age: u64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .ok()
}

pub async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(login): Form<Login>,
) -> Response {
    if let Err(secs) = state.logins.check(source.ip()) {
        let mut r = refused(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many failed sign-ins from this address; try again in {secs} s."),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return r;
    }
    let key = match keys::find(&state.db, login.token.trim()).await {
        Ok(Some(key)) => key,
        Ok(None) => {
            state.logins.failed(source.ip());
            tracing::info!(source = %source.ip(), "failed dashboard sign-in");
            return refused(
                StatusCode::UNAUTHORIZED,
                "That is not a valid API key (wrong, or revoked).",
            );
        }
        Err(e) => return crate::api::error::ApiError::from(e).into_response(),
    };
    state.logins.succeeded(source.ip());
    let session = match keys::open_session(&state.db, &key.name, state.settings.session_ttl).await {
        Ok(id) => id,
        Err(e) => return crate::api::error::ApiError::from(e).into_response(),
    };
    let caller = Caller {
        key: key.name,
        scopes: key.scopes,
        prefix: key.prefix,
        source,
    };
    caller.audit(&state, "login", None, json!({})).await;
    let mut response = Redirect::to("/").into_response();
    let ttl = state.settings.session_ttl.as_secs();
    if let Some(value) = session_cookie(&session, ttl, over_https(&headers)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Ends the session (in the database, so a copied cookie stops working
/// too) and clears the cookie.
pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(session) = cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = keys::close_session(&state.db, session).await {
            return crate::api::error::ApiError::from(e).into_response();
        }
    }
    let mut response = Redirect::to("/login").into_response();
    if let Some(value) = session_cookie("", 0, over_https(&headers)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_locked_down() {
        let c = session_cookie("abc", 60, true).unwrap();
        let c = c.to_str().unwrap();
        for part in [
            "ol_session=abc",
            "HttpOnly",
            "SameSite=Strict",
            "Max-Age=60",
            "Secure",
        ] {
            assert!(c.contains(part), "{c}");
        }
        let c = session_cookie("abc", 60, false).unwrap();
        assert!(!c.to_str().unwrap().contains("Secure"));
    }
}
