//! `/api/v1/billing`: usage and cost per function over a date range.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Datelike, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::app::AppState;
use crate::config::BillingSettings;
use crate::meter::Usage;
use crate::store::invocations;

pub fn router() -> Router<AppState> {
    Router::new().route("/billing", get(report))
}

#[derive(Deserialize)]
struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    function: Option<String>,
}

#[derive(Serialize)]
struct Report {
    from: NaiveDate,
    to: NaiveDate,
    currency: &'static str,
    functions: Vec<Line>,
    total: Figures,
}

#[derive(Serialize)]
struct Line {
    name: String,
    #[serde(flatten)]
    figures: Figures,
}

#[derive(Serialize)]
struct Figures {
    invocations: i64,
    billed_ms: i64,
    gb_seconds: f64,
    cost: f64,
}

impl Figures {
    fn of(usage: Usage, prices: &BillingSettings) -> Self {
        Self {
            invocations: usage.invocations,
            billed_ms: usage.billed_ms,
            gb_seconds: usage.gb_seconds(),
            cost: round_money(usage.cost(prices)),
        }
    }
}

/// To a millionth of a cent: beyond that a float only shows noise.
fn round_money(usd: f64) -> f64 {
    (usd * 1e8).round() / 1e8
}

fn parse_date(key: &str, raw: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
        ApiError::bad_request(
            "invalid_date",
            format!("{key}={raw:?} is not a date; use YYYY-MM-DD, e.g. {key}=2026-11-01"),
        )
    })
}

async fn report(
    State(state): State<AppState>,
    Query(query): Query<ReportQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let today = Utc::now().date_naive();
    let from = match &query.from {
        Some(raw) => parse_date("from", raw)?,
        None => today.with_day(1).expect("day 1 exists"),
    };
    let to = match &query.to {
        Some(raw) => parse_date("to", raw)?,
        None => today + Days::new(1),
    };
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_range",
            format!("from ({from}) must be before to ({to}); to is exclusive"),
        ));
    }
    let start = from.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let end = to.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let prices = &state.settings.billing;
    let rows =
        invocations::usage_by_function(&state.db, start, end, query.function.as_deref()).await?;
    let total = rows.iter().fold(Usage::default(), |acc, (_, u)| acc + *u);
    let report = Report {
        from,
        to,
        currency: "USD",
        functions: rows
            .into_iter()
            .map(|(name, usage)| Line {
                name,
                figures: Figures::of(usage, prices),
            })
            .collect(),
        total: Figures::of(total, prices),
    };
    Ok(Json(
        serde_json::to_value(report).map_err(ApiError::internal)?,
    ))
}
