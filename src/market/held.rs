//! What a client keeps of its market dealings: the promises it holds, each
//! provider's reputation record, the cheques it paid and this month's
//! spend. All in the store (the `promises` and `market` column families),
//! encoded here.

use crate::codec;
use crate::promise::{Cheque, MAX_PROMISE_BYTES, NodeKey, Promise, STATEMENT_V1, Signed};
use crate::reputation::Record;
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};

const HELD_V1: u8 = 1;
const REP_V1: u8 = 1;
const MAX_HELD: usize = MAX_PROMISE_BYTES + 4096;
const MAX_SMALL: usize = 4096;
const REP_PREFIX: &[u8] = b"rep/";
const PAID_PREFIX: &[u8] = b"paid/";
const SPEND_PREFIX: &[u8] = b"spend/";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Active,
    /// A renewal took its place.
    Renewed,
    /// Ran its term.
    Expired,
    /// The provider did not keep it.
    Broken,
}

/// A promise as the client keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Held {
    pub promise: Promise,
    pub state: State,
    pub renewed_by: Option<[u8; 32]>,
    /// When it broke: the provider earns nothing after.
    pub broken_at: Option<u64>,
    #[serde(with = "codec::string")]
    pub reason: String,
    pub last_audit: Option<u64>,
}

impl Held {
    pub fn new(promise: Promise) -> Held {
        Held {
            promise,
            state: State::Active,
            renewed_by: None,
            broken_at: None,
            reason: String::new(),
            last_audit: None,
        }
    }
    pub fn id(&self) -> [u8; 32] {
        self.promise.id()
    }
    pub fn provider(&self) -> NodeKey {
        self.promise.terms.provider
    }
    /// What the provider has earned under it by `now`.
    pub fn accrued(&self, now: u64) -> u64 {
        self.promise.terms.accrued(self.broken_at.map_or(now, |b| b.min(now)))
    }
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(HELD_V1, self)
    }
    pub fn decode(bytes: &[u8]) -> Result<Held, codec::CodecError> {
        codec::decode(HELD_V1, bytes, MAX_HELD)
    }
}

fn corrupt(what: &str, e: codec::CodecError) -> StoreError {
    StoreError::Corrupt { what: what.to_string(), detail: e.to_string() }
}

pub fn load_held(store: &Store) -> Result<Vec<Held>, StoreError> {
    store
        .promises()?
        .into_iter()
        .map(|(_, bytes)| Held::decode(&bytes).map_err(|e| corrupt("held promise", e)))
        .collect()
}

pub fn save_held(store: &Store, held: &Held) -> Result<(), StoreError> {
    store.put_promise(&held.id(), &held.encode())
}

pub fn load_reputation(store: &Store) -> Result<Vec<(NodeKey, Record)>, StoreError> {
    let mut out = Vec::new();
    for (k, v) in store.market_scan(REP_PREFIX)? {
        let Ok(key) = <[u8; 32]>::try_from(&k[REP_PREFIX.len()..]) else { continue };
        let rec: Record = codec::decode(REP_V1, &v, MAX_SMALL).map_err(|e| corrupt("reputation record", e))?;
        out.push((NodeKey(key), rec));
    }
    Ok(out)
}

pub fn save_reputation(store: &Store, provider: &NodeKey, rec: &Record) -> Result<(), StoreError> {
    store.market_put(&[REP_PREFIX, &provider.0].concat(), &codec::encode(REP_V1, rec), false)
}

/// The newest cheque paid to `provider`.
pub fn last_paid(store: &Store, provider: &NodeKey) -> Result<Option<Signed<Cheque>>, StoreError> {
    match store.market_get(&[PAID_PREFIX, &provider.0].concat())? {
        Some(v) => Ok(Some(codec::decode(STATEMENT_V1, &v, MAX_SMALL).map_err(|e| corrupt("cheque", e))?)),
        None => Ok(None),
    }
}

pub fn save_paid(store: &Store, cheque: &Signed<Cheque>) -> Result<(), StoreError> {
    store.market_put(&[PAID_PREFIX, &cheque.body.provider.0].concat(), &codec::encode(STATEMENT_V1, cheque), true)
}

/// Milli-credits spent in the month `month` ("YYYY-MM").
pub fn spent(store: &Store, month: &str) -> Result<u64, StoreError> {
    let v = store.market_get(&[SPEND_PREFIX, month.as_bytes()].concat())?;
    Ok(v.and_then(|v| <[u8; 8]>::try_from(&v[..]).ok()).map_or(0, u64::from_be_bytes))
}

pub fn add_spent(store: &Store, month: &str, amount: u64) -> Result<u64, StoreError> {
    let total = spent(store, month)?.saturating_add(amount);
    store.market_put(&[SPEND_PREFIX, month.as_bytes()].concat(), &total.to_be_bytes(), true)?;
    Ok(total)
}

/// The calendar month (UTC) of a unix time, as "YYYY-MM".
pub fn month_of(unix: u64) -> String {
    let (y, m, _) = crate::ledger::view::civil_from_days(unix / 86400);
    format!("{y:04}-{m:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc_calendar_months() {
        assert_eq!(month_of(0), "1970-01");
        assert_eq!(month_of(951_782_400), "2000-02"); // 2000-02-29
        assert_eq!(month_of(1_798_761_599), "2026-12"); // 2026-12-31 23:59:59
        assert_eq!(month_of(1_798_761_600), "2027-01");
    }

    #[test]
    fn records_round_trip_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 0).unwrap();
        let k = NodeKey([3; 32]);
        let mut r = Record::default();
        r.kept(10);
        save_reputation(&store, &k, &r).unwrap();
        assert_eq!(load_reputation(&store).unwrap(), vec![(k, r)]);
        assert_eq!(add_spent(&store, "2026-11", 5).unwrap(), 5);
        assert_eq!(add_spent(&store, "2026-11", 7).unwrap(), 12);
        assert_eq!(spent(&store, "2026-12").unwrap(), 0);
    }
}
