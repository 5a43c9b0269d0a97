//! Reputation: how far a client trusts a provider, from the promises it
//! kept and broke.
//!
//! The rule: a provider's record is a pair of decayed counts, `kept` and
//! `broken`, each halved every [`HALF_LIFE_SECS`] so that old behaviour
//! fades. Its score is the mean of a Beta(kept + 1, broken + 1)
//! distribution, `(kept + 1) / (kept + broken + 2)`: 0.5 with no record,
//! rising towards 1 with promises kept, falling towards 0 with promises
//! broken. One broken promise outweighs one kept: a broken promise counts
//! [`BROKEN_WEIGHT`] times. A provider with no record is a newcomer: the
//! market keeps a share of its bids for newcomers so that an honest new
//! provider can earn a record.

use serde::{Deserialize, Serialize};

/// Counts halve in this long: 30 days.
pub const HALF_LIFE_SECS: f64 = 30.0 * 86400.0;
/// A broken promise weighs as much as this many kept ones.
pub const BROKEN_WEIGHT: f64 = 4.0;
/// Below this much decayed evidence a provider counts as a newcomer again.
const NO_RECORD: f64 = 1e-3;

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub kept: f64,
    pub broken: f64,
    /// When the counts were last brought up to date (unix seconds).
    pub at: u64,
}

impl Record {
    /// The record as of `now`, decayed.
    pub fn at(&self, now: u64) -> Record {
        let dt = now.saturating_sub(self.at) as f64;
        let f = 0.5f64.powf(dt / HALF_LIFE_SECS);
        Record { kept: self.kept * f, broken: self.broken * f, at: now.max(self.at) }
    }
    pub fn kept(&mut self, now: u64) {
        *self = self.at(now);
        self.kept += 1.0;
    }
    pub fn broke(&mut self, now: u64) {
        *self = self.at(now);
        self.broken += BROKEN_WEIGHT;
    }
    /// The score at `now`, 0.0 to 1.0.
    pub fn score(&self, now: u64) -> f64 {
        let r = self.at(now);
        let (k, b) = (sane(r.kept), sane(r.broken));
        (k + 1.0) / (k + b + 2.0)
    }
    /// Whether there is any evidence about the provider at `now`.
    pub fn has_record(&self, now: u64) -> bool {
        let r = self.at(now);
        sane(r.kept) + sane(r.broken) > NO_RECORD
    }
}

fn sane(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newcomers_score_half_and_have_no_record() {
        let r = Record::default();
        assert_eq!(r.score(1000), 0.5);
        assert!(!r.has_record(1000));
    }

    #[test]
    fn keeping_raises_and_breaking_lowers() {
        let mut r = Record::default();
        r.kept(0);
        assert!(r.score(0) > 0.5);
        assert!(r.has_record(0));
        let mut kept = 0.0;
        for _ in 0..10 {
            r.kept(0);
            assert!(r.score(0) > kept);
            kept = r.score(0);
        }
        r.broke(0);
        assert!(r.score(0) < kept);
        // A newcomer that breaks its first promise falls below 0.5 at once.
        let mut bad = Record::default();
        bad.broke(0);
        assert!(bad.score(0) < 0.2);
    }

    #[test]
    fn evidence_fades_with_time() {
        let mut r = Record::default();
        r.broke(0);
        let later = r.score(HALF_LIFE_SECS as u64);
        assert!(later > r.score(0));
        assert!((r.at(HALF_LIFE_SECS as u64).broken - BROKEN_WEIGHT / 2.0).abs() < 1e-9);
        assert!(!r.has_record(HALF_LIFE_SECS as u64 * 40));
        // Garbage from disk scores as no evidence, not as NaN.
        let junk = Record { kept: f64::NAN, broken: f64::INFINITY, at: 0 };
        assert_eq!(junk.score(0), 0.5);
    }
}
