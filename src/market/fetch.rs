//! Retrieval: fetching a chunk whose body is no longer local from one of
//! its holders, under a retrieval promise, verifying every byte.
//!
//! Holders are the providers whose receipts we keep for the chunk, ranked
//! by reputation, then by a hash of (chunk, holder) so that consecutive
//! chunks come from different holders (read-ahead then pulls from several
//! at once). With a holder, the agent forms a retrieval promise (priced
//! per GiB by the holder's ask, within `[budget] max_retrieval_price`)
//! covering the chunks of the storage promise the chunk is held under,
//! and reuses it for all of them while it lives. A refusal, a missed
//! deadline or bytes that do not hash to the id break the retrieval
//! promise; bytes that are wrong or gone also break the storage promise
//! (the data was not kept), which sends its chunks to repair. The next
//! holder is tried; the error comes only when none could serve.

use super::held::{Held, State};
use super::{Agent, hex, lock, rand_nonce};
use crate::chunk::{ChunkId, Verified};
use crate::net::proto::GetChunk;
use crate::net::{NetError, NetHandle, Refusal, Request, Response, peer_id_of};
use crate::promise::{AuditTerms, NodeKey, PromiseKind, Receipt, Signed, Terms, credits, retrieval_cost, unix_now};
use libp2p::PeerId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a retrieval promise is asked for.
const RETRIEVAL_SECS: u64 = 3600;
/// A retrieval promise this close to its end is not used for a new fetch.
const RETRIEVAL_MARGIN_SECS: u64 = 60;
/// A fetch's deadline: a base plus a floor on throughput (1 MiB/s).
const FETCH_BASE: Duration = Duration::from_secs(20);
const GOT_PREFIX: &[u8] = b"got/";
/// Pauses between rounds over holders that could not be reached.
const ROUND_WAITS: [Duration; 4] =
    [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4), Duration::from_secs(8)];

/// Why a chunk could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("chunk {0} has no recorded holder")]
    NoHolder(String),
    #[error("no holder of chunk {chunk} could serve it: {}", tried.join("; "))]
    Failed { chunk: String, tried: Vec<String> },
    #[error("store: {0}")]
    Store(String),
}

/// How one attempt at one holder ended, when it did not serve.
enum Miss {
    /// Not the holder's fault (busy, unreachable, too dear).
    Skip(String),
    /// The holder broke its promise: the retrieval promise, and with
    /// `storage` the storage promise too (the data was not kept).
    Broke { why: String, storage: bool },
}

/// The retrieval side of the agent's state.
#[derive(Default)]
pub(super) struct Retrievals {
    /// The live retrieval promise covering (holder, chunk).
    covering: Mutex<HashMap<(NodeKey, ChunkId), [u8; 32]>>,
    /// One bid at a time per holder: concurrent fetches wait for it.
    bidding: Mutex<HashMap<NodeKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Bytes fetched under each retrieval promise (what it earned).
    got: Mutex<HashMap<[u8; 32], u64>>,
}

impl Agent {
    /// Fetches the sealed body of `id` from a holder, checked against `id`.
    pub async fn fetch(&self, id: ChunkId) -> Result<Verified, FetchError> {
        let (len, holders) = self
            .on_store(move |s| {
                let len = s.chunk(&id)?.map_or(0, |r| u64::from(r.len));
                let mut out = Vec::new();
                for h in s.replica_holders(&id)? {
                    let named = s
                        .replica_receipt(&id, &h)?
                        .and_then(|b| Signed::<Receipt>::decode_stored(&b).ok())
                        .map_or([0; 32], |r| r.body.promise);
                    out.push((NodeKey(h), named));
                }
                Ok((len, out))
            })
            .await
            .map_err(FetchError::Store)?;
        self.fetch_among(id, len, holders).await
    }

    /// Fetches a chunk this store has no record of from the given holders
    /// (a restore fetching its snapshot parts, named by the signed root):
    /// each serves it under the client's storage promise it holds, found
    /// by the holder itself.
    pub async fn fetch_from_holders(
        &self,
        id: ChunkId,
        len: u64,
        holders: Vec<NodeKey>,
    ) -> Result<Verified, FetchError> {
        self.fetch_among(id, len, holders.into_iter().map(|h| (h, [0; 32])).collect()).await
    }

    async fn fetch_among(
        &self,
        id: ChunkId,
        len: u64,
        mut holders: Vec<(NodeKey, [u8; 32])>,
    ) -> Result<Verified, FetchError> {
        let now = unix_now();
        let rep = lock(&self.reputation).clone();
        let min = self.config().min_reputation;
        holders.sort_by_cached_key(|(h, _)| {
            let r = rep.get(h).copied().unwrap_or_default();
            let below = r.has_record(now) && r.score(now) < min;
            let spread = *blake3::hash(&[id.0, h.0].concat()).as_bytes();
            (below, !super::asks::trusted(r.score(now)), spread)
        });
        let mut tried = Vec::new();
        let mut seen: Vec<NodeKey> = holders.iter().map(|(h, _)| *h).collect();
        // Holders that could not be reached may be only not found yet (a
        // node just started learns addresses within seconds): try again a
        // few times before giving up; a holder that broke is not retried.
        // Providers keeping a voluntary copy join once the holders under
        // promise have all been tried.
        for (round, wait) in ROUND_WAITS.iter().enumerate() {
            if round == 1 || holders.is_empty() && round == 0 {
                let volunteers = self.volunteers(id, &seen).await;
                seen.extend(&volunteers);
                // Before the unreachable holders are tried again.
                holders.splice(0..0, volunteers.into_iter().map(|v| (v, [0; 32])));
            }
            let mut again = Vec::new();
            for (holder, named) in std::mem::take(&mut holders) {
                match self.fetch_from(id, len, holder, named).await {
                    Ok(body) => return Ok(body),
                    Err(Miss::Skip(why)) => {
                        tracing::debug!(chunk = %id.fmt_short(), %why, "holder skipped for now");
                        tried.push(why);
                        again.push((holder, named));
                    }
                    Err(Miss::Broke { why, .. }) => {
                        tracing::debug!(chunk = %id.fmt_short(), %why, "holder broke its promise");
                        tried.push(why);
                    }
                }
            }
            if round + 1 == ROUND_WAITS.len() || again.is_empty() && round > 0 {
                break;
            }
            holders = again;
            if !holders.is_empty() {
                tokio::time::sleep(*wait).await;
            }
        }
        if seen.is_empty() {
            return Err(FetchError::NoHolder(id.fmt_short()));
        }
        tracing::warn!(chunk = %id.fmt_short(), tried = ?tried, "no holder could serve a chunk");
        Err(FetchError::Failed { chunk: id.fmt_short(), tried })
    }

    /// Providers offering a voluntary copy of `id` that are not in
    /// `known`: from their announcements in market mode, from DHT provider
    /// records in hybrid mode.
    async fn volunteers(&self, id: ChunkId, known: &[NodeKey]) -> Vec<NodeKey> {
        let me = self.net.local_peer_id();
        let peers: Vec<PeerId> = match self.mode {
            crate::net::Mode::Market => self
                .net
                .listings()
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|l| l.offers.contains(&id.0))
                .map(|l| l.peer)
                .collect(),
            crate::net::Mode::Hybrid => self.net.find_holders(id.0).await.unwrap_or_default(),
        };
        let found: Vec<NodeKey> = peers
            .iter()
            .filter(|p| **p != me)
            .filter_map(crate::net::node_key_of)
            .filter(|k| !known.contains(k))
            .collect();
        if !found.is_empty() {
            tracing::debug!(chunk = %id.fmt_short(), volunteers = found.len(), "voluntary copies found");
        }
        found
    }

    async fn fetch_from(&self, id: ChunkId, len: u64, holder: NodeKey, named: [u8; 32]) -> Result<Verified, Miss> {
        let peer = peer_id_of(&holder).ok_or_else(|| Miss::Skip("a holder key is not a peer id".into()))?;
        let rp = match self.retrieval_promise(id, holder, peer, named).await {
            Ok(rp) => rp,
            Err(miss) => {
                self.break_for(&miss, None, holder, named);
                return Err(miss);
            }
        };
        let deadline = FETCH_BASE + Duration::from_secs(len >> 20);
        let get = GetChunk { promise: rp, id: id.0, range: None };
        let outcome = tokio::time::timeout(deadline, get_retrying(&self.net, peer, get)).await;
        let miss = match outcome {
            Ok(Ok(Response::Chunk(b))) => match Verified::check(id, b) {
                Ok(v) => {
                    *lock(&self.retrievals.got).entry(rp).or_default() += v.bytes().len() as u64;
                    return Ok(v);
                }
                Err(b) => Miss::Broke {
                    why: format!("served {} bytes that do not hash to chunk {}", b.len(), id.fmt_short()),
                    storage: true,
                },
            },
            Ok(Ok(Response::Refused(r))) if r.why == Refusal::Busy => Miss::Skip(format!("{peer} stayed busy")),
            Ok(Ok(Response::Refused(r))) => Miss::Broke {
                why: format!("refused chunk {}: {}", id.fmt_short(), r.message),
                // It no longer holds (or can no longer read) what it promised to keep.
                storage: matches!(r.why, Refusal::NotFound | Refusal::Internal),
            },
            Ok(Ok(other)) => Miss::Broke { why: format!("answered a fetch with {other:?}"), storage: false },
            Ok(Err(e)) => Miss::Skip(format!("{peer}: {e}")),
            Err(_) => Miss::Broke {
                why: format!("missed the {} s deadline for chunk {}", deadline.as_secs(), id.fmt_short()),
                storage: false,
            },
        };
        self.break_for(&miss, Some(rp), holder, named);
        Err(miss)
    }

    /// What a broken answer breaks: the retrieval promise it came under (if
    /// one was made) and, when the holder no longer has or serves what it
    /// promised to keep, the storage promise `named` (none for a voluntary
    /// copy).
    fn break_for(&self, miss: &Miss, retrieval: Option<[u8; 32]>, holder: NodeKey, named: [u8; 32]) {
        let Miss::Broke { why, storage } = miss else { return };
        if let Some(rp) = retrieval {
            self.break_promise(rp, holder, why);
        }
        if *storage && named != [0; 32] {
            self.break_promise(self.current_promise(&named), holder, why);
        }
    }

    /// A live retrieval promise with `holder` covering `id`: the one held,
    /// or a new one for the chunks of the storage promise `named`.
    async fn retrieval_promise(
        &self,
        id: ChunkId,
        holder: NodeKey,
        peer: PeerId,
        named: [u8; 32],
    ) -> Result<[u8; 32], Miss> {
        if let Some(p) = self.live_retrieval(holder, id) {
            return Ok(p);
        }
        let gate = lock(&self.retrievals.bidding).entry(holder).or_default().clone();
        let _one = gate.lock().await;
        if let Some(p) = self.live_retrieval(holder, id) {
            return Ok(p);
        }
        let cfg = self.config();
        let quote = lock(&self.quotes).get(&peer).cloned();
        let quote = match quote {
            Some(q) if q.ask.body.expires > unix_now() => q,
            _ => {
                self.refresh_quote(peer).await;
                lock(&self.quotes).get(&peer).cloned().ok_or_else(|| Miss::Skip(format!("no ask from {peer}")))?
            }
        };
        let price = quote.ask.body.price_per_gib_retrieval;
        if price > cfg.max_retrieval_price {
            return Err(Miss::Skip(format!(
                "{peer} asks {} per GiB retrieved, above [budget] max_retrieval_price {}",
                credits(price),
                credits(cfg.max_retrieval_price)
            )));
        }
        let storage = self.current_promise(&named);
        let (promised, mut bytes) = lock(&self.held)
            .get(&storage)
            .filter(|h| h.provider() == holder)
            .map_or((Vec::new(), 0), |h| (h.promise.terms.chunks.clone(), h.promise.terms.bytes));
        // Only chunks this holder signed a receipt for: a promise may name
        // chunks that were never uploaded (released before their pass
        // reached them), and a bid naming one is refused as not held,
        // which would blame an honest provider.
        let mut chunks = self
            .on_store(move |s| {
                let mut out = Vec::with_capacity(promised.len());
                for c in promised {
                    if s.replica_receipt(&ChunkId(c), &holder.0)?.is_some() {
                        out.push(c);
                    }
                }
                Ok(out)
            })
            .await
            .unwrap_or_default();
        if !chunks.contains(&id.0) {
            chunks = vec![id.0];
            bytes = crate::net::proto::MAX_CHUNK as u64;
        }
        let now = unix_now();
        let terms = Terms {
            kind: PromiseKind::Retrieval,
            client: self.me,
            provider: holder,
            chunks,
            bytes,
            price,
            start: now,
            expiry: now + RETRIEVAL_SECS,
            audit: AuditTerms { interval: 0, max_range: 0 },
            nonce: rand_nonce(),
            renews: None,
        };
        let answer = self.net.request(peer, Request::Bid(self.signer.sign(terms.clone()))).await;
        let p = match answer {
            Ok(Response::Promise(p)) => *p,
            Ok(Response::Refused(r)) => {
                return Err(if r.why == Refusal::NotFound {
                    Miss::Broke { why: format!("refused to serve what it holds for us: {}", r.message), storage: true }
                } else {
                    Miss::Skip(format!("{peer} refused a retrieval bid: {}", r.message))
                });
            }
            Ok(Response::Counter(c)) => {
                return Err(Miss::Skip(format!("{peer} countered a retrieval bid at {}", credits(c.price))));
            }
            Ok(other) => return Err(Miss::Skip(format!("{peer} answered a retrieval bid with {other:?}"))),
            Err(e) => return Err(Miss::Skip(format!("{peer}: {e}"))),
        };
        let pid = self.take_promise(&quote, p, &terms).ok_or_else(|| Miss::Skip(format!("{peer}: bad promise")))?;
        tracing::debug!(promise = %hex(&pid), %peer, chunks = terms.chunks.len(), "retrieval promise made");
        let mut covering = lock(&self.retrievals.covering);
        for c in &terms.chunks {
            covering.insert((holder, ChunkId(*c)), pid);
        }
        Ok(pid)
    }

    fn live_retrieval(&self, holder: NodeKey, id: ChunkId) -> Option<[u8; 32]> {
        let pid = *lock(&self.retrievals.covering).get(&(holder, id))?;
        let held = lock(&self.held);
        let h = held.get(&pid)?;
        let live = h.state == State::Active && h.promise.terms.expiry > unix_now() + RETRIEVAL_MARGIN_SECS;
        live.then_some(pid)
    }

    /// What a retrieval promise earned: the bytes fetched under it.
    pub(super) fn retrieval_earned(&self, h: &Held) -> u64 {
        let got = lock(&self.retrievals.got).get(&h.id()).copied().unwrap_or(0);
        retrieval_cost(got.min(h.promise.terms.bytes), h.promise.terms.price)
    }

    /// Keeps the bytes fetched under each retrieval promise (at payment time).
    pub(super) async fn save_retrieved(&self) {
        let got: Vec<([u8; 32], u64)> = lock(&self.retrievals.got).iter().map(|(k, v)| (*k, *v)).collect();
        let _ = self
            .on_store(move |s| {
                for (pid, n) in got {
                    s.market_put(&[GOT_PREFIX, &pid].concat(), &n.to_be_bytes(), false)?;
                }
                Ok(())
            })
            .await;
    }

    /// Reads back what [`Agent::save_retrieved`] kept (at start).
    pub(super) fn load_retrieved(store: &crate::store::Store) -> HashMap<[u8; 32], u64> {
        let mut out = HashMap::new();
        for (k, v) in store.market_scan(GOT_PREFIX).unwrap_or_default() {
            if let (Ok(pid), Ok(n)) = (<[u8; 32]>::try_from(&k[GOT_PREFIX.len()..]), <[u8; 8]>::try_from(&v[..])) {
                out.insert(pid, u64::from_be_bytes(n));
            }
        }
        out
    }
}

/// A get, asked again a few times while the provider answers busy (it is
/// serving uploads): shared by fetches and scrub.
pub(super) async fn get_retrying(net: &NetHandle, peer: PeerId, get: GetChunk) -> Result<Response, NetError> {
    let mut answer = net.request(peer, Request::Get(get.clone())).await;
    for wait_ms in [100, 300, 1000, 3000] {
        match &answer {
            Ok(Response::Refused(r)) if r.why == Refusal::Busy => {
                tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                answer = net.request(peer, Request::Get(get.clone())).await;
            }
            _ => break,
        }
    }
    answer
}

impl Retrievals {
    /// The state after a restart: the bytes fetched so far and the live
    /// retrieval promises' chunks.
    pub(super) fn new(got: HashMap<[u8; 32], u64>, held: &HashMap<[u8; 32], Held>) -> Retrievals {
        let now = unix_now();
        let mut covering = HashMap::new();
        for (pid, h) in held {
            if !h.is_storage() && h.state == State::Active && h.promise.terms.expiry > now {
                for c in &h.promise.terms.chunks {
                    covering.insert((h.provider(), ChunkId(*c)), *pid);
                }
            }
        }
        Retrievals { covering: Mutex::new(covering), got: Mutex::new(got), ..Retrievals::default() }
    }
}

impl Held {
    pub(super) fn is_storage(&self) -> bool {
        self.promise.terms.kind == PromiseKind::Storage
    }
}
