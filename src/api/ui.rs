//! `/billing`: the billing report as a page, rendered on the server (no
//! JavaScript): a date range form, totals, a table per function and an
//! inline SVG chart of cost per day.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{Days, NaiveDate};

use super::billing::{report_of, usage, ReportQuery, UsageRows};
use crate::app::AppState;
use crate::meter::Usage;

pub fn router() -> Router<AppState> {
    Router::new().route("/billing", get(billing_page))
}

/// Escapes text for HTML.
pub fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Dollars with enough digits to show what single calls cost (fractions of
/// a micro-dollar) without trailing noise.
fn money(usd: f64) -> String {
    if usd == 0.0 {
        return "$0".into();
    }
    if usd >= 0.01 {
        return format!("${usd:.4}");
    }
    let text = format!("{usd:.11}");
    format!("${}", text.trim_end_matches('0'))
}

async fn billing_page(State(state): State<AppState>, Query(query): Query<ReportQuery>) -> Response {
    // One query, by function and day; the per-function lines and the
    // per-day chart are both exact sums of it.
    let daily = match usage(&state, &query, true).await {
        Ok(daily) => daily,
        Err(e) => {
            let body = page(
                "Billing",
                &format!(
                    "<p class=\"error\">{}</p>{}",
                    esc(&e.message),
                    form(&query, "", "")
                ),
            );
            return (e.status, Html(body)).into_response();
        }
    };
    let prices = &state.settings.billing;
    let mut per_function: BTreeMap<String, Usage> = BTreeMap::new();
    let mut per_day: BTreeMap<NaiveDate, Usage> = BTreeMap::new();
    let mut day = daily.from;
    while day < daily.to && per_day.len() < 366 {
        per_day.insert(day, Usage::default());
        day = day + Days::new(1);
    }
    for (name, day, usage) in &daily.rows {
        *per_function.entry(name.clone()).or_default() += *usage;
        if let Some(d) = day {
            *per_day.entry(*d).or_default() += *usage;
        }
    }
    let summary = report_of(
        UsageRows {
            from: daily.from,
            to: daily.to,
            rows: per_function
                .into_iter()
                .map(|(n, u)| (n, None, u))
                .collect(),
        },
        prices,
    );

    let mut body = form(&query, &summary.from.to_string(), &summary.to.to_string());
    let t = &summary.total;
    let _ = write!(
        body,
        "<section class=\"cards\">\
         <div class=\"card\"><span>Cost</span><b>{}</b></div>\
         <div class=\"card\"><span>Invocations</span><b>{}</b></div>\
         <div class=\"card\"><span>GB-seconds</span><b>{:.3}</b></div>\
         <div class=\"card\"><span>Billed time</span><b>{:.1} s</b></div></section>",
        money(t.cost),
        t.invocations,
        t.gb_seconds,
        t.billed_ms as f64 / 1000.0
    );

    // Cost per day over the whole range, zeros included.
    let per_day: BTreeMap<NaiveDate, f64> = per_day
        .into_iter()
        .map(|(day, usage)| (day, usage.cost(prices)))
        .collect();
    body.push_str("<h2>Cost per day</h2>");
    body.push_str(&chart(&per_day));

    body.push_str("<h2>By function</h2>");
    if summary.functions.is_empty() {
        body.push_str("<p class=\"empty\">No billed calls in this range.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th>Function</th><th>Invocations</th><th>Billed time</th>\
             <th>GB-seconds</th><th>Cost</th><th>Share</th></tr></thead><tbody>",
        );
        for line in &summary.functions {
            let f = &line.figures;
            let share = if t.cost > 0.0 {
                f.cost / t.cost * 100.0
            } else {
                0.0
            };
            let _ = write!(
                body,
                "<tr><td><a href=\"?from={from}&amp;to={to}&amp;function={name}\">{name}</a></td>\
                 <td>{}</td><td>{:.1} s</td><td>{:.3}</td><td>{}</td>\
                 <td><div class=\"bar\"><i style=\"width:{share:.1}%\"></i></div></td></tr>",
                f.invocations,
                f.billed_ms as f64 / 1000.0,
                f.gb_seconds,
                money(f.cost),
                name = esc(&line.name),
                from = summary.from,
                to = summary.to,
            );
        }
        let _ = write!(
            body,
            "</tbody><tfoot><tr><td>Total</td><td>{}</td><td>{:.1} s</td><td>{:.3}</td><td>{}</td><td></td></tr></tfoot></table>",
            t.invocations,
            t.billed_ms as f64 / 1000.0,
            t.gb_seconds,
            money(t.cost)
        );
    }
    let csv_query = format!(
        "from={}&amp;to={}{}",
        summary.from,
        summary.to,
        query
            .function
            .as_deref()
            .filter(|f| !f.is_empty())
            .map(|f| format!("&amp;function={}", esc(f)))
            .unwrap_or_default()
    );
    let _ = write!(
        body,
        "<p class=\"note\">Per call: duration rounded up to {} ms &times; memory, at ${} per GB-second \
         plus ${} per request. From {} up to (not including) {}, UTC. \
         <a href=\"/api/v1/billing?{csv_query}&amp;format=csv\">CSV</a> · \
         <a href=\"/api/v1/billing?{csv_query}&amp;group=day&amp;format=csv\">CSV by day</a></p>",
        prices.granularity_ms, prices.price_gb_second, prices.price_request, summary.from, summary.to
    );
    Html(page("Billing", &body)).into_response()
}

fn form(query: &ReportQuery, from: &str, to: &str) -> String {
    let function = query.function.as_deref().unwrap_or("");
    format!(
        "<form method=\"get\" class=\"range\">\
         <label>From <input type=\"date\" name=\"from\" value=\"{}\"></label>\
         <label>To (exclusive) <input type=\"date\" name=\"to\" value=\"{}\"></label>\
         <label>Function <input type=\"text\" name=\"function\" value=\"{}\" placeholder=\"all\"></label>\
         <button type=\"submit\">Show</button></form>",
        esc(from),
        esc(to),
        esc(function)
    )
}

/// A bar chart of `values` per day, as inline SVG.
fn chart(values: &BTreeMap<NaiveDate, f64>) -> String {
    let (w, h, pad) = (900.0, 220.0, 40.0);
    let max = values.values().cloned().fold(0.0_f64, f64::max);
    let n = values.len().max(1) as f64;
    let slot = (w - pad * 2.0) / n;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"Cost per day\">\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" class=\"axis\"/>",
        h - pad,
        w - pad,
        h - pad
    );
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"16\" class=\"label\">max {}</text>",
        pad,
        money(max)
    );
    for (i, (day, value)) in values.iter().enumerate() {
        let bar = if max > 0.0 {
            (h - pad * 2.0) * value / max
        } else {
            0.0
        };
        let x = pad + slot * i as f64 + slot * 0.15;
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar:.1}\" class=\"bar\"><title>{day}: {}</title></rect>",
            h - pad - bar,
            slot * 0.7,
            money(*value)
        );
        // Label some days, so the axis stays readable.
        let every = (values.len() / 10).max(1);
        if i % every == 0 {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\" class=\"label\" text-anchor=\"middle\">{}</text>",
                x + slot * 0.35,
                h - pad + 16.0,
                day.format("%b %d")
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The page around `body`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · openlambda</title><style>{STYLE}</style></head>\
         <body><header><a href=\"/\" class=\"brand\">λ openlambda</a>\
         <nav><a href=\"/\">Functions</a><a href=\"/billing\">Billing</a></nav></header>\
         <main><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title)
    )
}

const STYLE: &str = "
:root { --ink:#1d2330; --muted:#6b7280; --line:#e5e7eb; --accent:#4f46e5; --bg:#f8fafc; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui, -apple-system, 'Segoe UI', sans-serif; color:var(--ink); background:var(--bg); }
header { display:flex; align-items:center; gap:24px; padding:14px 32px; background:#fff; border-bottom:1px solid var(--line); }
header .brand { font-weight:700; color:var(--ink); text-decoration:none; font-size:18px; }
header nav a { color:var(--muted); text-decoration:none; margin-right:16px; }
main { max-width:1040px; margin:0 auto; padding:24px 32px 64px; }
h1 { font-size:26px; margin:8px 0 20px; } h2 { font-size:17px; margin:32px 0 12px; }
form.range { display:flex; flex-wrap:wrap; gap:16px; align-items:flex-end; background:#fff; padding:16px; border:1px solid var(--line); border-radius:10px; }
form.range label { display:flex; flex-direction:column; font-size:13px; color:var(--muted); gap:4px; }
input { font:inherit; padding:6px 8px; border:1px solid var(--line); border-radius:6px; }
button { font:inherit; padding:7px 18px; border:0; border-radius:6px; background:var(--accent); color:#fff; cursor:pointer; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(180px,1fr)); gap:16px; margin-top:20px; }
.card { background:#fff; border:1px solid var(--line); border-radius:10px; padding:14px 18px; }
.card span { display:block; color:var(--muted); font-size:13px; } .card b { font-size:24px; }
table { width:100%; border-collapse:collapse; background:#fff; border:1px solid var(--line); border-radius:10px; overflow:hidden; }
th, td { text-align:left; padding:9px 14px; border-bottom:1px solid var(--line); }
th { font-size:13px; color:var(--muted); font-weight:600; background:#f9fafb; }
td:not(:first-child), th:not(:first-child) { text-align:right; }
tfoot td { font-weight:700; }
td a { color:var(--accent); text-decoration:none; }
div.bar { background:#eef2ff; height:8px; border-radius:4px; min-width:80px; }
div.bar i { display:block; height:8px; border-radius:4px; background:var(--accent); }
svg.chart { width:100%; height:auto; background:#fff; border:1px solid var(--line); border-radius:10px; }
svg .bar { fill:var(--accent); } svg .axis { stroke:#cbd5e1; } svg .label { font-size:11px; fill:var(--muted); }
.note, .empty { color:var(--muted); font-size:13px; } .error { color:#b91c1c; font-weight:600; }
code { font:13px ui-monospace, SFMono-Regular, Menlo, monospace; background:#f1f5f9; padding:1px 5px; border-radius:4px; }
pre:empty { display:none; }
pre { background:#0f172a; color:#e2e8f0; padding:12px 14px; border-radius:8px; overflow:auto; font-size:13px; }
table.config th { width:200px; text-align:left; } table.config td { text-align:left !important; }
td.status-success { color:#15803d; } td[class^=status-]:not(.status-success) { color:#b91c1c; }
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_shows_what_a_call_costs() {
        assert_eq!(money(0.0), "$0");
        assert_eq!(money(0.000_000_408_333_5), "$0.00000040833");
        assert_eq!(money(12.345_67), "$12.3457");
        assert_eq!(esc("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }
}
