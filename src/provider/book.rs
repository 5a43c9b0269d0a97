//! The promises a provider has sold: which chunks each covers, what each
//! has stored, and how much of the capacity is committed.
//!
//! Persisted in the store's `promises` column family (one record per
//! promise, written before the promise is answered); rebuilt from it at
//! start, with stored bytes recounted from the chunks actually held.

use crate::codec;
use crate::promise::{NodeKey, Promise};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// Version byte of a sold-promise record.
const SOLD_V1: u8 = 1;
/// Largest record accepted back from disk.
const MAX_SOLD: usize = crate::promise::MAX_PROMISE_BYTES + 256;

/// A promise as the provider keeps it on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SoldRecord {
    pub promise: Promise,
    /// The renewal that took this promise's place, if any.
    pub renewed_by: Option<[u8; 32]>,
}

impl SoldRecord {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(SOLD_V1, self)
    }
    pub fn decode(bytes: &[u8]) -> Result<SoldRecord, codec::CodecError> {
        codec::decode(SOLD_V1, bytes, MAX_SOLD)
    }
}

pub struct Sold {
    pub record: SoldRecord,
    pub chunks: HashSet<[u8; 32]>,
    /// Chunks stored under this promise, and their bytes.
    pub stored: HashSet<[u8; 32]>,
    pub stored_bytes: u64,
}

impl Sold {
    pub fn new(record: SoldRecord) -> Sold {
        let chunks = record.promise.terms.chunks.iter().copied().collect();
        Sold { record, chunks, stored: HashSet::new(), stored_bytes: 0 }
    }
    /// A retrieval promise stores nothing: it takes no room.
    fn counts_toward_capacity(&self) -> bool {
        self.record.renewed_by.is_none() && self.record.promise.terms.kind == crate::promise::PromiseKind::Storage
    }
}

#[derive(Default)]
pub struct Book {
    pub sold: HashMap<[u8; 32], Sold>,
    /// Live promises covering each chunk: a chunk is dropped at zero.
    coverage: HashMap<[u8; 32], u32>,
}

impl Book {
    pub fn insert(&mut self, sold: Sold) {
        for c in &sold.chunks {
            *self.coverage.entry(*c).or_default() += 1;
        }
        self.sold.insert(sold.record.promise.id(), sold);
    }

    /// Removes a promise; returns the chunks no other promise covers.
    pub fn remove(&mut self, id: &[u8; 32]) -> Vec<[u8; 32]> {
        let Some(sold) = self.sold.remove(id) else { return Vec::new() };
        let mut orphans = Vec::new();
        for c in sold.chunks {
            if let Some(n) = self.coverage.get_mut(&c) {
                *n -= 1;
                if *n == 0 {
                    self.coverage.remove(&c);
                    orphans.push(c);
                }
            }
        }
        orphans
    }

    /// Bytes promised and not yet expired (a renewed promise counts once,
    /// as its renewal).
    pub fn committed(&self) -> u64 {
        self.sold.values().filter(|s| s.counts_toward_capacity()).map(|s| s.record.promise.terms.bytes).sum()
    }

    /// The live promise of `client` that lets it store or fetch `chunk`:
    /// the one it names if that still covers the chunk, else any other of
    /// its promises that does (a renewal replaces the id the client holds).
    pub fn authorizing(&self, client: &NodeKey, named: &[u8; 32], chunk: &[u8; 32], now: u64) -> Option<[u8; 32]> {
        let fits = |s: &Sold| {
            let t = &s.record.promise.terms;
            t.client == *client && now <= t.expiry && s.chunks.contains(chunk)
        };
        if self.sold.get(named).is_some_and(fits) {
            return Some(*named);
        }
        self.sold.iter().find(|(_, s)| fits(s)).map(|(id, _)| *id)
    }

    /// The promise an upload may go under: the one it names, or the
    /// renewal that took its place, live, of `client`, covering `chunk`.
    /// Stricter than [`Book::authorizing`]: bytes are stored only under
    /// the promise the client chose.
    pub fn storing_under(&self, client: &NodeKey, named: &[u8; 32], chunk: &[u8; 32], now: u64) -> Option<[u8; 32]> {
        let mut cur = *named;
        // A renewal chain is short; the bound only guards against a loop.
        for _ in 0..16 {
            let s = self.sold.get(&cur)?;
            let t = &s.record.promise.terms;
            if t.client != *client || t.kind != crate::promise::PromiseKind::Storage {
                return None;
            }
            if now <= t.expiry && s.chunks.contains(chunk) && s.record.renewed_by.is_none() {
                return Some(cur);
            }
            cur = s.record.renewed_by?;
        }
        None
    }

    /// What `client` has accrued over all its promises until `at`.
    pub fn accrued_by(&self, client: &NodeKey, at: u64) -> u64 {
        self.sold
            .values()
            .filter(|s| s.record.promise.terms.client == *client)
            .map(|s| s.record.promise.terms.accrued(at))
            .sum()
    }

    /// Ids of promises past their expiry at `now`.
    pub fn expired(&self, now: u64) -> Vec<[u8; 32]> {
        self.sold.iter().filter(|(_, s)| s.record.promise.terms.expiry < now).map(|(id, _)| *id).collect()
    }
}
