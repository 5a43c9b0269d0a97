//! Repair. A promise that broke (a refused or late upload, a failed audit,
//! a wrong retrieval) or whose provider stayed unreachable past
//! `repair_grace` no longer counts: its replicas are released, so each of
//! its chunks goes back to the placement queue and the next passes place
//! it on another provider, from the local copy or, when the cache no
//! longer has it, from a surviving replica. A short outage (within the
//! grace) moves nothing.
//!
//! A chunk whose only known copy is on the broken provider keeps that
//! replica record (it is the last hope, and reads may still try it) and
//! counts as unrecoverable until another copy turns up.

use super::held::{Held, State};
use super::{Agent, hex, lock};
use crate::chunk::ChunkId;
use crate::net::{Request, Response, node_key_of, peer_id_of};
use crate::promise::{NodeKey, Receipt, Signed, unix_now};
use crate::store::{Store, StoreError};
use futures::StreamExt;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the providers holding our promises are checked.
const REACH_EVERY: Duration = Duration::from_secs(5);
/// Reachability probes in flight at once.
const PROBES: usize = 8;
/// A probe that has not answered by then counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `pactfs status` shows of repair.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairStatus {
    /// Broken promises whose replicas are not all released yet.
    pub promises_pending: usize,
    /// Chunks repair queued again that are not back at the target yet.
    pub chunks_remaining: u64,
    /// Chunks repair queued again that reached the target (since start).
    pub chunks_repaired: u64,
    /// Chunks whose only known copy is on a broken promise's provider.
    pub chunks_unrecoverable: u64,
    /// Providers holding our promises that do not answer now, with the
    /// seconds since they were first missed.
    pub providers_unreachable: Vec<(String, u64)>,
}

#[derive(Default)]
pub(super) struct Repair {
    /// Broken promises whose replicas are still to be released.
    to_release: Mutex<HashSet<[u8; 32]>>,
    /// Chunks repair sent back to the queue, not yet at the target.
    requeued: Mutex<HashSet<ChunkId>>,
    repaired: Mutex<u64>,
    /// Chunks kept on a broken provider: no other copy is known.
    unrecoverable: Mutex<HashSet<ChunkId>>,
    /// Providers missed by the reachability check, and since when.
    unseen: Mutex<HashMap<NodeKey, Instant>>,
    last_check: Mutex<Option<Instant>>,
}

impl Repair {
    pub(super) fn new(broken: impl IntoIterator<Item = [u8; 32]>) -> Repair {
        Repair { to_release: Mutex::new(broken.into_iter().collect()), ..Repair::default() }
    }

    /// A promise broke: release its replicas at the next step.
    pub(super) fn queue(&self, promise: [u8; 32]) {
        lock(&self.to_release).insert(promise);
    }
}

/// What releasing one promise's replicas did.
#[derive(Default)]
pub(super) struct Released {
    /// Replicas forgotten: their chunks are queued again.
    pub dropped: Vec<ChunkId>,
    /// Replicas kept: the only known copy of a chunk the cache lacks.
    pub kept: Vec<ChunkId>,
}

/// Forgets the replicas `provider` holds of `chunks` under a promise of
/// `lineage` (receipts name the promise a chunk was first stored under),
/// queueing the chunks again. With `keep_last`, a replica that is the only
/// copy of a chunk no longer local is kept.
pub(super) fn release_replicas(
    s: &Store,
    chunks: &[[u8; 32]],
    provider: &NodeKey,
    lineage: &HashSet<[u8; 32]>,
    keep_last: bool,
) -> Result<Released, StoreError> {
    let mut out = Released::default();
    for c in chunks {
        let c = ChunkId(*c);
        let Some(bytes) = s.replica_receipt(&c, &provider.0)? else { continue };
        let named = Signed::<Receipt>::decode_stored(&bytes).map(|r| r.body.promise).ok();
        if named.is_some_and(|p| !lineage.contains(&p)) {
            continue;
        }
        if keep_last && !s.has_local_body(&c)? && s.replica_holders(&c)?.iter().all(|h| h == &provider.0) {
            out.kept.push(c);
            continue;
        }
        if s.drop_replica(&c, &provider.0)? {
            out.dropped.push(c);
        }
    }
    Ok(out)
}

impl Agent {
    /// One repair step between placement passes: notice providers gone past
    /// the grace, release broken promises' replicas, count what came back.
    pub(super) async fn repair_step(&self) {
        let due = {
            let mut last = lock(&self.repair.last_check);
            let due = last.is_none_or(|t| t.elapsed() >= REACH_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            self.check_reachability().await;
        }
        let queued: Vec<[u8; 32]> = lock(&self.repair.to_release).iter().copied().collect();
        for pid in queued {
            self.release_broken(pid).await;
        }
        self.count_repaired().await;
    }

    /// Probes every provider holding an active promise that is not
    /// connected now; one missed for longer than the grace has broken its
    /// promises.
    async fn check_reachability(&self) {
        let now = unix_now();
        let providers: HashSet<NodeKey> = lock(&self.held)
            .values()
            .filter(|h| h.state == State::Active && h.is_storage() && h.promise.terms.expiry > now)
            .map(Held::provider)
            .collect();
        lock(&self.repair.unseen).retain(|k, _| providers.contains(k));
        if providers.is_empty() {
            return;
        }
        let connected: HashSet<NodeKey> = self
            .net
            .peers()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| p.peer_id.parse().ok().as_ref().and_then(node_key_of))
            .collect();
        let missing: Vec<NodeKey> = providers.into_iter().filter(|k| !connected.contains(k)).collect();
        let probes = futures::stream::iter(missing)
            .map(|key| async move {
                let Some(peer) = peer_id_of(&key) else { return (key, false) };
                let answer = tokio::time::timeout(PROBE_TIMEOUT, self.net.request(peer, Request::Ask)).await;
                (key, matches!(answer, Ok(Ok(Response::Ask(_)))))
            })
            .buffer_unordered(PROBES)
            .collect::<Vec<_>>()
            .await;
        let grace = Duration::from_secs(self.config().repair_grace);
        let mut gone = Vec::new();
        {
            let mut unseen = lock(&self.repair.unseen);
            for k in connected {
                unseen.remove(&k);
            }
            for (key, reached) in probes {
                if reached {
                    unseen.remove(&key);
                    continue;
                }
                let since = *unseen.entry(key).or_insert_with(|| {
                    tracing::info!(provider = ?key, "a provider holding our promises does not answer");
                    Instant::now()
                });
                if since.elapsed() >= grace {
                    unseen.remove(&key);
                    gone.push((key, since.elapsed()));
                }
            }
        }
        for (key, for_) in gone {
            let why = format!("provider unreachable for {} s (repair_grace {} s)", for_.as_secs(), grace.as_secs());
            let ids: Vec<[u8; 32]> = lock(&self.held)
                .values()
                .filter(|h| h.state == State::Active && h.provider() == key)
                .map(Held::id)
                .collect();
            tracing::warn!(provider = ?key, promises = ids.len(), cause = %why, "repairing a provider's chunks");
            for pid in ids {
                self.break_promise(pid, key, &why);
            }
        }
    }

    /// Releases the replicas of one broken promise (and of the promises it
    /// renewed: receipts name the first of them).
    async fn release_broken(&self, pid: [u8; 32]) {
        let Some(h) = lock(&self.held).get(&pid).cloned() else {
            lock(&self.repair.to_release).remove(&pid);
            return;
        };
        let provider = h.provider();
        let lineage = self.lineage(&h);
        let chunks = h.promise.terms.chunks.clone();
        let released = self.on_store(move |s| release_replicas(s, &chunks, &provider, &lineage, true)).await;
        match released {
            Ok(r) => {
                if !r.dropped.is_empty() || !r.kept.is_empty() {
                    tracing::info!(
                        promise = %hex(&pid),
                        requeued = r.dropped.len(),
                        unrecoverable = r.kept.len(),
                        "broken promise released"
                    );
                }
                lock(&self.repair.requeued).extend(r.dropped);
                let mut unrecoverable = lock(&self.repair.unrecoverable);
                if r.kept.is_empty() {
                    lock(&self.repair.to_release).remove(&pid);
                }
                unrecoverable.extend(r.kept);
            }
            Err(e) => tracing::error!(promise = %hex(&pid), cause = %e, "cannot release a broken promise"),
        }
    }

    /// Moves chunks that reached the target (or left the index) from the
    /// repair queue to the repaired count.
    async fn count_repaired(&self) {
        let requeued: Vec<ChunkId> = lock(&self.repair.requeued).iter().copied().collect();
        let unrecoverable: Vec<ChunkId> = lock(&self.repair.unrecoverable).iter().copied().collect();
        if requeued.is_empty() && unrecoverable.is_empty() {
            return;
        }
        let done = self
            .on_store(move |s| {
                let mut placed = Vec::new();
                for c in requeued {
                    // Back at the target, or no longer needed at all.
                    if s.chunk(&c)?.is_none_or(|r| !r.placement.pending) {
                        placed.push(c);
                    }
                }
                // An unrecoverable chunk recovers when a copy turns up again.
                let mut found = Vec::new();
                for c in unrecoverable {
                    if s.chunk(&c)?.is_none() || s.has_local_body(&c)? {
                        found.push(c);
                    }
                }
                Ok((placed, found))
            })
            .await;
        match done {
            Ok((placed, found)) => {
                let mut q = lock(&self.repair.requeued);
                for c in &placed {
                    q.remove(c);
                }
                *lock(&self.repair.repaired) += placed.len() as u64;
                let mut u = lock(&self.repair.unrecoverable);
                for c in &found {
                    u.remove(c);
                }
            }
            Err(e) => tracing::debug!(cause = %e, "cannot count repaired chunks"),
        }
    }

    pub(super) fn repair_status(&self) -> RepairStatus {
        let mut unreachable: Vec<(String, u64)> = lock(&self.repair.unseen)
            .iter()
            .map(|(k, t)| (peer_id_of(k).map(|p| p.to_string()).unwrap_or_default(), t.elapsed().as_secs()))
            .collect();
        unreachable.sort();
        RepairStatus {
            promises_pending: lock(&self.repair.to_release).len(),
            chunks_remaining: lock(&self.repair.requeued).len() as u64,
            chunks_repaired: *lock(&self.repair.repaired),
            chunks_unrecoverable: lock(&self.repair.unrecoverable).len() as u64,
            providers_unreachable: unreachable,
        }
    }
}
