//! Observed demand for cold containers: sizes the prewarmed pool and
//! chooses the import cache's sets. Pure arithmetic over explicit times, so
//! that tests can move the clock.
//!
//! A burst is many calls needing a container at once; the engine starts
//! only a few containers a second (DESIGN.md), so only containers made
//! beforehand can serve it. [`Demand`] remembers the largest number of
//! containers a runtime needed within [`WINDOW`] (a burst, not a trickle
//! the filler keeps up with), and forgets it slowly: the level halves every
//! half-life (the keep-alive: as long as a burst's own containers are kept).

use std::time::{Duration, Instant};

/// Cold starts closer together than this count as one burst: about what
/// the engine needs to make a container or two, so a trickle that the
/// prewarm filler keeps up with raises nothing.
pub(crate) const WINDOW: Duration = Duration::from_secs(2);

/// A level that decays by half every `half_life`, raised to the number of
/// events seen within [`WINDOW`].
#[derive(Clone, Debug)]
pub(crate) struct Demand {
    level: f64,
    /// When `level` was last set.
    at: Instant,
    /// Containers needed within the last [`WINDOW`] (when, how much of
    /// one: a call of a function whose containers serve several calls at
    /// once needs a part of one), oldest first.
    recent: std::collections::VecDeque<(Instant, f64)>,
}

impl Demand {
    pub fn new(now: Instant) -> Self {
        Self {
            level: 0.0,
            at: now,
            recent: Default::default(),
        }
    }

    /// `containers` more needed at `now`.
    pub fn record(&mut self, now: Instant, containers: f64, half_life: Duration) {
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.push_back((now, containers));
        let burst: f64 = self.recent.iter().map(|(_, n)| n).sum();
        self.level = self.level_at(now, half_life).max(burst);
        self.at = now;
    }

    /// The level at `now`, decayed since it was set.
    pub fn level_at(&self, now: Instant, half_life: Duration) -> f64 {
        let age = now.saturating_duration_since(self.at).as_secs_f64();
        let halves = age / half_life.as_secs_f64().max(0.001);
        self.level * 0.5f64.powf(halves)
    }

    /// Containers to keep ready for it at `now` (the level, rounded up once
    /// it is above a small remainder).
    pub fn containers_at(&self, now: Instant, half_life: Duration) -> usize {
        let level = self.level_at(now, half_life);
        if level < 0.5 {
            0
        } else {
            level.ceil() as usize
        }
    }
}

/// How often a package set was needed cold, decaying like [`Demand`]: the
/// import cache keeps the sets with the highest scores.
#[derive(Clone, Debug)]
pub(crate) struct Score {
    value: f64,
    at: Instant,
}

impl Score {
    pub fn new(now: Instant) -> Self {
        Self {
            value: 0.0,
            at: now,
        }
    }

    pub fn add(&mut self, now: Instant, half_life: Duration) {
        self.value = self.at_time(now, half_life) + 1.0;
        self.at = now;
    }

    pub fn at_time(&self, now: Instant, half_life: Duration) -> f64 {
        let age = now.saturating_duration_since(self.at).as_secs_f64();
        self.value * 0.5f64.powf(age / half_life.as_secs_f64().max(0.001))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF: Duration = Duration::from_secs(600);

    #[test]
    fn a_burst_sets_the_level_and_a_trickle_does_not() {
        let t0 = Instant::now();
        let mut burst = Demand::new(t0);
        for i in 0..100 {
            burst.record(t0 + Duration::from_millis(i), 1.0, HALF);
        }
        assert_eq!(burst.containers_at(t0 + Duration::from_secs(1), HALF), 100);

        let mut trickle = Demand::new(t0);
        for i in 0..100 {
            trickle.record(t0 + Duration::from_secs(i), 1.0, HALF);
        }
        let level = trickle.containers_at(t0 + Duration::from_secs(100), HALF);
        assert!(
            level <= 3,
            "one a second is a trickle, not a burst: {level}"
        );
    }

    #[test]
    fn the_level_decays_slowly_and_is_not_lowered_by_a_smaller_burst() {
        let t0 = Instant::now();
        let mut d = Demand::new(t0);
        for _ in 0..200 {
            d.record(t0, 0.5, HALF);
        }
        assert_eq!(
            d.containers_at(t0 + HALF, HALF),
            50,
            "halved after one half-life"
        );
        assert_eq!(d.containers_at(t0 + HALF * 2, HALF), 25);
        assert_eq!(d.containers_at(t0 + HALF * 20, HALF), 0, "forgotten");
        // A smaller burst later does not lower what is remembered.
        let later = t0 + HALF;
        for _ in 0..10 {
            d.record(later, 1.0, HALF);
        }
        assert_eq!(d.containers_at(later, HALF), 50);
    }

    #[test]
    fn scores_add_up_and_decay() {
        let t0 = Instant::now();
        let mut s = Score::new(t0);
        s.add(t0, HALF);
        s.add(t0, HALF);
        assert_eq!(s.at_time(t0, HALF), 2.0);
        assert!((s.at_time(t0 + HALF, HALF) - 1.0).abs() < 1e-9);
    }
}
