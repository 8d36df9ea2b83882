//! `/`: the functions (URL, runtime, memory, calls, last call), the pool's
//! containers and memory, and a form to upload a zip.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped};

use super::{layout, when};
use crate::api::base_url;
use crate::api::error::ApiError;
use crate::pool::PoolStatus;
use crate::state::AppState;
use crate::store::functions;

pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Result<Markup, ApiError> {
    let all = functions::list(&state.db).await?;
    let mut summary: HashMap<String, (i64, Option<DateTime<Utc>>)> =
        functions::call_summary(&state.db)
            .await?
            .into_iter()
            .map(|(name, calls, last)| (name, (calls, last)))
            .collect();
    let base = base_url(&headers, &state);
    let rows: Vec<Row> = all
        .into_iter()
        .map(|f| {
            let (calls, last) = summary.remove(&f.name).unwrap_or((0, None));
            Row {
                url: format!("{base}/fn/{}", f.name),
                name: f.name,
                runtime: f.runtime.to_string(),
                memory_mb: f.memory_mb,
                calls,
                last,
            }
        })
        .collect();
    Ok(layout(
        "Functions",
        html! {
            h2 { "Functions" }
            (functions_table(&rows))
            h2 { "Pool" }
            (pool_cards(&state.pool.status()))
            h2 { "Upload a function" }
            (upload_form())
        },
    ))
}

/// One line of the functions table.
struct Row {
    name: String,
    url: String,
    runtime: String,
    memory_mb: i32,
    calls: i64,
    last: Option<DateTime<Utc>>,
}

fn functions_table(rows: &[Row]) -> Markup {
    html! {
        @if rows.is_empty() {
            p.empty { "No functions yet. Upload a zip holding " code { "f.py" } " below." }
        } @else {
            table #functions {
                thead { tr {
                    th { "Name" } th { "URL" } th { "Runtime" } th { "Memory" }
                    th { "Calls" } th { "Last call" }
                } }
                tbody {
                    @for row in rows {
                        tr {
                            td { a href={ "/functions/" (row.name) } { (row.name) } }
                            td { code { (row.url) } }
                            td { (row.runtime) }
                            td { (row.memory_mb) " MB" }
                            td { (row.calls) }
                            td { (when(row.last)) }
                        }
                    }
                }
            }
        }
    }
}

fn pool_cards(p: &PoolStatus) -> Markup {
    let cards = [
        ("Busy", p.busy.to_string()),
        ("Idle", p.idle.to_string()),
        ("Paused", p.paused.to_string()),
        ("Prewarmed", p.prewarmed.to_string()),
        ("Starting", (p.starting + p.prewarming).to_string()),
        ("Memory", format!("{} / {} MB", p.used_mb, p.budget_mb)),
    ];
    html! {
        section.cards {
            @for (label, value) in cards {
                div.card { span { (label) } b { (value) } }
            }
        }
    }
}

/// Uploads with `PUT /api/v1/functions/{name}`, then opens the function's page.
const UPLOAD_SCRIPT: &str = "
document.getElementById('upload').addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = document.getElementById('upload-name').value;
  const file = document.getElementById('upload-zip').files[0];
  const out = document.getElementById('upload-result');
  out.textContent = 'uploading ' + file.name + ' ...';
  const r = await fetch('/api/v1/functions/' + encodeURIComponent(name), {method: 'PUT', headers: {'Content-Type': 'application/zip'}, body: file, credentials: 'same-origin'});
  const body = await r.json();
  if (r.ok) { location.href = '/functions/' + encodeURIComponent(name); }
  else { out.className = 'error'; out.textContent = body.error ? body.error.message : r.statusText; }
});
";

fn upload_form() -> Markup {
    html! {
        form #upload .range {
            label {
                "Name "
                input #upload-name type="text" name="name" required
                    pattern="[a-z0-9]([a-z0-9-]*[a-z0-9])?" placeholder="hello";
            }
            label {
                "Zip "
                input #upload-zip type="file" name="zip" accept=".zip,application/zip" required;
            }
            button #upload-submit type="submit" { "Deploy" }
        }
        p #upload-result .note {}
        script { (PreEscaped(UPLOAD_SCRIPT)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_name_is_escaped_in_the_table() {
        let rows = [Row {
            name: "<script>alert(1)</script>".into(),
            url: "http://h/fn/<script>".into(),
            runtime: "python".into(),
            memory_mb: 128,
            calls: 3,
            last: None,
        }];
        let html = functions_table(&rows).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(html.contains("<td>3</td><td>never</td>"), "{html}");
    }
}
