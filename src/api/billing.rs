//! `/api/v1/billing`: usage and cost per function (or per function and day)
//! over a date range, as JSON or CSV. The HTML page (`/billing`) is in `pages`.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::config::BillingSettings;
use crate::meter::Usage;
use crate::state::AppState;
use crate::store::invocations;

pub fn router() -> Router<AppState> {
    Router::new().route("/billing", get(report_api))
}

#[derive(Deserialize, Default)]
pub struct ReportQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub function: Option<String>,
    /// `day`: a line per function and day; `trigger`: per function and
    /// trigger (http, async, cron, destination).
    pub group: Option<String>,
    /// `csv` for CSV; JSON otherwise.
    pub format: Option<String>,
}

#[derive(Serialize)]
pub struct Report {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub currency: &'static str,
    pub functions: Vec<Line>,
    pub total: Figures,
}

#[derive(Serialize)]
pub struct Line {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Serialize)]
pub struct Figures {
    pub invocations: i64,
    pub billed_ms: i64,
    pub gb_seconds: f64,
    pub cost: f64,
}

impl Figures {
    /// Money is derived once, from the exact integer sums.
    fn of(usage: Usage, prices: &BillingSettings) -> Self {
        Self {
            invocations: usage.invocations,
            billed_ms: usage.billed_ms,
            gb_seconds: usage.gb_seconds(),
            cost: round_money(usage.cost(prices)),
        }
    }
}

/// To a billionth of a cent (single calls cost fractions of a micro-dollar);
/// beyond that a float only shows noise.
fn round_money(usd: f64) -> f64 {
    (usd * 1e11).round() / 1e11
}

fn parse_date(key: &str, raw: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
        ApiError::bad_request(
            "invalid_date",
            format!("{key}={raw:?} is not a date; use YYYY-MM-DD, e.g. {key}=2026-11-01"),
        )
    })
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// The range asked for: `from` (default: the 1st of this month) inclusive,
/// `to` (default: tomorrow) exclusive, UTC.
pub fn range(query: &ReportQuery) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let today = Utc::now().date_naive();
    let from = match query.from.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => parse_date("from", raw)?,
        None => today.with_day(1).expect("day 1 exists"),
    };
    let to = match query.to.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => parse_date("to", raw)?,
        None => today + Days::new(1),
    };
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_range",
            format!("from ({from}) must be before to ({to}); to is exclusive"),
        ));
    }
    Ok((from, to))
}

/// Exact usage per function (and per UTC day, with `by_day`), the range
/// it covers, in the order function, day.
pub struct UsageRows {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub rows: Vec<(String, Option<NaiveDate>, Usage)>,
}

pub async fn usage(
    state: &AppState,
    query: &ReportQuery,
    by_day: bool,
) -> Result<UsageRows, ApiError> {
    let (from, to) = range(query)?;
    let function = query.function.as_deref().filter(|f| !f.is_empty());
    let rows =
        invocations::usage(&state.db, midnight(from), midnight(to), function, by_day).await?;
    Ok(UsageRows { from, to, rows })
}

/// The report of `usage`; money is derived from the exact sums.
pub fn report_of(usage: UsageRows, prices: &BillingSettings) -> Report {
    let total = usage
        .rows
        .iter()
        .fold(Usage::default(), |acc, (_, _, u)| acc + *u);
    Report {
        from: usage.from,
        to: usage.to,
        currency: "USD",
        functions: usage
            .rows
            .into_iter()
            .map(|(name, day, usage)| Line {
                name,
                day,
                trigger: None,
                figures: Figures::of(usage, prices),
            })
            .collect(),
        total: Figures::of(total, prices),
    }
}

pub async fn report(state: &AppState, query: &ReportQuery) -> Result<Report, ApiError> {
    let by_day = match query.group.as_deref() {
        None | Some("") | Some("function") => false,
        Some("day") => true,
        Some("trigger") => return report_by_trigger(state, query).await,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_group",
                format!(
                    "group={other:?} is not known; use group=day or group=trigger, or leave it out"
                ),
            ))
        }
    };
    let usage = usage(state, query, by_day).await?;
    Ok(report_of(usage, &state.settings.billing))
}

/// A line per function and trigger (`group=trigger`).
async fn report_by_trigger(state: &AppState, query: &ReportQuery) -> Result<Report, ApiError> {
    let (from, to) = range(query)?;
    let function = query.function.as_deref().filter(|f| !f.is_empty());
    let rows =
        crate::store::events::usage_by_trigger(&state.db, midnight(from), midnight(to), function)
            .await?;
    let triggers: Vec<String> = rows.iter().map(|(_, t, _)| t.clone()).collect();
    let rows = rows.into_iter().map(|(f, _, u)| (f, None, u)).collect();
    let mut report = report_of(UsageRows { from, to, rows }, &state.settings.billing);
    for (line, trigger) in report.functions.iter_mut().zip(triggers) {
        line.trigger = Some(trigger);
    }
    Ok(report)
}

async fn report_api(
    State(state): State<AppState>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let report = report(&state, &query).await?;
    match query.format.as_deref() {
        None | Some("") | Some("json") => Ok(Json(report).into_response()),
        Some("csv") => Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"openlambda-billing.csv\"",
                ),
            ],
            csv(&report, query.group.as_deref().unwrap_or_default()),
        )
            .into_response()),
        Some(other) => Err(ApiError::bad_request(
            "invalid_format",
            format!("format={other:?} is not known; use format=csv, or leave it out for JSON"),
        )),
    }
}

/// A header line, then a line per function (or per function and day, or
/// per function and trigger).
fn csv(report: &Report, group: &str) -> String {
    let mut out = String::from(match group {
        "day" => "function,day,invocations,billed_ms,gb_seconds,cost_usd\n",
        "trigger" => "function,trigger,invocations,billed_ms,gb_seconds,cost_usd\n",
        _ => "function,invocations,billed_ms,gb_seconds,cost_usd\n",
    });
    for line in &report.functions {
        let f = &line.figures;
        let day = line.day.map(|d| format!("{d},")).unwrap_or_default();
        let trigger = line
            .trigger
            .as_ref()
            .map(|t| format!("{t},"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{},{day}{trigger}{},{},{},{}\n",
            line.name, f.invocations, f.billed_ms, f.gb_seconds, f.cost
        ));
    }
    out
}
