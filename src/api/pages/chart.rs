//! The billing page's bar chart of cost per day, as inline SVG (no
//! JavaScript), and the money format it shares with the page.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use maud::{html, Markup};

/// Dollars with enough digits to show what single calls cost (fractions of
/// a micro-dollar) without trailing noise.
pub fn money(usd: f64) -> String {
    if usd == 0.0 {
        return "$0".into();
    }
    if usd >= 0.01 {
        return format!("${usd:.4}");
    }
    let text = format!("{usd:.11}");
    format!("${}", text.trim_end_matches('0'))
}

/// A number with one decimal, as SVG coordinates are written.
fn px(value: f64) -> String {
    format!("{value:.1}")
}

/// A bar chart of `values` per day.
pub fn chart(values: &BTreeMap<NaiveDate, f64>) -> Markup {
    let (w, h, pad) = (900.0, 220.0, 40.0);
    let max = values.values().cloned().fold(0.0_f64, f64::max);
    let n = values.len().max(1) as f64;
    let slot = (w - pad * 2.0) / n;
    // Label some days, so the axis stays readable.
    let every = (values.len() / 10).max(1);
    // SVG elements are closed explicitly (`{}`): inside <svg> a start tag
    // without its end tag would swallow the elements after it.
    html! {
        svg.chart viewBox={ "0 0 " (w) " " (h) } role="img" aria-label="Cost per day" {
            line x1=(pad) y1=(h - pad) x2=(w - pad) y2=(h - pad) class="axis" {}
            text x=(pad) y="16" class="label" { "max " (money(max)) }
            @for (i, (day, value)) in values.iter().enumerate() {
                @let bar = if max > 0.0 { (h - pad * 2.0) * value / max } else { 0.0 };
                @let x = pad + slot * i as f64 + slot * 0.15;
                rect x=(px(x)) y=(px(h - pad - bar)) width=(px(slot * 0.7)) height=(px(bar)) class="bar" {
                    title { (day) ": " (money(*value)) }
                }
                @if i % every == 0 {
                    text x=(px(x + slot * 0.35)) y=(h - pad + 16.0) class="label" text-anchor="middle" {
                        (day.format("%b %d"))
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
    fn money_shows_what_a_call_costs() {
        assert_eq!(money(0.0), "$0");
        assert_eq!(money(0.000_000_408_333_5), "$0.00000040833");
        assert_eq!(money(12.345_67), "$12.3457");
    }

    #[test]
    fn bars_scale_to_the_largest_day() {
        let day = |d| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let values = BTreeMap::from([(day(1), 1.0), (day(2), 0.5), (day(3), 0.0)]);
        let svg = chart(&values).into_string();
        assert!(
            svg.contains("<line x1=\"40\" y1=\"180\" x2=\"860\" y2=\"180\" class=\"axis\"></line>"),
            "{svg}"
        );
        assert!(
            svg.contains(
                "height=\"140.0\" class=\"bar\"><title>2026-11-01: $1.0000</title></rect>"
            ),
            "{svg}"
        );
        assert!(svg.contains("height=\"70.0\""), "{svg}");
        assert!(svg.contains("height=\"0.0\""), "{svg}");
        assert!(svg.contains(">Nov 03</text>"), "{svg}");
    }
}
