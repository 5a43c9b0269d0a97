//! One placement pass: asks, choice of providers, bids, uploads.

use super::asks::{self, Candidate, Quote};
use super::assign::{self, Plan};
use super::{Agent, AgentConfig, hex, lock};
use crate::chunk::ChunkId;
use crate::codec;
use crate::ledger::Event;
use crate::net::proto::PutChunk;
use crate::net::{Refusal, Request, Response, peer_id_of};
use crate::promise::{NodeKey, STATEMENT_V1, unix_now};
use futures::StreamExt;
use libp2p::PeerId;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Uploads in flight at once, over all providers: request-response pays a
/// round trip per chunk, so throughput needs many in flight.
const MAX_UPLOADS: usize = 24;
/// Uploads in flight to one provider (a provider admits 32 per peer; home
/// routers choke on hundreds).
const MAX_UPLOADS_PER_PROVIDER: usize = 12;
/// Chunks taken from the queue per pass.
const BATCH: usize = 512;
/// Asks older than this are fetched again from their provider.
const QUOTE_REFRESH_SECS: u64 = 30;
/// The start of a back-off reason for a provider that could not be reached.
pub(super) const UNREACHABLE: &str = "unreachable: ";
/// How long a provider that failed is skipped.
pub(super) const BACKOFF: Duration = Duration::from_secs(10);
/// A provider that missed a deadline or broke a promise is skipped longer.
pub(super) const BACKOFF_BROKEN: Duration = Duration::from_secs(60);
/// An upload's deadline: a base plus a floor on throughput (1 MiB/s).
const UPLOAD_BASE: Duration = Duration::from_secs(20);
/// A promise naming more chunks than this does not fit a ledger entry
/// (64 KiB) as evidence: its id and signatures stand for it.
const EVIDENCE_CHUNKS: usize = 1024;
/// Largest byte range one audit asks for.
pub(super) const AUDIT_RANGE: u32 = 64 * 1024;

/// How one upload went.
enum Upload {
    Stored,
    /// Not the provider's fault (busy, unreachable): try again later.
    Later,
    /// The provider did not keep its promise (refused, wrong receipt, too slow).
    Broken(String),
}

impl Agent {
    /// Checks the asks heard on the gossip and asks providers without a
    /// fresh quote directly. Returns the number of providers known.
    async fn refresh_quotes(&self) -> usize {
        let now = unix_now();
        let providers = self.net.providers().await.unwrap_or_default();
        let heard = self.net.asks().await.unwrap_or_default();
        let latency: HashMap<String, f64> = self
            .net
            .peers()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| Some((p.peer_id, p.latency_ms?)))
            .collect();
        let me = self.net.local_peer_id();
        let take = |peer: PeerId, ask| match asks::check_ask(&peer, &ask, now) {
            Ok(key) => {
                // A fresh ask is the provider answering again: a back-off
                // for being unreachable is over (a network that comes back
                // should not wait out the pause).
                let mut backoff = lock(&self.backoff);
                if backoff.get(&peer).is_some_and(|(_, why)| why.starts_with(UNREACHABLE)) {
                    backoff.remove(&peer);
                }
                drop(backoff);
                let latency_ms = latency.get(&peer.to_string()).copied();
                lock(&self.quotes).insert(peer, Quote { peer, key, ask, latency_ms });
                true
            }
            Err(why) => {
                // Once per provider and reason: a bad ask comes back with
                // every gossip round.
                if lock(&self.refused_asks).insert(peer, why.clone()).as_ref() != Some(&why) {
                    tracing::warn!(%peer, cause = %why, "refused an ask");
                }
                lock(&self.quotes).remove(&peer);
                self.back_off(peer, BACKOFF_BROKEN, why);
                false
            }
        };
        for (peer, ask) in heard {
            let newer = lock(&self.quotes).get(&peer).is_none_or(|q| q.ask.body.issued < ask.body.issued);
            if peer != me && newer {
                take(peer, ask);
            }
        }
        let stale: Vec<PeerId> = providers
            .iter()
            .filter(|p| **p != me)
            .filter(|p| {
                lock(&self.quotes)
                    .get(p)
                    .is_none_or(|q| q.ask.body.issued + QUOTE_REFRESH_SECS < now || q.ask.body.expires < now + 10)
            })
            .copied()
            .collect();
        let fetched = futures::stream::iter(stale)
            .map(|peer| async move { (peer, self.net.request(peer, Request::Ask).await) })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        for (peer, answer) in fetched {
            match answer {
                Ok(Response::Ask(ask)) => {
                    take(peer, ask);
                }
                Ok(other) => tracing::debug!(%peer, answer = ?other, "no ask from a provider"),
                Err(e) => tracing::debug!(%peer, cause = %e, "cannot ask a provider"),
            }
        }
        // Forget quotes of providers no longer known and long expired.
        lock(&self.quotes).retain(|p, q| providers.contains(p) || q.ask.body.expires + 600 > now);
        providers.len()
    }

    /// Fetches one provider's ask directly (a fetch needs its retrieval price).
    pub(super) async fn refresh_quote(&self, peer: PeerId) {
        if let Ok(Response::Ask(ask)) = self.net.request(peer, Request::Ask).await
            && let Ok(key) = asks::check_ask(&peer, &ask, unix_now())
        {
            let latency_ms = lock(&self.quotes).get(&peer).and_then(|q| q.latency_ms);
            lock(&self.quotes).insert(peer, Quote { peer, key, ask, latency_ms });
        }
    }

    /// One pass over the queue; returns the replicas placed.
    pub(super) async fn pass(&self) -> Result<usize, String> {
        let cfg = self.config();
        let now = unix_now();
        let known = self.refresh_quotes().await;
        lock(&self.status).providers_known = known;
        let after = *lock(&self.cursor);
        let batch = self
            .on_store(move |s| {
                let ids = s.pending_ids(after.as_ref(), BATCH)?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(rec) = s.chunk(&id)? {
                        out.push((id, u64::from(rec.len), s.replica_holders(&id)?));
                    }
                }
                Ok(out)
            })
            .await?;
        *lock(&self.cursor) = if batch.len() < BATCH { None } else { batch.last().map(|(id, _, _)| *id) };
        if batch.is_empty() {
            self.set_blocked(None);
            return Ok(0);
        }
        let quotes = lock(&self.quotes).clone();
        let rep = lock(&self.reputation).clone();
        let (recorded, newcomers, out) =
            asks::candidates(&quotes, &rep, |q| self.excluded(q, &cfg, now), cfg.min_reputation, now);
        lock(&self.status).asks_usable = recorded.len() + newcomers.len();
        if recorded.is_empty() && newcomers.is_empty() {
            let why = if quotes.is_empty() {
                if known == 0 { "no providers known".to_string() } else { "no provider has a valid ask".to_string() }
            } else {
                let reasons: HashSet<String> = out.into_iter().map(|(_, w)| w).collect();
                let mut reasons: Vec<String> = reasons.into_iter().collect();
                reasons.sort();
                format!("no provider is usable: {}", reasons.join("; "))
            };
            self.set_blocked(Some(why));
            return Ok(0);
        }
        let unusable = out.len();
        let mut plan = self.assign(&cfg, &batch, recorded, newcomers);
        // Full providers and those skipped (too dear, too little
        // reputation) both leave chunks waiting: say that the latter exist.
        if let Some(why) = plan.blocked.as_mut()
            && unusable > 0
        {
            why.push_str(&format!(" ({unusable} more known but not usable: see `pactfs market`)"));
        }
        lock(&self.bid_blocked).take();
        let promised = self.bid_all(&cfg, plan.groups, &quotes).await;
        // Chunk-major uploads: each body is read once for all its targets.
        type Targets = Vec<(PeerId, NodeKey, [u8; 32])>;
        let mut jobs: Vec<(ChunkId, Targets)> = Vec::new();
        for (id, targets) in plan.targets {
            let t: Vec<_> = targets
                .into_iter()
                .filter_map(|key| {
                    let pid = promised.get(&(key, id)).copied().or_else(|| self.open_slot(&id, &key))?;
                    Some((peer_id_of(&key)?, key, pid))
                })
                .collect();
            if !t.is_empty() {
                jobs.push((id, t));
            }
        }
        // No upload this pass means the bids failed: keep the reason they
        // set (the budget, say) rather than clear it below.
        let total = Arc::new(Semaphore::new(MAX_UPLOADS));
        let per: HashMap<NodeKey, Arc<Semaphore>> = jobs
            .iter()
            .flat_map(|(_, t)| t.iter().map(|(_, k, _)| *k))
            .collect::<HashSet<_>>()
            .into_iter()
            .map(|k| (k, Arc::new(Semaphore::new(MAX_UPLOADS_PER_PROVIDER))))
            .collect();
        let chunks_at_once = (MAX_UPLOADS / cfg.replication.max(1) as usize).max(1);
        let results: Vec<Vec<(NodeKey, [u8; 32], Upload)>> = futures::stream::iter(jobs)
            .map(|(id, targets)| self.place_chunk(id, targets, &total, &per, cfg.replication))
            .buffer_unordered(chunks_at_once)
            .collect()
            .await;
        let mut placed = 0;
        let mut broken: HashMap<[u8; 32], (NodeKey, String)> = HashMap::new();
        let mut kept: HashSet<[u8; 32]> = HashSet::new();
        for (key, pid, outcome) in results.into_iter().flatten() {
            match outcome {
                Upload::Stored => {
                    placed += 1;
                    kept.insert(pid);
                }
                Upload::Later => {}
                Upload::Broken(why) => {
                    broken.entry(pid).or_insert((key, why));
                }
            }
        }
        for (pid, (key, why)) in broken {
            self.break_promise(pid, key, &why);
        }
        // A promise formed this pass and fully honoured is a kept promise.
        for ((key, _), pid) in &promised {
            if kept.remove(pid) && !self.has_open(pid) {
                self.update_reputation(*key, true);
            }
        }
        // What kept chunks waiting this pass, if anything did.
        let bid_blocked = lock(&self.bid_blocked).take();
        self.set_blocked(plan.blocked.or(bid_blocked));
        Ok(placed)
    }

    fn open_slot(&self, id: &ChunkId, key: &NodeKey) -> Option<[u8; 32]> {
        lock(&self.open).get(id)?.iter().find(|(k, _)| k == key).map(|(_, p)| *p)
    }

    fn has_open(&self, pid: &[u8; 32]) -> bool {
        lock(&self.open).values().any(|v| v.iter().any(|(_, p)| p == pid))
    }

    /// Chooses the providers of each chunk's missing replicas.
    fn assign(
        &self,
        cfg: &AgentConfig,
        batch: &[(ChunkId, u64, Vec<[u8; 32]>)],
        recorded: Vec<Candidate>,
        newcomers: Vec<Candidate>,
    ) -> Plan {
        let open = lock(&self.open).clone();
        let mut explored = lock(&self.explored);
        assign::assign(cfg, self.mode, batch, recorded, newcomers, &open, &mut explored)
    }

    /// A chunk's sealed body: local, or (re-placing a chunk the cache no
    /// longer has) fetched from a surviving replica and kept locally.
    async fn local_or_fetched(&self, id: ChunkId) -> Result<Vec<u8>, String> {
        let local = self
            .on_store(move |s| match s.chunk_body(&id) {
                Err(crate::store::StoreError::NotLocal(_)) => Ok(None),
                other => other.map(Some),
            })
            .await?;
        if let Some(body) = local {
            return Ok(body);
        }
        let body = self.fetch(id).await.map_err(|e| e.to_string())?;
        let body = self.on_store(move |s| s.restore_body(&body).map(|_| body)).await?;
        Ok(body.into_bytes())
    }

    /// Uploads one chunk to each of its targets.
    async fn place_chunk(
        &self,
        id: ChunkId,
        targets: Vec<(PeerId, NodeKey, [u8; 32])>,
        total: &Arc<Semaphore>,
        per: &HashMap<NodeKey, Arc<Semaphore>>,
        replication: u32,
    ) -> Vec<(NodeKey, [u8; 32], Upload)> {
        let body = match self.local_or_fetched(id).await {
            Ok(b) => Arc::new(b),
            Err(e) => {
                // Deleted since it was queued, most likely.
                tracing::debug!(chunk = %id.fmt_short(), cause = %e, "chunk not uploaded");
                return Vec::new();
            }
        };
        let uploads = targets.into_iter().map(|(peer, key, pid)| {
            let body = body.clone();
            async move {
                let _t = total.acquire().await.ok();
                let _p = match per.get(&key) {
                    Some(s) => s.acquire().await.ok(),
                    None => None,
                };
                let outcome = self.upload(id, peer, key, pid, body, replication).await;
                (key, pid, outcome)
            }
        });
        futures::future::join_all(uploads).await
    }

    /// Uploads one chunk under a promise and records the receipt.
    async fn upload(
        &self,
        id: ChunkId,
        peer: PeerId,
        provider: NodeKey,
        pid: [u8; 32],
        body: Arc<Vec<u8>>,
        replication: u32,
    ) -> Upload {
        if lock(&self.backoff).get(&peer).is_some_and(|(until, _)| *until > std::time::Instant::now()) {
            return Upload::Later;
        }
        let len = body.len();
        let deadline = UPLOAD_BASE + Duration::from_secs((len >> 20) as u64);
        let mut waits = [100u64, 300, 1000, 3000].into_iter();
        let answer = loop {
            let req = Request::Put(PutChunk { promise: pid, id: id.0, body: body.to_vec() });
            let answer = match tokio::time::timeout(deadline, self.net.request(peer, req)).await {
                Ok(a) => a,
                Err(_) => {
                    let why = format!("missed the upload deadline of {} s", deadline.as_secs());
                    self.back_off(peer, BACKOFF_BROKEN, why.clone());
                    return Upload::Broken(why);
                }
            };
            match (&answer, waits.next()) {
                (Ok(Response::Refused(r)), Some(ms)) if r.why == Refusal::Busy => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                _ => break answer,
            }
        };
        let fail_later = |why: String| {
            lock(&self.status).failures += 1;
            tracing::debug!(%peer, chunk = %id.fmt_short(), cause = %why, "upload to try again");
            self.back_off(peer, BACKOFF, why);
            Upload::Later
        };
        let receipt = match answer {
            Ok(Response::Stored(r)) => r,
            Ok(Response::Refused(r)) if r.why == Refusal::Busy => return fail_later("busy".into()),
            Ok(Response::Refused(r)) => {
                lock(&self.status).failures += 1;
                let why = format!("refused an upload it promised ({:?}): {}", r.why, r.message);
                self.back_off(peer, BACKOFF_BROKEN, why.clone());
                return Upload::Broken(why);
            }
            Ok(other) => return Upload::Broken(format!("answered an upload with {other:?}")),
            Err(e) => return fail_later(e.to_string()),
        };
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        if let Err(e) = receipt.check(&provider, &self.me, &pid, &id.0, len32) {
            return Upload::Broken(format!("bad receipt: {e}"));
        }
        let bytes = codec::encode(STATEMENT_V1, &receipt);
        let signed = codec::Bytes(bytes.clone());
        match self.on_store(move |s| s.record_replica(&id, &provider.0, &bytes, replication)).await {
            Ok(_) => {
                {
                    let mut open = lock(&self.open);
                    if let Some(v) = open.get_mut(&id) {
                        v.retain(|(k, _)| *k != provider);
                        if v.is_empty() {
                            open.remove(&id);
                        }
                    }
                }
                self.log(Event::Receipt { promise: pid, chunk: id.0, provider, bytes: len as u64, signed });
                let mut s = lock(&self.status);
                s.uploads += 1;
                s.upload_bytes += len as u64;
                Upload::Stored
            }
            Err(e) => {
                tracing::error!(cause = %e, "cannot record a replica");
                Upload::Later
            }
        }
    }

    /// Records that a provider did not keep a promise.
    pub(super) fn break_promise(&self, pid: [u8; 32], provider: NodeKey, why: &str) {
        self.break_promise_with(pid, provider, why, Vec::new());
    }

    /// Breaks a promise with `evidence` for the ledger (empty: the promise
    /// itself, both signatures).
    pub(super) fn break_promise_with(&self, pid: [u8; 32], provider: NodeKey, why: &str, evidence: Vec<u8>) {
        tracing::warn!(promise = %hex(&pid), provider = ?provider, cause = %why, "broken promise");
        let (evidence, withheld) = {
            let mut held = lock(&self.held);
            let Some(h) = held.get_mut(&pid) else { return };
            if h.state != super::State::Active {
                return;
            }
            let now = unix_now();
            h.state = super::State::Broken;
            h.broken_at = Some(now);
            h.reason = why.to_string();
            let withheld = h.promise.terms.total_cost().saturating_sub(h.promise.terms.accrued(now));
            let e = match evidence {
                e if !e.is_empty() => e,
                // The whole promise when it fits a ledger entry; else its id
                // and both signatures (the provider holds the terms too).
                _ if h.promise.terms.chunks.len() <= EVIDENCE_CHUNKS => h.promise.encode(),
                _ => [&pid[..], &h.promise.client_sig.0[..], &h.promise.provider_sig.0[..]].concat(),
            };
            self.save(h);
            (e, withheld)
        };
        lock(&self.open).retain(|_, v| {
            v.retain(|(_, p)| *p != pid);
            !v.is_empty()
        });
        self.update_reputation(provider, false);
        self.repair.queue(pid);
        self.log(Event::Broken { promise: pid, provider, reason: why.to_string(), evidence: codec::Bytes(evidence) });
        // Nothing is paid for the rest of a broken promise's term.
        self.log(Event::PaymentWithheld {
            provider,
            promise: pid,
            amount: withheld,
            reason: format!("promise broken: {why}"),
        });
    }
}
