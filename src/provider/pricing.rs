//! The asking price: a floor from `[provider]`, raised by utilisation and
//! by recent demand.
//!
//! `price = floor × (1 + 2u²) × (1 + min(0.02·d, 0.5))`, where `u` is the
//! share of capacity promised (0 to 1) and `d` the bids received lately,
//! decayed with a half-life of [`DEMAND_HALF_LIFE_SECS`]. An idle, empty
//! provider asks its floor; a full one asks three times it; a rush of bids
//! adds at most half again. The squares keep the price near the floor
//! until the disk fills, so a cheap provider stays cheap while it has room.

/// Half-life of the demand count, in seconds.
pub const DEMAND_HALF_LIFE_SECS: f64 = 600.0;
/// Price rise per recent bid, and its cap.
const DEMAND_STEP: f64 = 0.02;
const DEMAND_CAP: f64 = 0.5;

/// The asking price (milli-credits) for `floor` at utilisation `u` and
/// demand `d`. Never below the floor.
pub fn price(floor: u64, utilisation: f64, demand: f64) -> u64 {
    let u = if utilisation.is_finite() { utilisation.clamp(0.0, 1.0) } else { 1.0 };
    let d = if demand.is_finite() { demand.max(0.0) } else { 0.0 };
    let factor = (1.0 + 2.0 * u * u) * (1.0 + (DEMAND_STEP * d).min(DEMAND_CAP));
    let p = (floor as f64 * factor).ceil();
    if p >= u64::MAX as f64 { u64::MAX } else { (p as u64).max(floor) }
}

/// A count of events that decays exponentially with time.
#[derive(Clone, Debug, Default)]
pub struct Demand {
    value: f64,
    at: f64,
}

impl Demand {
    /// The count at time `now` (seconds, any monotonic origin).
    pub fn at(&self, now: f64) -> f64 {
        let dt = (now - self.at).max(0.0);
        self.value * (0.5f64).powf(dt / DEMAND_HALF_LIFE_SECS)
    }
    /// Counts one event at `now`.
    pub fn add(&mut self, now: f64) {
        self.value = self.at(now) + 1.0;
        self.at = now.max(self.at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_and_empty_asks_the_floor() {
        assert_eq!(price(1000, 0.0, 0.0), 1000);
        assert_eq!(price(0, 0.9, 50.0), 0);
    }

    #[test]
    fn utilisation_and_demand_raise_the_price_monotonically() {
        let mut last = 0;
        for u in 0..=10 {
            let p = price(1000, f64::from(u) / 10.0, 0.0);
            assert!(p >= last, "price falls as utilisation rises");
            last = p;
        }
        assert_eq!(price(1000, 1.0, 0.0), 3000);
        assert_eq!(price(1000, 2.0, 0.0), 3000, "utilisation is clamped");
        assert_eq!(price(1000, 0.0, 10.0), 1200);
        assert_eq!(price(1000, 0.0, 1000.0), 1500, "demand's effect is capped");
        assert_eq!(price(1000, f64::NAN, f64::NAN), 3000, "garbage counts as full, not free");
    }

    #[test]
    fn demand_decays_by_half_per_half_life() {
        let mut d = Demand::default();
        for _ in 0..4 {
            d.add(100.0);
        }
        assert!((d.at(100.0) - 4.0).abs() < 1e-9);
        assert!((d.at(100.0 + DEMAND_HALF_LIFE_SECS) - 2.0).abs() < 1e-9);
        assert!(d.at(100.0 + 20.0 * DEMAND_HALF_LIFE_SECS) < 0.001);
    }
}
