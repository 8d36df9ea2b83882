//! `/functions/{name}`: one function's configuration, a form to call it, its
//! recent calls, what they printed and its versions.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped};

use super::{layout, when};
use crate::api::base_url;
use crate::api::error::ApiError;
use crate::state::AppState;
use crate::store::functions::{self, Function};
use crate::store::invocations::{self, Invocation, LogEntry};

pub async fn page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(f) = functions::get(&state.db, &name).await? else {
        return Ok((StatusCode::NOT_FOUND, not_found(&name)).into_response());
    };
    let calls = invocations::recent(&state.db, &f.name, None, 20).await?;
    let logs = invocations::logs(&state.db, &f.name, None, 10).await?;
    let versions = functions::versions(&state.db, &f.name).await?;
    let history = crate::store::audit::recent(&state.db, Some(&f.name), 20).await?;
    let schedules = crate::store::schedules::all(&state.db, Some(&f.name)).await?;
    let fired = crate::store::schedules::recent(&state.db, &f.name, 10).await?;
    let body = html! {
        (configuration(&f, &format!("{}/fn/{}", base_url(&headers, &state), f.name)))
        h2 { "Call it" }
        (call_form(&f.name))
        h2 { "Recent calls" }
        (recent_calls(&calls))
        h2 { "Output" }
        (output(&logs))
        @if !schedules.is_empty() {
            h2 { "Schedules" }
            (schedules_table(&schedules, &fired, Utc::now()))
        }
        h2 { "Versions" }
        (versions_table(&versions))
        h2 { "History" }
        (history_table(&history))
        p.note {
            a href={ "/billing?function=" (f.name) } { "Billing for " (f.name) }
            " · "
            a href="/" { "All functions" }
        }
    };
    Ok(layout(&f.name, body).into_response())
}

fn not_found(name: &str) -> Markup {
    layout(
        "Not found",
        html! {
            p.error { "No function named " (name) "." }
            p { a href="/" { "All functions" } }
        },
    )
}

fn configuration(f: &Function, url: &str) -> Markup {
    let methods = f
        .http_methods
        .as_ref()
        .map(|m| m.join(", "))
        .unwrap_or_else(|| "any".into());
    let env: Vec<&str> = f.environment.keys().map(String::as_str).collect();
    let env = if env.is_empty() {
        "none".to_string()
    } else {
        env.join(", ")
    };
    html! {
        table.config { tbody {
            tr { th { "URL" } td { code { (url) } } }
            tr { th { "Version" } td { code { (f.version) } } }
            tr { th { "Runtime / handler" } td { (f.runtime) " / " code { (f.handler) } } }
            tr { th { "Memory" } td { (f.memory_mb) " MB" } }
            tr { th { "Timeout" } td { (f.timeout_ms as f64 / 1000.0) " s" } }
            tr {
                th { "Concurrency" }
                td { (f.concurrency) " per container, up to " (f.max_concurrency) " containers" }
            }
            tr { th { "Methods" } td { (methods) } }
            tr { th { "Environment" } td { (env) } }
            tr { th { "Updated" } td { (when(Some(f.updated_at))) } }
        } }
    }
}

/// Posts the event to `/api/v1/functions/{name}/run` on the management
/// origin (function URLs are on another origin; the name comes from the form's
/// `data-function`, never spliced into the script) and shows the answer.
const CALL_SCRIPT: &str = "
document.getElementById('call').addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = encodeURIComponent(e.target.dataset.function);
  const r = await fetch('/api/v1/functions/' + name + '/run', {method: 'POST', body: document.getElementById('call-event').value, credentials: 'same-origin'});
  document.getElementById('call-result').textContent = r.status + ' ' + await r.text();
});
";

fn call_form(name: &str) -> Markup {
    html! {
        form #call .range data-function=(name) {
            label { "Event (JSON) " input #call-event type="text" value="{}" size="40"; }
            button #call-submit type="submit" { "Call" }
        }
        pre #call-result {}
        script { (PreEscaped(CALL_SCRIPT)) }
    }
}

fn recent_calls(calls: &[Invocation]) -> Markup {
    html! {
        @if calls.is_empty() {
            p.empty { "No calls yet." }
        } @else {
            table #calls {
                thead { tr {
                    th { "Started" } th { "Status" } th { "Duration" } th { "Billed" }
                    th { "Start" } th { "Peak memory" } th { "Request id" }
                } }
                tbody {
                    @for c in calls {
                        tr {
                            td { (when(Some(c.started_at))) }
                            td class={ "status-" (c.status) } { (c.status) }
                            td { (c.duration_ms) " ms" }
                            td { (c.billed_ms) " ms" }
                            td { (start_word(c)) }
                            td {
                                @match c.max_memory_used_mb {
                                    Some(mb) => { (mb) " MB" }
                                    None => "-",
                                }
                            }
                            td { code { (c.request_id) } }
                        }
                    }
                }
            }
        }
    }
}

/// How the call's container was had; records older than that column say
/// only cold or warm.
fn start_word(c: &Invocation) -> &str {
    match (&c.start, c.cold) {
        (Some(start), _) => start,
        (None, true) => "cold",
        (None, false) => "warm",
    }
}

fn output(logs: &[LogEntry]) -> Markup {
    html! {
        @if logs.is_empty() {
            p.empty { "No call printed anything yet." }
        }
        @for entry in logs {
            p.note {
                (when(Some(entry.started_at))) " · " (entry.status) " · "
                code { (entry.request_id) }
            }
            pre { (entry.logs) }
        }
    }
}

/// Who changed the function, when, from where (the audit log).
fn history_table(entries: &[crate::store::audit::Entry]) -> Markup {
    html! {
        table #history {
            thead { tr { th { "When" } th { "Key" } th { "From" } th { "Change" } th { "Detail" } } }
            tbody {
                @for e in entries {
                    tr {
                        td { (when(Some(e.at))) }
                        td { (e.actor) }
                        td { (e.source) }
                        td { (e.action) }
                        td { code { (e.detail.0.to_string()) } }
                    }
                }
            }
        }
    }
}

/// Each `triggers.cron` schedule with its next ticks, then the latest ticks
/// fired and how their calls ended.
fn schedules_table(
    schedules: &[crate::store::schedules::ScheduleRow],
    fired: &[crate::store::schedules::Fired],
    now: DateTime<Utc>,
) -> Markup {
    html! {
        table #schedules {
            thead { tr { th { "Schedule (UTC)" } th { "Next ticks" } th { "Last tick" } } }
            tbody {
                @for s in schedules {
                    tr {
                        td { code { (s.schedule) } }
                        td {
                            @for tick in crate::events::schedule::next_ticks_of(&s.schedule, now, 3) {
                                (when(Some(tick))) br;
                            }
                        }
                        td { (when(s.last_tick)) }
                    }
                }
            }
        }
        @if !fired.is_empty() {
            table #ticks {
                thead { tr { th { "Tick" } th { "Schedule" } th { "Request" } th { "Result" } } }
                tbody {
                    @for t in fired {
                        tr {
                            td { (when(Some(t.tick))) }
                            td { code { (t.schedule) } }
                            td { code { (t.request_id) } }
                            td { (t.state.as_deref().unwrap_or("-")) }
                        }
                    }
                }
            }
        }
    }
}

fn versions_table(versions: &[(String, DateTime<Utc>, i64)]) -> Markup {
    html! {
        table {
            thead { tr { th { "Deployed" } th { "Version (sha256)" } th { "Zip" } } }
            tbody {
                @for (version, at, size) in versions {
                    tr {
                        td { (when(Some(*at))) }
                        td { code { (version) } }
                        td { (format!("{:.1}", *size as f64 / 1024.0)) " KiB" }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_and_a_call_output_are_escaped() {
        let page = not_found("<script>alert(1)</script>").into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("No function named &lt;script&gt;alert(1)&lt;/script&gt;."));

        let logs = [LogEntry {
            request_id: uuid::Uuid::nil(),
            started_at: DateTime::<Utc>::UNIX_EPOCH,
            status: "error\"><b>".into(),
            logs: "</pre><script>alert(2)</script>".into(),
        }];
        let html = output(&logs).into_string();
        assert!(
            !html.contains("<script>") && !html.contains("<b>"),
            "{html}"
        );
        assert!(
            html.contains("<pre>&lt;/pre&gt;&lt;script&gt;alert(2)&lt;/script&gt;</pre>"),
            "{html}"
        );
    }

    #[test]
    fn schedules_show_their_next_ticks() {
        let now: DateTime<Utc> = "2026-11-29T10:00:30Z".parse().unwrap();
        let rows = [crate::store::schedules::ScheduleRow {
            function: "f".into(),
            schedule: "*/5 * * * *".into(),
            catch_up: false,
            created_at: now,
            last_tick: None,
        }];
        let html = schedules_table(&rows, &[], now).into_string();
        for tick in ["10:05:00", "10:10:00", "10:15:00"] {
            assert!(html.contains(&format!("2026-11-29 {tick} UTC")), "{html}");
        }
        assert!(
            html.contains("never") && !html.contains("id=\"ticks\""),
            "{html}"
        );
    }

    #[test]
    fn the_call_form_keeps_the_name_out_of_the_script() {
        let html = call_form("a'b<c").into_string();
        assert!(html.contains("data-function=\"a'b&lt;c\""), "{html}");
        assert!(html.contains(CALL_SCRIPT), "{html}");
    }
}
