//! Voluntary replication: a provider counts how often it serves each chunk
//! and announces the ones served often ("hot"); a provider with
//! `[provider] voluntary_capacity` copies hot chunks it does not hold from
//! the provider that announced them, keeps them outside any promise and
//! offers them for retrieval (market mode: in its announcements; hybrid
//! mode: as DHT provider records). Clients use such a copy like any holder,
//! under a retrieval promise, and verify every byte.
//!
//! A hot chunk is served to anyone who asks for a copy (its bytes are
//! sealed; its id is already public in the announcement). Voluntary copies
//! are never dropped by the promise sweep and survive restarts (`vol/`
//! records in the provider's market column family).

use super::Provider;
use crate::chunk::{ChunkId, Verified};
use crate::store::StoreError;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Serves within a window that make a chunk hot.
pub const HOT_AFTER: u32 = 3;
/// Counts halve every window, so a chunk stops being hot once nobody reads it.
const HOT_WINDOW: Duration = Duration::from_secs(600);
const VOLUNTARY_PREFIX: &[u8] = b"vol/";

#[derive(Default)]
pub(super) struct Hot {
    served: HashMap<[u8; 32], u32>,
    halved: Option<Instant>,
    /// Chunks kept voluntarily, with their lengths.
    voluntary: HashMap<[u8; 32], u64>,
}

impl Hot {
    /// The voluntary copies recorded in the provider's store.
    pub(super) fn load(store: &crate::store::Store) -> Result<Hot, StoreError> {
        let mut voluntary = HashMap::new();
        for (k, v) in store.market_scan(VOLUNTARY_PREFIX)? {
            if let (Ok(id), Ok(len)) = (<[u8; 32]>::try_from(&k[VOLUNTARY_PREFIX.len()..]), <[u8; 8]>::try_from(&v[..]))
            {
                voluntary.insert(id, u64::from_be_bytes(len));
            }
        }
        Ok(Hot { voluntary, ..Hot::default() })
    }

    fn decay(&mut self) {
        let due = self.halved.is_none_or(|t| t.elapsed() >= HOT_WINDOW);
        if due {
            if self.halved.is_some() {
                self.served.retain(|_, n| {
                    *n /= 2;
                    *n > 0
                });
            }
            self.halved = Some(Instant::now());
        }
    }

    fn voluntary_bytes(&self) -> u64 {
        self.voluntary.values().sum()
    }

    fn is_hot(&self, id: &[u8; 32]) -> bool {
        self.served.get(id).is_some_and(|n| *n >= HOT_AFTER)
    }
}

/// What `node info` shows of voluntary replication.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VoluntaryStats {
    /// Chunks served often here, announced for others to copy.
    pub hot_chunks: usize,
    /// Copies kept of this provider's own accord, and their bytes.
    pub voluntary_chunks: usize,
    pub voluntary_bytes: u64,
    pub voluntary_capacity: u64,
}

impl Provider {
    fn hot_state(&self) -> std::sync::MutexGuard<'_, Hot> {
        crate::lock(&self.hot)
    }

    /// Counts one chunk served to a client.
    pub(super) fn note_served(&self, id: &[u8; 32]) {
        let mut hot = self.hot_state();
        hot.decay();
        let n = hot.served.entry(*id).or_default();
        *n = n.saturating_add(1);
    }

    /// True when `id` may be served without a promise: a copy of a chunk
    /// announced hot here, or one kept voluntarily (offered to everyone).
    pub(super) fn serves_freely(&self, id: &[u8; 32]) -> bool {
        let hot = self.hot_state();
        hot.is_hot(id) || hot.voluntary.contains_key(id)
    }

    pub(super) fn holds_voluntarily(&self, id: &[u8; 32]) -> bool {
        self.hot_state().voluntary.contains_key(id)
    }

    /// The chunks served most often, hot ones only, most served first.
    pub fn hot_chunks(&self) -> Vec<[u8; 32]> {
        let mut hot = self.hot_state();
        hot.decay();
        let mut list: Vec<([u8; 32], u32)> =
            hot.served.iter().filter(|(_, n)| **n >= HOT_AFTER).map(|(id, n)| (*id, *n)).collect();
        list.sort_by_key(|(id, n)| (std::cmp::Reverse(*n), *id));
        list.into_iter().map(|(id, _)| id).collect()
    }

    /// The chunks kept voluntarily (offered for retrieval).
    pub fn voluntary_chunks(&self) -> Vec<[u8; 32]> {
        let mut list: Vec<[u8; 32]> = self.hot_state().voluntary.keys().copied().collect();
        list.sort();
        list
    }

    pub fn voluntary_stats(&self) -> VoluntaryStats {
        let hot_chunks = self.hot_chunks().len();
        let hot = self.hot_state();
        VoluntaryStats {
            hot_chunks,
            voluntary_chunks: hot.voluntary.len(),
            voluntary_bytes: hot.voluntary_bytes(),
            voluntary_capacity: self.terms.voluntary_capacity,
        }
    }

    /// Of the hot chunks other providers announced, those worth copying
    /// here: not held, and within the room left for voluntary copies
    /// (counting each at the largest chunk size). At most `max`.
    pub fn copies_wanted(
        &self,
        listed: &[(libp2p::PeerId, Vec<[u8; 32]>)],
        max: usize,
    ) -> Vec<(libp2p::PeerId, ChunkId)> {
        let used = self.hot_state().voluntary_bytes();
        let mut room = self.terms.voluntary_capacity.saturating_sub(used);
        let mut out: Vec<(libp2p::PeerId, ChunkId)> = Vec::new();
        for (peer, ids) in listed {
            for id in ids {
                let chunk = crate::net::proto::MAX_CHUNK as u64;
                if out.len() >= max || room < chunk {
                    return out;
                }
                if out.iter().any(|(_, c)| c.0 == *id) || self.store.holds(&ChunkId(*id)).unwrap_or(true) {
                    continue;
                }
                room -= chunk;
                out.push((*peer, ChunkId(*id)));
            }
        }
        out
    }

    /// Keeps a verified copy voluntarily. False if it was already held.
    pub fn keep_copy(&self, body: &Verified) -> Result<bool, StoreError> {
        let id = body.id();
        let len = body.bytes().len() as u64;
        let used = self.hot_state().voluntary_bytes();
        if used + len > self.terms.voluntary_capacity {
            return Ok(false);
        }
        if !self.store.hold(&id, body.bytes())? {
            return Ok(false);
        }
        self.store.market_put(&[VOLUNTARY_PREFIX, &id.0].concat(), &len.to_be_bytes(), false)?;
        self.hot_state().voluntary.insert(id.0, len);
        self.chunks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(chunk = %id.fmt_short(), len, "keeping a voluntary copy of a hot chunk");
        Ok(true)
    }
}
