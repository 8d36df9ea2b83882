//! The dashboard: server-rendered pages (a little plain JavaScript for the
//! upload and call forms, which use the JSON API).
//!
//! `/` lists functions (URL, runtime, memory, calls, last call), the pool and
//! an upload form; `/functions/{name}` shows one function's configuration,
//! versions, recent calls and output. With `OL_ADMIN_TOKEN` set, pages ask
//! for the token once (`/login`) and keep it in a same-site cookie.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;

use super::auth::{constant_time_eq, token_cookie};
use super::ui::{esc, page};
use crate::app::AppState;
use crate::store::{functions, invocations};

/// Pages that need the admin token (when one is set).
pub fn pages() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/functions/{name}", get(function_page))
}

pub fn login_routes() -> Router<AppState> {
    Router::new().route("/login", get(login_form).post(login))
}

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

async fn login_form() -> Html<String> {
    Html(page(
        "Sign in",
        "<form method=\"post\" action=\"/login\" class=\"range\">\
         <label>Admin token <input type=\"password\" name=\"token\" autofocus></label>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"note\">The token is the manager's OL_ADMIN_TOKEN.</p>",
    ))
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(state): State<AppState>, Form(login): Form<Login>) -> Response {
    let Some(expected) = state.settings.admin_token.as_deref() else {
        return Redirect::to("/").into_response();
    };
    if !constant_time_eq(login.token.as_bytes(), expected.as_bytes()) {
        let body = page(
            "Sign in",
            "<p class=\"error\">That is not the admin token.</p>\
             <form method=\"post\" action=\"/login\" class=\"range\">\
             <label>Admin token <input type=\"password\" name=\"token\" autofocus></label>\
             <button type=\"submit\">Sign in</button></form>",
        );
        return (StatusCode::UNAUTHORIZED, Html(body)).into_response();
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

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "never".into())
}

async fn home(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Html<String>, super::error::ApiError> {
    let all = functions::list(&state.db).await?;
    let summary: HashMap<String, (i64, Option<chrono::DateTime<chrono::Utc>>)> =
        functions::call_summary(&state.db)
            .await?
            .into_iter()
            .map(|(name, calls, last)| (name, (calls, last)))
            .collect();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:8080")
        .to_string();
    let mut body = String::new();

    body.push_str("<h2>Functions</h2>");
    if all.is_empty() {
        body.push_str("<p class=\"empty\">No functions yet. Upload a zip holding <code>f.py</code> below.</p>");
    } else {
        body.push_str(
            "<table id=\"functions\"><thead><tr><th>Name</th><th>URL</th><th>Runtime</th><th>Memory</th>\
             <th>Calls</th><th>Last call</th></tr></thead><tbody>",
        );
        for f in &all {
            let (calls, last) = summary.get(&f.name).cloned().unwrap_or((0, None));
            let url = format!("http://{host}/fn/{}", f.name);
            let _ = write!(
                body,
                "<tr><td><a href=\"/functions/{n}\">{n}</a></td><td><code>{url}</code></td><td>{}</td>\
                 <td>{} MB</td><td>{calls}</td><td>{}</td></tr>",
                esc(&f.runtime),
                f.memory_mb,
                when(last),
                n = esc(&f.name),
                url = esc(&url),
            );
        }
        body.push_str("</tbody></table>");
    }

    let p = state.pool.status();
    let _ = write!(
        body,
        "<h2>Pool</h2><section class=\"cards\">\
         <div class=\"card\"><span>Busy</span><b>{}</b></div>\
         <div class=\"card\"><span>Idle</span><b>{}</b></div>\
         <div class=\"card\"><span>Paused</span><b>{}</b></div>\
         <div class=\"card\"><span>Prewarmed</span><b>{}</b></div>\
         <div class=\"card\"><span>Starting</span><b>{}</b></div>\
         <div class=\"card\"><span>Memory</span><b>{} / {} MB</b></div></section>",
        p.busy,
        p.idle,
        p.paused,
        p.prewarmed,
        p.starting + p.prewarming,
        p.used_mb,
        p.budget_mb
    );

    body.push_str(
        "<h2>Upload a function</h2>\
         <form id=\"upload\" class=\"range\">\
         <label>Name <input type=\"text\" name=\"name\" id=\"upload-name\" required pattern=\"[a-z0-9]([a-z0-9-]*[a-z0-9])?\" placeholder=\"hello\"></label>\
         <label>Zip <input type=\"file\" name=\"zip\" id=\"upload-zip\" accept=\".zip,application/zip\" required></label>\
         <button type=\"submit\" id=\"upload-submit\">Deploy</button></form>\
         <p id=\"upload-result\" class=\"note\"></p>\
         <script>\
         document.getElementById('upload').addEventListener('submit', async (e) => {\
           e.preventDefault();\
           const name = document.getElementById('upload-name').value;\
           const file = document.getElementById('upload-zip').files[0];\
           const out = document.getElementById('upload-result');\
           out.textContent = 'uploading ' + file.name + ' ...';\
           const r = await fetch('/api/v1/functions/' + encodeURIComponent(name), {method: 'PUT', headers: {'Content-Type': 'application/zip'}, body: file, credentials: 'same-origin'});\
           const body = await r.json();\
           if (r.ok) { location.href = '/functions/' + encodeURIComponent(name); }\
           else { out.className = 'error'; out.textContent = body.error ? body.error.message : r.statusText; }\
         });\
         </script>",
    );
    Ok(Html(page("Functions", &body)))
}

async fn function_page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, super::error::ApiError> {
    let Some(f) = functions::get(&state.db, &name).await? else {
        let body = format!(
            "<p class=\"error\">No function named {}.</p><p><a href=\"/\">All functions</a></p>",
            esc(&name)
        );
        return Ok((StatusCode::NOT_FOUND, Html(page("Not found", &body))).into_response());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:8080")
        .to_string();
    let url = format!("http://{host}/fn/{}", f.name);
    let mut body = String::new();
    let env: Vec<String> = f.environment.0.keys().map(|k| esc(k)).collect();
    let _ = write!(
        body,
        "<table class=\"config\"><tbody>\
         <tr><th>URL</th><td><code>{}</code></td></tr>\
         <tr><th>Version</th><td><code>{}</code></td></tr>\
         <tr><th>Runtime / handler</th><td>{} / <code>{}</code></td></tr>\
         <tr><th>Memory</th><td>{} MB</td></tr><tr><th>Timeout</th><td>{} s</td></tr>\
         <tr><th>Concurrency</th><td>{} per container, up to {} containers</td></tr>\
         <tr><th>Methods</th><td>{}</td></tr><tr><th>Environment</th><td>{}</td></tr>\
         <tr><th>Updated</th><td>{}</td></tr></tbody></table>",
        esc(&url),
        esc(&f.version),
        esc(&f.runtime),
        esc(&f.handler),
        f.memory_mb,
        f.timeout_ms as f64 / 1000.0,
        f.concurrency,
        f.max_concurrency,
        f.http_methods
            .as_ref()
            .map(|m| m.join(", "))
            .unwrap_or_else(|| "any".into()),
        if env.is_empty() {
            "none".into()
        } else {
            env.join(", ")
        },
        when(Some(f.updated_at)),
    );

    let _ = write!(
        body,
        "<h2>Call it</h2><form id=\"call\" class=\"range\">\
         <label>Event (JSON) <input type=\"text\" id=\"call-event\" value=\"{{}}\" size=\"40\"></label>\
         <button type=\"submit\" id=\"call-submit\">Call</button></form>\
         <pre id=\"call-result\"></pre>\
         <script>\
         document.getElementById('call').addEventListener('submit', async (e) => {{\
           e.preventDefault();\
           const r = await fetch('/run/{n}', {{method: 'POST', body: document.getElementById('call-event').value}});\
           document.getElementById('call-result').textContent = r.status + ' ' + await r.text();\
         }});\
         </script>",
        n = esc(&f.name)
    );

    let calls = invocations::recent(&state.db, &f.name, None, 20).await?;
    body.push_str("<h2>Recent calls</h2>");
    if calls.is_empty() {
        body.push_str("<p class=\"empty\">No calls yet.</p>");
    } else {
        body.push_str(
            "<table id=\"calls\"><thead><tr><th>Started</th><th>Status</th><th>Duration</th><th>Billed</th>\
             <th>Start</th><th>Peak memory</th><th>Request id</th></tr></thead><tbody>",
        );
        for c in &calls {
            let _ = write!(
                body,
                "<tr><td>{}</td><td class=\"status-{s}\">{s}</td><td>{} ms</td><td>{} ms</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                when(Some(c.started_at)),
                c.duration_ms,
                c.billed_ms,
                if c.cold { "cold" } else { "warm" },
                c.max_memory_used_mb.map(|m| format!("{m} MB")).unwrap_or_else(|| "-".into()),
                c.request_id,
                s = esc(&c.status),
            );
        }
        body.push_str("</tbody></table>");
    }

    let logs = invocations::logs(&state.db, &f.name, None, 10).await?;
    body.push_str("<h2>Output</h2>");
    if logs.is_empty() {
        body.push_str("<p class=\"empty\">No call printed anything yet.</p>");
    }
    for entry in &logs {
        let _ = write!(
            body,
            "<p class=\"note\">{} · {} · <code>{}</code></p><pre>{}</pre>",
            when(Some(entry.started_at)),
            esc(&entry.status),
            entry.request_id,
            esc(&entry.logs)
        );
    }

    let versions = functions::versions(&state.db, &f.name).await?;
    body.push_str("<h2>Versions</h2><table><thead><tr><th>Deployed</th><th>Version (sha256)</th><th>Zip</th></tr></thead><tbody>");
    for (version, at, size) in versions {
        let _ = write!(
            body,
            "<tr><td>{}</td><td><code>{}</code></td><td>{:.1} KiB</td></tr>",
            when(Some(at)),
            esc(&version),
            size as f64 / 1024.0
        );
    }
    body.push_str("</tbody></table>");
    let _ = write!(
        body,
        "<p class=\"note\"><a href=\"/billing?function={n}\">Billing for {n}</a> · <a href=\"/\">All functions</a></p>",
        n = esc(&f.name)
    );
    Ok(Html(page(&f.name, &body)).into_response())
}
