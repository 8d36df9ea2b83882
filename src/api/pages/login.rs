//! `/login`: with `OL_ADMIN_TOKEN` set, pages ask for the token once and keep
//! it in a same-site, HTTP-only cookie that the API's auth also accepts.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout;
use crate::api::auth::{constant_time_eq, token_cookie};
use crate::app::AppState;

/// Sends a browser without the token to the login form.
pub async fn require_login(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match state.settings.admin_token.as_deref() {
        None => next.run(request).await,
        Some(expected) => match token_cookie(request.headers()) {
            Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
                next.run(request).await
            }
            _ => Redirect::to("/login").into_response(),
        },
    }
}

fn token_form() -> Markup {
    html! {
        form.range method="post" action="/login" {
            label { "Admin token " input type="password" name="token" autofocus; }
            button type="submit" { "Sign in" }
        }
    }
}

pub async fn form() -> Markup {
    layout(
        "Sign in",
        html! {
            (token_form())
            p.note { "The token is the manager's OL_ADMIN_TOKEN." }
        },
    )
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
}

pub async fn sign_in(State(state): State<AppState>, Form(login): Form<Login>) -> Response {
    let Some(expected) = state.settings.admin_token.as_deref() else {
        return Redirect::to("/").into_response();
    };
    if !constant_time_eq(login.token.as_bytes(), expected.as_bytes()) {
        let page = layout(
            "Sign in",
            html! {
                p.error { "That is not the admin token." }
                (token_form())
            },
        );
        return (StatusCode::UNAUTHORIZED, page).into_response();
    }
    let mut response = Redirect::to("/").into_response();
    let cookie = format!(
        "ol_token={}; Path=/; HttpOnly; SameSite=Strict",
        login.token
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
