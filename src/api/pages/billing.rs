//! `/billing`: the billing report as a page: a date range form, totals, a
//! table per function and a chart of cost per day.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{Days, NaiveDate};
use maud::{html, Markup};

use super::chart::{chart, money};
use super::layout;
use crate::api::billing::{report_of, usage, Figures, Report, ReportQuery, UsageRows};
use crate::config::BillingSettings;
use crate::meter::Usage;
use crate::state::AppState;

pub async fn page(State(state): State<AppState>, Query(query): Query<ReportQuery>) -> Response {
    // One query, by function and day; the per-function lines and the
    // per-day chart are both exact sums of it.
    let daily = match usage(&state, &query, true).await {
        Ok(daily) => daily,
        Err(e) => {
            let body = html! {
                p.error { (e.message) }
                (range_form(&query, "", ""))
            };
            return (e.status, layout("Billing", body)).into_response();
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
    // Cost per day over the whole range, zeros included.
    let per_day: BTreeMap<NaiveDate, f64> = per_day
        .into_iter()
        .map(|(day, usage)| (day, usage.cost(prices)))
        .collect();
    layout("Billing", report(&query, &summary, &per_day, prices)).into_response()
}

fn report(
    query: &ReportQuery,
    summary: &Report,
    per_day: &BTreeMap<NaiveDate, f64>,
    prices: &BillingSettings,
) -> Markup {
    let t = &summary.total;
    let (from, to) = (summary.from, summary.to);
    let only = query.function.as_deref().filter(|f| !f.is_empty());
    let csv = |by_day: bool| {
        let mut url = format!("/api/v1/billing?from={from}&to={to}");
        if let Some(function) = only {
            url.push_str(&format!("&function={function}"));
        }
        if by_day {
            url.push_str("&group=day");
        }
        url + "&format=csv"
    };
    html! {
        (range_form(query, &from.to_string(), &to.to_string()))
        section.cards {
            div.card { span { "Cost" } b { (money(t.cost)) } }
            div.card { span { "Invocations" } b { (t.invocations) } }
            div.card { span { "GB-seconds" } b { (format!("{:.3}", t.gb_seconds)) } }
            div.card { span { "Billed time" } b { (seconds(t.billed_ms)) } }
        }
        h2 { "Cost per day" }
        (chart(per_day))
        h2 { "By function" }
        @if summary.functions.is_empty() {
            p.empty { "No billed calls in this range." }
        } @else {
            table {
                thead { tr {
                    th { "Function" } th { "Invocations" } th { "Billed time" }
                    th { "GB-seconds" } th { "Cost" } th { "Share" }
                } }
                tbody {
                    @for line in &summary.functions {
                        @let share = if t.cost > 0.0 { line.figures.cost / t.cost * 100.0 } else { 0.0 };
                        tr {
                            td {
                                a href={ "?from=" (from) "&to=" (to) "&function=" (line.name) } {
                                    (line.name)
                                }
                            }
                            (figures(&line.figures))
                            td { div.bar { i style={ "width:" (format!("{share:.1}")) "%" } {} } }
                        }
                    }
                }
                tfoot { tr { td { "Total" } (figures(t)) td {} } }
            }
        }
        p.note {
            "Per call: duration rounded up to " (prices.granularity_ms) " ms × memory, at $"
            (prices.price_gb_second) " per GB-second plus $" (prices.price_request)
            " per request. From " (from) " up to (not including) " (to) ", UTC. "
            a href=(csv(false)) { "CSV" }
            " · "
            a href=(csv(true)) { "CSV by day" }
        }
    }
}

/// The cells of a line: invocations, billed time, GB-seconds, cost.
fn figures(f: &Figures) -> Markup {
    html! {
        td { (f.invocations) }
        td { (seconds(f.billed_ms)) }
        td { (format!("{:.3}", f.gb_seconds)) }
        td { (money(f.cost)) }
    }
}

fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn range_form(query: &ReportQuery, from: &str, to: &str) -> Markup {
    html! {
        form.range method="get" {
            label { "From " input type="date" name="from" value=(from); }
            label { "To (exclusive) " input type="date" name="to" value=(to); }
            label {
                "Function "
                input type="text" name="function" value=(query.function.as_deref().unwrap_or(""))
                    placeholder="all";
            }
            button type="submit" { "Show" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_asked_for_is_escaped_in_the_form_and_links() {
        let query = ReportQuery {
            function: Some("\"><script>alert(1)</script>".into()),
            ..ReportQuery::default()
        };
        let summary = Report {
            from: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            to: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
            currency: "USD",
            functions: Vec::new(),
            total: Figures {
                invocations: 0,
                billed_ms: 0,
                gb_seconds: 0.0,
                cost: 0.0,
            },
        };
        let html = report(
            &query,
            &summary,
            &BTreeMap::new(),
            &BillingSettings::default(),
        )
        .into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("value=\"&quot;&gt;&lt;script&gt;"), "{html}");
        assert!(
            html.contains("href=\"/api/v1/billing?from=2026-11-01&amp;to=2026-11-02&amp;function=&quot;&gt;&lt;script&gt;"),
            "{html}"
        );
        assert!(html.contains("No billed calls in this range."), "{html}");
    }
}
