//! Metering: what one call costs, and the writer that stores the records.
//!
//! The formula: the duration is rounded up to the billing granularity
//! (`OL_BILLING_GRANULARITY_MS`), multiplied by the memory size, and priced
//! per GB-second plus a price per request, as serverless platforms bill.
//! Sums are kept as integers (`MB·ms`), so adding up many calls never
//! drifts; money is derived from the exact sums only at the end.

mod journal;
mod quarantine;
mod writer;

pub use writer::{RecordStats, Recorder};

use crate::config::BillingSettings;

/// Milliseconds billed for a call of `duration_ms` (never less than one unit
/// of granularity for a call that ran, as AWS and the paper's model do).
pub fn billed_ms(duration_ms: u64, granularity_ms: u64) -> u64 {
    let units = duration_ms.div_ceil(granularity_ms).max(1);
    units * granularity_ms
}

/// Exact sums over a set of calls; the report's figures come from these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub invocations: i64,
    pub billed_ms: i64,
    /// Sum of `memory_mb * billed_ms` over the calls.
    pub mb_ms: i64,
}

impl Usage {
    pub fn gb_seconds(&self) -> f64 {
        self.mb_ms as f64 / 1024.0 / 1000.0
    }

    pub fn cost(&self, prices: &BillingSettings) -> f64 {
        self.gb_seconds() * prices.price_gb_second + self.invocations as f64 * prices.price_request
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        *self = *self + other;
    }
}

impl std::ops::Add for Usage {
    type Output = Usage;

    fn add(self, other: Usage) -> Usage {
        Usage {
            invocations: self.invocations + other.invocations,
            billed_ms: self.billed_ms + other.billed_ms,
            mb_ms: self.mb_ms + other.mb_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_to_the_granularity() {
        assert_eq!(billed_ms(1, 100), 100);
        assert_eq!(billed_ms(100, 100), 100);
        assert_eq!(billed_ms(101, 100), 200);
        assert_eq!(billed_ms(250, 1), 250);
    }

    #[test]
    fn a_call_that_ran_bills_at_least_one_unit() {
        assert_eq!(billed_ms(0, 100), 100);
    }

    #[test]
    fn very_long_calls_do_not_overflow() {
        assert_eq!(billed_ms(900_000, 100), 900_000);
        assert_eq!(billed_ms(u64::MAX / 2, 1000) % 1000, 0);
    }

    #[test]
    fn cost_follows_the_formula() {
        let prices = BillingSettings::default();
        // 1024 MB for 1 s = 1 GB-second.
        let one = Usage {
            invocations: 1,
            billed_ms: 1000,
            mb_ms: 1024 * 1000,
        };
        assert_eq!(one.gb_seconds(), 1.0);
        let expected = 0.000_016_666_7 + 0.000_000_2;
        assert!((one.cost(&prices) - expected).abs() < 1e-15);
    }

    #[test]
    fn many_calls_sum_exactly() {
        let call = Usage {
            invocations: 1,
            billed_ms: 100,
            mb_ms: 128 * 100,
        };
        let total = (0..1_000_000).fold(Usage::default(), |acc, _| acc + call);
        assert_eq!(total.invocations, 1_000_000);
        assert_eq!(total.mb_ms, 128 * 100 * 1_000_000);
        // 128 MB * 100 s = 12.5 GB-s exactly, from the integer sum.
        assert_eq!(total.gb_seconds(), 12_500.0);
    }
}
