//! The market agent: gets pending chunks onto providers.
//!
//! For now placement is the simplest honest rule, to be replaced by bids
//! and promises: every known provider is a candidate, each chunk goes to
//! `replication` distinct providers chosen by rendezvous hashing (so load
//! spreads and a retry picks the same ones), an upload counts only with
//! the provider's signed receipt, and a chunk stays pending and pinned
//! until its replication target holds.

mod scrub;

pub use scrub::{ScrubReport, scrub};

use crate::chunk::ChunkId;
use crate::net::{NetHandle, Response, node_key_of, proto::PutChunk};
use crate::promise::{NodeKey, PutToken, Signed, Signer, TOKEN_LIFETIME_SECS, unix_now};
use crate::store::{Store, StoreError};
use futures::StreamExt;
use libp2p::PeerId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Uploads in flight at once, over all providers: request-response pays a
/// round trip per chunk, so throughput needs many in flight (a provider
/// admits 32 per peer).
const MAX_UPLOADS: usize = 16;
/// Chunks taken from the queue per pass.
const BATCH: usize = 256;
/// Pause between passes when nothing could be placed.
const IDLE: Duration = Duration::from_millis(500);
/// How long a provider that failed an upload is skipped.
const BACKOFF: Duration = Duration::from_secs(10);

/// Placement counters, for status and logs.
#[derive(Default, Clone, Debug, serde::Serialize)]
pub struct AgentStats {
    pub uploads: u64,
    pub upload_bytes: u64,
    pub failures: u64,
    pub providers_known: usize,
}

pub struct Agent {
    store: Arc<Store>,
    net: NetHandle,
    signer: Signer,
    me: NodeKey,
    replication: u32,
    tokens: Mutex<HashMap<NodeKey, Signed<PutToken>>>,
    /// Where the next pass resumes in the queue, so chunks that cannot be
    /// placed now (all their candidates refuse) do not starve the rest.
    cursor: Mutex<Option<ChunkId>>,
    backoff: Mutex<HashMap<PeerId, Instant>>,
    stats: Mutex<AgentStats>,
}

impl Agent {
    pub fn new(store: Arc<Store>, net: NetHandle, signer: Signer, replication: u32) -> Agent {
        let me = signer.node_key();
        Agent {
            store,
            net,
            signer,
            me,
            replication: replication.max(1),
            tokens: Mutex::default(),
            cursor: Mutex::default(),
            backoff: Mutex::default(),
            stats: Mutex::default(),
        }
    }

    pub fn stats(&self) -> AgentStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Places chunks until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let placed = match self.pass().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(cause = %e, "placement pass failed");
                    0
                }
            };
            if *stop.borrow() {
                break;
            }
            if placed == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }

    /// One pass over the queue; returns the replicas placed.
    async fn pass(&self) -> Result<usize, String> {
        let providers: Vec<PeerId> = {
            let all = self.net.providers().await.map_err(|e| e.to_string())?;
            let now = Instant::now();
            let mut backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
            backoff.retain(|_, until| *until > now);
            let me = self.net.local_peer_id();
            all.into_iter().filter(|p| *p != me && !backoff.contains_key(p)).collect()
        };
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).providers_known = providers.len();
        if providers.is_empty() {
            return Ok(0);
        }
        let after = *self.cursor.lock().unwrap_or_else(|p| p.into_inner());
        // One trip to the blocking pool for the batch and its holders.
        let batch = self
            .on_store(move |s| {
                let ids = s.pending_ids(after.as_ref(), BATCH)?;
                ids.into_iter().map(|id| Ok((id, s.replica_holders(&id)?))).collect::<Result<Vec<_>, StoreError>>()
            })
            .await?;
        // A short batch reached the end of the queue: start over next time.
        *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) =
            if batch.len() < BATCH { None } else { batch.last().map(|(id, _)| *id) };
        let mut jobs = Vec::new();
        for (id, holders) in batch {
            let need = (self.replication as usize).saturating_sub(holders.len());
            let mut candidates: Vec<(blake3::Hash, PeerId)> = providers
                .iter()
                .filter(|p| node_key_of(p).is_some_and(|k| !holders.contains(&k.0)))
                .map(|p| (rendezvous(&id, p), *p))
                .collect();
            candidates.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let targets: Vec<PeerId> = candidates.into_iter().take(need).map(|(_, p)| p).collect();
            if !targets.is_empty() {
                jobs.push((id, targets));
            }
        }
        // Chunks in parallel, each to all its targets at once: about
        // MAX_UPLOADS uploads in flight, and each body read once.
        let chunks_at_once = (MAX_UPLOADS / self.replication as usize).max(1);
        let placed = futures::stream::iter(jobs)
            .map(|(id, targets)| self.place(id, targets))
            .buffer_unordered(chunks_at_once)
            .fold(0, |sum, n| futures::future::ready(sum + n))
            .await;
        Ok(placed)
    }

    /// Runs store work on the blocking pool.
    async fn on_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, String> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(&store)).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
    }

    /// Uploads one chunk to each of `targets`; returns the replicas placed.
    async fn place(&self, id: ChunkId, targets: Vec<PeerId>) -> usize {
        let body = match self.on_store(move |s| s.chunk_body(&id)).await {
            Ok(b) => b,
            Err(e) => {
                // Deleted since it was queued, most likely.
                tracing::debug!(chunk = %id.fmt_short(), cause = %e, "chunk not uploaded");
                return 0;
            }
        };
        let uploads = targets.into_iter().map(|peer| self.upload(id, peer, body.clone()));
        futures::future::join_all(uploads).await.into_iter().filter(|ok| *ok).count()
    }

    fn token_for(&self, provider: NodeKey) -> Signed<PutToken> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = |t: &Signed<PutToken>| t.body.expires > unix_now() + TOKEN_LIFETIME_SECS / 4;
        if let Some(t) = tokens.get(&provider).filter(|t| fresh(t)) {
            return t.clone();
        }
        let t = self.signer.sign(PutToken::new(self.me, provider, rand_nonce()));
        tokens.insert(provider, t.clone());
        t
    }

    /// Uploads one chunk to one provider and records its receipt.
    async fn upload(&self, id: ChunkId, peer: PeerId, body: Vec<u8>) -> bool {
        let Some(provider) = node_key_of(&peer) else { return false };
        let len = body.len();
        let req = crate::net::Request::Put(PutChunk { token: self.token_for(provider), id: id.0, body });
        let fail = |why: String| {
            tracing::warn!(chunk = %id.fmt_short(), %peer, cause = %why, "upload failed");
            self.backoff.lock().unwrap_or_else(|p| p.into_inner()).insert(peer, Instant::now() + BACKOFF);
            self.stats.lock().unwrap_or_else(|p| p.into_inner()).failures += 1;
            false
        };
        let receipt = match self.net.request(peer, req).await {
            Ok(Response::Stored(r)) => r,
            Ok(Response::Refused(r)) => return fail(format!("refused ({:?}): {}", r.why, r.message)),
            Ok(other) => return fail(format!("unexpected answer {other:?}")),
            Err(e) => return fail(e.to_string()),
        };
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        if let Err(e) = receipt.check(&provider, &self.me, &id.0, len32) {
            return fail(format!("bad receipt: {e}"));
        }
        let bytes = crate::codec::encode(RECEIPT_V1, &receipt);
        let target = self.replication;
        match self.on_store(move |s| s.record_replica(&id, &provider.0, &bytes, target)).await {
            Ok(_) => {
                let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                s.uploads += 1;
                s.upload_bytes += len as u64;
                true
            }
            Err(e) => {
                tracing::error!(cause = %e, "cannot record a replica");
                false
            }
        }
    }
}

/// Version byte of a stored receipt.
pub const RECEIPT_V1: u8 = 1;

/// Rendezvous (highest-random-weight) order of a provider for a chunk.
fn rendezvous(id: &ChunkId, peer: &PeerId) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(&id.0);
    h.update(&peer.to_bytes());
    h.finalize()
}

fn rand_nonce() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u64::from_le_bytes(b)
}
