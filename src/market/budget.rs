//! The monthly budget as bids see it: what active promises cost plus what
//! the bids still in flight would add. A pass sends several bids at once;
//! each reserves its monthly cost before it goes out and releases it when
//! its answer is in (by then a promise it won counts among the active
//! ones), so bids in flight together never take more than the budget.

use std::sync::Mutex;

/// Monthly cost (milli-credits) of the bids in flight.
#[derive(Default)]
pub struct InFlight(Mutex<u64>);

/// A bid's share of the budget, released on drop.
pub struct Reservation<'a> {
    pool: &'a InFlight,
    amount: u64,
}

/// Why a bid does not fit: the monthly cost of the active promises and of
/// the bids in flight, in milli-credits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverBudget {
    pub committed: u64,
    pub in_flight: u64,
}

impl InFlight {
    /// Reserves `monthly` for one bid if the active promises (`committed`,
    /// read under the same lock so that no other bid slips in between),
    /// the bids in flight and this one cost at most `budget` a month.
    pub fn reserve(
        &self,
        committed: impl FnOnce() -> u64,
        monthly: u64,
        budget: u64,
    ) -> Result<Reservation<'_>, OverBudget> {
        let mut in_flight = crate::lock(&self.0);
        let committed = committed();
        if committed.saturating_add(*in_flight).saturating_add(monthly) > budget {
            return Err(OverBudget { committed, in_flight: *in_flight });
        }
        *in_flight += monthly;
        Ok(Reservation { pool: self, amount: monthly })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut in_flight = crate::lock(&self.pool.0);
        *in_flight = in_flight.saturating_sub(self.amount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bids_in_flight_share_the_budget() {
        let pool = InFlight::default();
        // Three bids sent at once, each within the budget on its own.
        let first = pool.reserve(|| 0, 60, 100).expect("the first bid fits");
        assert_eq!(pool.reserve(|| 0, 60, 100).err(), Some(OverBudget { committed: 0, in_flight: 60 }));
        let second = pool.reserve(|| 0, 40, 100).expect("what is left fits");
        assert!(pool.reserve(|| 0, 1, 100).is_err(), "nothing is left");
        // The first bid's promise now counts as committed; its reservation goes.
        drop(first);
        assert_eq!(pool.reserve(|| 60, 1, 100).err(), Some(OverBudget { committed: 60, in_flight: 40 }));
        drop(second);
        let third = pool.reserve(|| 100, 0, 100).expect("a free bid fits a full budget");
        drop(third);
        assert!(pool.reserve(|| 0, 101, 100).is_err(), "a bid alone above the budget never fits");
        assert_eq!(*pool.0.lock().unwrap(), 0, "every reservation was released");
    }
}
