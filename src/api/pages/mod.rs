//! The dashboard: pages rendered on the server with `maud`, whose templates
//! escape every value spliced into them, so no page depends on remembering
//! to escape a function's name or a call's output.
//!
//! One file per page, all wrapped by [`layout`]:
//! `home` (`/`: functions, pool, upload form), `function`
//! (`/functions/{name}`), `billing` (`/billing`, with `chart` for its SVG)
//! and `login` (`/login`, `/logout`, and the redirect of browsers without a
//! session).
//! The upload and call forms use a little plain JavaScript over the JSON API.

mod billing;
mod chart;
mod function;
mod home;
mod login;

use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::state::AppState;

/// Every page: those that need a session behind [`login::require_login`],
/// and the login form itself.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(home::page))
        .route("/functions/{name}", get(function::page))
        .route("/billing", get(billing::page))
        .layer(axum::middleware::from_fn_with_state(
            state,
            login::require_login,
        ))
        .route("/login", get(login::form).post(login::sign_in))
        .route("/logout", axum::routing::post(login::sign_out))
}

/// The page around `body`: header, navigation, title and style.
fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · openlambda" }
                style { (PreEscaped(include_str!("style.css"))) }
            }
            body {
                header {
                    a.brand href="/" { "λ openlambda" }
                    nav {
                        a href="/" { "Functions" } a href="/billing" { "Billing" }
                        form.logout method="post" action="/logout" { button #logout type="submit" { "Sign out" } }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A moment as the pages show it; `never` for none.
fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "never".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_escapes_the_title() {
        let page = layout("<script>alert(1)</script>", html! { p { "body" } }).into_string();
        assert!(!page.contains("<script>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    }
}
