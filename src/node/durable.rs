//! What a mounted node tells about durability: the handle behind the
//! drive's `user.pactfs.*` attributes ([`DriveDurability`]), the facts of
//! `pactfs status`, and the waits of `pactfs sync --durable`
//! ([`Tracker`]).
//!
//! `sync --durable` asks twice over the control socket: `DurableStart`
//! flushes the drive and snapshots the chunks still pending (all of them,
//! or those of one file or directory tree) under a token; `DurableCheck`
//! says how many of them are still short of the replication target and
//! why placement waits, if it does. The CLI polls and decides when to give
//! up; the node keeps only the snapshot.

use crate::chunk::ChunkId;
use crate::fs::Durability;
use crate::market::Agent;
use crate::promise::{Receipt, Signed};
use crate::store::{Kind, ROOT_INO, Store, StoreError};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Largest stored receipt decoded (a receipt is about 250 bytes).
/// Snapshots kept at once; the one checked least recently goes first, so
/// an abandoned `sync --durable` costs nothing for long.
const MAX_TOKENS: usize = 16;

/// The `user.pactfs.*` answers, from the store's replica records (each
/// backed by a provider's verified receipt) and the agent's promises.
pub struct DriveDurability {
    store: Arc<Store>,
    agent: Arc<Agent>,
}

impl DriveDurability {
    pub fn new(store: Arc<Store>, agent: Arc<Agent>) -> DriveDurability {
        DriveDurability { store, agent }
    }
}

impl Durability for DriveDurability {
    fn target(&self) -> u32 {
        self.agent.config().replication
    }

    fn min_replicas(&self, chunks: &[ChunkId]) -> Result<u32, StoreError> {
        let mut min = self.target();
        for c in chunks {
            let n = self.store.chunk(c)?.map_or(0, |rec| u32::from(rec.placement.replicas));
            min = min.min(n);
        }
        Ok(min)
    }

    fn promises(&self, chunks: &[ChunkId]) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut ids = BTreeSet::new();
        for c in chunks {
            for (holder, bytes) in self.store.replica_receipts(c)? {
                match Signed::<Receipt>::decode_stored(&bytes) {
                    Ok(r) => {
                        ids.insert(self.agent.current_promise(&r.body.promise));
                    }
                    // Checked before it was stored, so this is damage to
                    // the index: say so, and show what is readable.
                    Err(e) => tracing::warn!(
                        chunk = %c.fmt_short(),
                        holder = %crate::chunk::hex(&holder[..4]),
                        cause = %e,
                        "unreadable replica receipt"
                    ),
                }
            }
        }
        Ok(ids.into_iter().collect())
    }
}

/// `pactfs status --json`: the drive's placement and the agent's state.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Chunks waiting for placement (pinned locally).
    pub pending_chunks: u64,
    /// Sealed bytes of the waiting chunks.
    pub pending_bytes: u64,
    /// Replicas the waiting chunks still lack, in all.
    pub missing_replicas: u64,
    /// Chunks in the drive's index.
    pub chunks: u64,
    /// Chunks that reached the replication target.
    pub placed_chunks: u64,
    /// Replicas recorded on providers, over all chunks.
    pub replicas: u64,
    pub replication_target: u32,
    /// Chunks with fewer replicas than the target.
    pub under_replicated_chunks: u64,
    pub agent: crate::market::AgentStatus,
}

/// What `DurableCheck` answers.
#[derive(Debug, Serialize)]
pub struct Progress {
    /// Chunks pending when the wait started.
    pub total: u64,
    /// Of those, chunks still below the replication target (a chunk no
    /// file uses any more counts as done).
    pub remaining: u64,
    /// Replicas those chunks still lack, in all: it falls with every
    /// replica placed, before a chunk is complete.
    pub missing_replicas: u64,
    /// Why placement waits, if the agent knows.
    pub blocked: Option<String>,
}

struct Waiting {
    total: u64,
    left: Vec<ChunkId>,
    checked: Instant,
}

/// The snapshots of `sync --durable`, and `status`.
pub struct Tracker {
    store: Arc<Store>,
    agent: Arc<Agent>,
    waits: Mutex<(u64, HashMap<u64, Waiting>)>,
}

impl Tracker {
    pub fn new(store: Arc<Store>, agent: Arc<Agent>) -> Tracker {
        Tracker { store, agent, waits: Mutex::default() }
    }

    pub fn status(&self) -> Result<Status, StoreError> {
        let target = self.agent.config().replication;
        let pending = self.store.pending_summary(target)?;
        let all = self.store.replica_summary(target)?;
        Ok(Status {
            pending_chunks: pending.chunks,
            pending_bytes: pending.bytes,
            missing_replicas: pending.missing_replicas,
            chunks: all.chunks,
            placed_chunks: all.placed,
            replicas: all.replicas,
            replication_target: target,
            under_replicated_chunks: all.under_target,
            agent: self.agent.status(),
        })
    }

    /// Snapshots the pending chunks of the files under `ino` (a file or a
    /// directory, walked), or of the whole drive; returns the token and
    /// the first progress. The caller has flushed the drive.
    pub fn start(&self, ino: Option<u64>) -> Result<(u64, Progress), StartError> {
        let pending: Vec<ChunkId> = match ino {
            None | Some(ROOT_INO) => self.store.all_pending()?,
            Some(ino) => {
                let mut out = Vec::new();
                for c in self.chunks_under(ino)? {
                    if self.store.is_pending(&c)? == Some(true) {
                        out.push(c);
                    }
                }
                out
            }
        };
        let total = pending.len() as u64;
        let mut waits = crate::lock(&self.waits);
        if waits.1.len() >= MAX_TOKENS
            && let Some(oldest) = waits.1.iter().min_by_key(|(_, w)| w.checked).map(|(t, _)| *t)
        {
            waits.1.remove(&oldest);
        }
        waits.0 += 1;
        let token = waits.0;
        waits.1.insert(token, Waiting { total, left: pending, checked: Instant::now() });
        drop(waits);
        Ok((token, self.check(token)?))
    }

    /// How many chunks of the snapshot `token` are still short of the target.
    pub fn check(&self, token: u64) -> Result<Progress, StartError> {
        // A copy, so the store is read without the lock held and a second
        // check of the same token meanwhile sees the whole list too.
        let (total, left) = {
            let mut waits = crate::lock(&self.waits);
            let w = waits.1.get_mut(&token).ok_or(StartError::UnknownToken(token))?;
            w.checked = Instant::now();
            (w.total, w.left.clone())
        };
        let target = self.agent.config().replication;
        let mut still = Vec::with_capacity(left.len());
        let mut missing = 0;
        for c in left {
            // Once at the target, done: a later repair is not this wait's.
            if let Some(rec) = self.store.chunk(&c)?
                && rec.placement.pending
            {
                missing += u64::from(target.saturating_sub(u32::from(rec.placement.replicas)).max(1));
                still.push(c);
            }
        }
        let remaining = still.len() as u64;
        if let Some(w) = crate::lock(&self.waits).1.get_mut(&token) {
            w.left = still;
        }
        let blocked = if remaining > 0 { self.blocked() } else { None };
        Ok(Progress { total, remaining, missing_replicas: missing, blocked })
    }

    fn blocked(&self) -> Option<String> {
        self.agent.status().blocked
    }

    /// The distinct chunks of the files at or under `ino`.
    fn chunks_under(&self, ino: u64) -> Result<HashSet<ChunkId>, StartError> {
        let root = self.store.inode(ino)?.ok_or(StartError::NoInode(ino))?;
        let mut chunks = HashSet::new();
        let mut seen = HashSet::new();
        let mut todo = vec![(root.ino, root.kind)];
        while let Some((ino, kind)) = todo.pop() {
            if !seen.insert(ino) {
                continue;
            }
            match kind {
                Kind::File => chunks.extend(self.store.manifest(ino)?.iter().map(|e| e.id)),
                Kind::Dir => todo.extend(self.store.read_dir(ino)?.into_iter().map(|(_, d)| (d.ino, d.kind))),
                _ => {}
            }
        }
        Ok(chunks)
    }
}

/// Why a durability wait could not start or be checked.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("inode {0} is not in this drive (removed meanwhile?)")]
    NoInode(u64),
    /// The node restarted, or the snapshot was dropped for newer ones.
    #[error("no durability wait {0} on this node: start again")]
    UnknownToken(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}
