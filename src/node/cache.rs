//! The drive's local chunk cache as the node runs it: fetching chunks that
//! are not local through the market agent (`fs::Remote`), keeping local
//! bodies within `[storage] cache_size` (least recently read placed chunks
//! go first; pending and pinned never), and `pactfs pin/unpin/evict`.

use super::control::{self, Reply};
use super::network::Network;
use crate::chunk::ChunkId;
use crate::market::Agent;
use crate::store::{Evicted, ROOT_INO, Store};
use futures::StreamExt;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the cache is brought back within its size.
const EVICT_EVERY: Duration = Duration::from_secs(10);
/// Eviction goes below the limit by this share, so it does not run for
/// every chunk read past it.
const EVICT_SLACK: u64 = 10;
/// Chunks fetched at once by `pactfs pin`.
const PIN_FETCHES: usize = 8;

/// `fs::Remote` over the market agent, for the drive's FUSE and prefetch
/// threads (never runtime threads: it blocks on the node's runtime).
pub struct AgentRemote {
    pub agent: Arc<Agent>,
    pub runtime: tokio::runtime::Handle,
}

impl crate::fs::Remote for AgentRemote {
    fn fetch(&self, id: &ChunkId) -> Result<crate::chunk::Verified, String> {
        self.runtime.block_on(self.agent.fetch(*id)).map_err(|e| e.to_string())
    }
}

/// Evicts least recently read placed chunks until local bodies fit in
/// `limit` bytes (less a slack). Returns (chunks, bytes) freed.
pub fn evict_over(store: &Store, limit: u64) -> (u64, u64) {
    if store.used_bytes() <= limit {
        return (0, 0);
    }
    let target = limit - limit / EVICT_SLACK;
    let plan = match store.eviction_plan(target) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(cause = %e, "cannot plan cache eviction");
            return (0, 0);
        }
    };
    let (mut chunks, mut bytes) = (0, 0);
    for id in plan {
        match store.evict(&id) {
            Ok(Evicted::Freed(n)) => {
                chunks += 1;
                bytes += n;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(chunk = %id.fmt_short(), cause = %e, "cannot evict a chunk"),
        }
    }
    if chunks > 0 {
        tracing::info!(chunks, bytes, limit, "cache over its size: evicted placed chunks");
    }
    (chunks, bytes)
}

/// Keeps the cache within `limit` until `stop`.
pub async fn keep_cache(store: Arc<Store>, limit: u64, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVICT_EVERY) => {}
            _ = stop.changed() => return,
        }
        let s = store.clone();
        let _ = tokio::task::spawn_blocking(move || evict_over(&s, limit)).await;
    }
}

/// What `pactfs pin` and `pactfs evict` did.
#[derive(Debug, Default, Serialize)]
pub struct CacheChange {
    pub chunks: u64,
    /// Chunks whose bodies were freed (evict) or fetched back (pin).
    pub changed: u64,
    pub bytes: u64,
    /// Evict: chunks kept because they are not placed yet (the only copy).
    pub pending: u64,
    /// Evict: chunks kept because a pinned file uses them.
    pub pinned: u64,
    /// Pin: chunks no holder could serve.
    pub failed: u64,
    pub errors: Vec<String>,
}

impl Network {
    /// Answers `pin`, `unpin` and `evict`; `None` for other requests.
    pub fn answer_cache(&self, req: &control::Request) -> Option<Reply> {
        let answer = match req {
            control::Request::Pin { ino } => self.pin(ino.unwrap_or(ROOT_INO)),
            control::Request::Unpin { ino } => self.unpin(ino.unwrap_or(ROOT_INO)),
            control::Request::Evict { ino } => self.evict(ino.unwrap_or(ROOT_INO)),
            _ => return None,
        };
        Some(match answer.and_then(|c| serde_json::to_value(c).map_err(|e| e.to_string())) {
            Ok(v) => Reply::ok(v),
            Err(e) => Reply::err(e),
        })
    }

    fn cache_parts(&self) -> Result<(Arc<Store>, Arc<Agent>), String> {
        match (self.drive_store(), self.agent_handle()) {
            (Some(s), Some(a)) => Ok((s, a)),
            _ => Err("this node has no drive".into()),
        }
    }

    /// Pins the files at or under `ino` and fetches what they lack.
    fn pin(&self, ino: u64) -> Result<CacheChange, String> {
        let (store, agent) = self.cache_parts()?;
        store.set_pin(ino, true).map_err(|e| e.to_string())?;
        let chunks = store.chunks_under(ino).map_err(|e| e.to_string())?;
        let mut out = CacheChange { chunks: chunks.len() as u64, ..CacheChange::default() };
        let mut missing = Vec::new();
        for id in chunks {
            if !store.has_local_body(&id).map_err(|e| e.to_string())? {
                missing.push(id);
            }
        }
        let results: Vec<Result<crate::chunk::Verified, String>> = self.block_on(
            futures::stream::iter(missing)
                .map(|id| {
                    let agent = agent.clone();
                    async move { agent.fetch(id).await.map_err(|e| e.to_string()) }
                })
                .buffer_unordered(PIN_FETCHES)
                .collect(),
        );
        for r in results {
            match r.and_then(|body| store.restore_body(&body).map(|_| body.bytes().len()).map_err(|e| e.to_string())) {
                Ok(n) => {
                    out.changed += 1;
                    out.bytes += n as u64;
                }
                Err(e) => {
                    out.failed += 1;
                    out.errors.push(e);
                }
            }
        }
        Ok(out)
    }

    fn unpin(&self, ino: u64) -> Result<CacheChange, String> {
        let (store, _) = self.cache_parts()?;
        store.set_pin(ino, false).map_err(|e| e.to_string())?;
        Ok(CacheChange::default())
    }

    /// Frees the local bodies of the placed chunks of the files at or
    /// under `ino`, except those a pinned file uses.
    fn evict(&self, ino: u64) -> Result<CacheChange, String> {
        let (store, _) = self.cache_parts()?;
        let e = |e: crate::store::StoreError| e.to_string();
        let mut pinned = std::collections::HashSet::new();
        for p in store.pinned_inodes().map_err(e)? {
            pinned.extend(store.chunks_under(p).map_err(e)?);
        }
        let chunks = store.chunks_under(ino).map_err(e)?;
        let mut out = CacheChange { chunks: chunks.len() as u64, ..CacheChange::default() };
        for id in chunks {
            if pinned.contains(&id) {
                out.pinned += 1;
                continue;
            }
            match store.evict(&id).map_err(e)? {
                Evicted::Freed(n) => {
                    out.changed += 1;
                    out.bytes += n;
                }
                Evicted::Pending => out.pending += 1,
                Evicted::AlreadyRemote | Evicted::Unknown => {}
            }
        }
        Ok(out)
    }
}
