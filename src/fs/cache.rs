//! Decrypted chunks shared by all open files, bounded by bytes.
//!
//! Sequential reads ask for the same chunk many times (the kernel reads in
//! pieces smaller than a chunk), and a reader that reaches into a chunk's
//! second half is about to want the next one: [`PlainCache`] keeps recent
//! plaintexts, and [`PlainCache::begin_prefetch`] lets one background load
//! per chunk run on the other core while the reader is served.

use super::lock;
use crate::chunk::ChunkId;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Bytes of plaintext kept: a few average chunks per concurrent reader,
/// small next to the resident-memory budget of the mount.
pub const CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Background chunk loads at once; more would only compete for the cores.
pub const MAX_PREFETCH: usize = 4;

#[derive(Default)]
struct Inner {
    map: HashMap<ChunkId, (Arc<Vec<u8>>, u64)>,
    bytes: usize,
    tick: u64,
}

/// A byte-bounded LRU of chunk plaintexts, plus the set of loads in flight.
#[derive(Default)]
pub struct PlainCache {
    inner: Mutex<Inner>,
    loading: Mutex<HashSet<ChunkId>>,
}

impl PlainCache {
    pub fn get(&self, id: &ChunkId) -> Option<Arc<Vec<u8>>> {
        let mut inner = lock(&self.inner);
        inner.tick += 1;
        let tick = inner.tick;
        let (plain, used) = inner.map.get_mut(id)?;
        *used = tick;
        Some(plain.clone())
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        lock(&self.inner).map.contains_key(id)
    }

    pub fn insert(&self, id: ChunkId, plain: Arc<Vec<u8>>) {
        let mut inner = lock(&self.inner);
        inner.tick += 1;
        let tick = inner.tick;
        let len = plain.len();
        if let Some((old, _)) = inner.map.insert(id, (plain, tick)) {
            inner.bytes -= old.len();
        }
        inner.bytes += len;
        while inner.bytes > CACHE_BYTES && inner.map.len() > 1 {
            let Some(victim) = inner.map.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k) else { break };
            if let Some((old, _)) = inner.map.remove(&victim) {
                inner.bytes -= old.len();
            }
        }
    }

    /// Claims the right to load `id` in the background: false when it is
    /// cached, already loading, or enough loads are running.
    pub fn begin_prefetch(&self, id: &ChunkId) -> bool {
        if self.contains(id) {
            return false;
        }
        let mut loading = lock(&self.loading);
        if loading.len() >= MAX_PREFETCH || loading.contains(id) {
            return false;
        }
        loading.insert(*id);
        true
    }

    pub fn end_prefetch(&self, id: &ChunkId) {
        lock(&self.loading).remove(id);
    }
}
