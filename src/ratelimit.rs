//! Rate limits kept in memory: token buckets for functions' `rate_limit`
//! (calls per second with a burst) and a counter of failed dashboard logins
//! per source address. Both are bounded: buckets exist only for deployed
//! functions, and the login table forgets the oldest addresses when full.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `burst` calls at once, refilled at `per_second`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per-function buckets.
#[derive(Default)]
pub struct FunctionLimits {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl FunctionLimits {
    /// Takes one call from `function`'s bucket; `Err(seconds)` says when
    /// the next call would pass.
    pub fn take(&self, function: &str, per_second: f64, burst: u32) -> Result<(), u64> {
        self.take_at(function, per_second, burst, Instant::now())
    }

    fn take_at(
        &self,
        function: &str,
        per_second: f64,
        burst: u32,
        now: Instant,
    ) -> Result<(), u64> {
        let burst = f64::from(burst.max(1));
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        let bucket = buckets.entry(function.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / per_second).ceil().max(1.0) as u64)
        }
    }

    /// Forgets a function's bucket (deleted, or its limit changed).
    pub fn forget(&self, function: &str) {
        self.buckets
            .lock()
            .expect("rate limit lock")
            .remove(function);
    }
}

/// Failed logins per source address within a window.
pub struct LoginLimits {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    allowed: u32,
    window: Duration,
}

/// Addresses remembered at most; beyond, expired entries go first.
const MAX_ADDRESSES: usize = 10_000;

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            failures: Mutex::default(),
            allowed: 5,
            window: Duration::from_secs(60),
        }
    }
}

impl LoginLimits {
    /// `Err(seconds)` while `source` has used up its failed attempts.
    pub fn check(&self, source: IpAddr) -> Result<(), u64> {
        let failures = self.failures.lock().expect("login limit lock");
        match failures.get(&source) {
            Some((count, since)) if *count >= self.allowed => {
                let left = self.window.saturating_sub(since.elapsed());
                if left.is_zero() {
                    Ok(())
                } else {
                    Err(left.as_secs().max(1))
                }
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, source: IpAddr) {
        let mut failures = self.failures.lock().expect("login limit lock");
        if failures.len() >= MAX_ADDRESSES {
            let window = self.window;
            failures.retain(|_, (_, since)| since.elapsed() < window);
            if failures.len() >= MAX_ADDRESSES {
                failures.clear();
            }
        }
        let entry = failures.entry(source).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, source: IpAddr) {
        self.failures
            .lock()
            .expect("login limit lock")
            .remove(&source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills() {
        let limits = FunctionLimits::default();
        let t0 = Instant::now();
        assert!(limits.take_at("f", 2.0, 3, t0).is_ok());
        assert!(limits.take_at("f", 2.0, 3, t0).is_ok());
        assert!(limits.take_at("f", 2.0, 3, t0).is_ok());
        assert_eq!(limits.take_at("f", 2.0, 3, t0), Err(1));
        assert!(
            limits.take_at("g", 2.0, 3, t0).is_ok(),
            "buckets are per function"
        );
        assert!(limits
            .take_at("f", 2.0, 3, t0 + Duration::from_millis(500))
            .is_ok());
        assert!(limits
            .take_at("f", 2.0, 3, t0 + Duration::from_millis(500))
            .is_err());
    }

    #[test]
    fn failed_logins_lock_an_address_out() {
        let limits = LoginLimits::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..5 {
            assert!(limits.check(a).is_ok());
            limits.failed(a);
        }
        assert!(limits.check(a).is_err());
        assert!(limits.check(b).is_ok());
        limits.succeeded(a);
        assert!(limits.check(a).is_ok());
    }
}
