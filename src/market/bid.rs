//! Bids: one per provider and pass for the chunks chosen for it, within
//! the budget; the promise that comes back is checked before it counts.

use super::asks::Quote;
use super::held::Held;
use super::{Agent, AgentConfig, lock, rand_nonce};
use crate::chunk::ChunkId;
use crate::codec;
use crate::ledger::Event;
use crate::net::{Refusal, Request, Response};
use crate::promise::{
    AuditTerms, MAX_PROMISE_CHUNKS, MONTH_SECS, NodeKey, Promise, PromiseKind, Terms, credits, storage_cost, unix_now,
};
use futures::StreamExt;
use libp2p::PeerId;
use std::collections::HashMap;

use super::place::{AUDIT_RANGE, BACKOFF, BACKOFF_BROKEN};

impl Agent {
    /// Bids for every provider's group at once; returns the promise id for
    /// each (provider, chunk) that got one.
    pub(super) async fn bid_all(
        &self,
        cfg: &AgentConfig,
        groups: HashMap<NodeKey, Vec<(ChunkId, u64)>>,
        quotes: &HashMap<PeerId, Quote>,
    ) -> HashMap<(NodeKey, ChunkId), [u8; 32]> {
        let by_key: HashMap<NodeKey, &Quote> = quotes.values().map(|q| (q.key, q)).collect();
        let mut bids = Vec::new();
        for (key, chunks) in groups {
            let Some(q) = by_key.get(&key) else { continue };
            for part in chunks.chunks(MAX_PROMISE_CHUNKS) {
                bids.push(((*q).clone(), part.to_vec()));
            }
        }
        type Bought = Option<(NodeKey, Vec<ChunkId>, [u8; 32])>;
        let results: Vec<Bought> = futures::stream::iter(bids)
            .map(|(q, part)| async move {
                let pid = self.bid(cfg, &q, &part).await?;
                Some((q.key, part.iter().map(|(id, _)| *id).collect(), pid))
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let mut out = HashMap::new();
        let mut open = lock(&self.open);
        for (key, ids, pid) in results.into_iter().flatten() {
            for id in ids {
                out.insert((key, id), pid);
                open.entry(id).or_default().push((key, pid));
            }
        }
        out
    }

    /// Bids for `chunks` at `q`'s provider, within the budget; takes one
    /// counter-offer if it fits. Returns the promise id.
    async fn bid(&self, cfg: &AgentConfig, q: &Quote, chunks: &[(ChunkId, u64)]) -> Option<[u8; 32]> {
        let bytes: u64 = chunks.iter().map(|(_, l)| *l).sum();
        let ask = &q.ask.body;
        let duration = cfg.promise_duration.clamp(ask.min_duration, ask.max_duration.max(ask.min_duration));
        let mut price = ask.price_per_gib_month;
        for attempt in 0..2 {
            if price > cfg.max_price_per_gib_month {
                let why = format!("asks {} above the maximum price", credits(price));
                *lock(&self.bid_blocked) = Some(format!("market too dear: a provider {why}"));
                self.back_off(q.peer, BACKOFF, why);
                return None;
            }
            let monthly = storage_cost(bytes, price, MONTH_SECS);
            let now = unix_now();
            // Held until the answer is in (a promise won by then counts as
            // committed): the bids in flight together stay within the budget.
            let committed = || super::committed(&lock(&self.held), now);
            let _reserved = match self.in_flight.reserve(committed, monthly, cfg.credits_per_month) {
                Ok(r) => r,
                Err(over) => {
                    // One message for every bid the budget stops (no sizes
                    // in it): logged on each change and shown by `status`.
                    tracing::debug!(peer = %q.peer, bytes, monthly = %credits(monthly), "bid over the budget");
                    *lock(&self.bid_blocked) = Some(format!(
                        "budget: active promises and bids cost {} of {} credits/month and the chunks waiting need \
                         more (raise [budget] credits_per_month)",
                        credits(over.committed + over.in_flight),
                        credits(cfg.credits_per_month),
                    ));
                    return None;
                }
            };
            if attempt == 0 {
                // Only an ask acted on is worth an entry.
                self.log(Event::AskTaken {
                    provider: q.key,
                    ask: q.ask.hash(),
                    price_per_gib_month: ask.price_per_gib_month,
                    price_per_gib_retrieval: ask.price_per_gib_retrieval,
                });
            }
            let terms = Terms {
                kind: PromiseKind::Storage,
                client: self.me,
                provider: q.key,
                chunks: chunks.iter().map(|(id, _)| id.0).collect(),
                bytes,
                price,
                start: now,
                expiry: now + duration,
                audit: AuditTerms { interval: cfg.audit_interval, max_range: AUDIT_RANGE },
                nonce: rand_nonce(),
                renews: None,
            };
            let pid = terms.id();
            self.log(Event::Bid {
                provider: q.key,
                promise: pid,
                chunks: chunks.len() as u32,
                bytes,
                price_per_gib_month: price,
                duration_secs: duration,
            });
            let bid = self.signer.sign(terms.clone());
            match self.net.request(q.peer, Request::Bid(bid)).await {
                Ok(Response::Promise(p)) => return self.take_promise(q, *p, &terms),
                Ok(Response::Counter(c)) => {
                    tracing::debug!(peer = %q.peer, price = c.price, "bid countered");
                    self.log(Event::Countered { provider: q.key, promise: pid, price_per_gib_month: c.price });
                    price = c.price;
                }
                Ok(Response::Refused(r)) => {
                    tracing::info!(peer = %q.peer, why = ?r.why, cause = %r.message, "bid refused");
                    self.log(Event::BidRefused { provider: q.key, promise: pid, reason: r.message.clone() });
                    let wait = if r.why == Refusal::Full { BACKOFF_BROKEN } else { BACKOFF };
                    self.back_off(q.peer, wait, format!("refused a bid: {}", r.message));
                    return None;
                }
                Ok(other) => {
                    self.back_off(q.peer, BACKOFF, format!("answered a bid with {other:?}"));
                    return None;
                }
                Err(e) => {
                    self.back_off(q.peer, BACKOFF, format!("{}{e}", super::place::UNREACHABLE));
                    return None;
                }
            }
        }
        None
    }

    /// Checks a promise a provider returned for our `terms` and keeps it.
    pub(super) fn take_promise(&self, q: &Quote, p: Promise, terms: &Terms) -> Option<[u8; 32]> {
        if p.terms != *terms {
            self.refuse_promise(q, "the promise's terms differ from the bid");
            return None;
        }
        if let Err(e) = p.verify() {
            self.refuse_promise(q, &format!("the promise's signatures do not verify: {e}"));
            return None;
        }
        let pid = p.id();
        self.log(Event::Promise {
            id: pid,
            client: self.me,
            provider: q.key,
            chunks: p.terms.chunks.len() as u32,
            bytes: p.terms.bytes,
            price_per_gib_month: p.terms.price,
            start: p.terms.start,
            expiry: p.terms.expiry,
            signed: codec::Bytes(p.encode()),
        });
        let held = Held::new(p);
        self.save(&held);
        lock(&self.held).insert(pid, held);
        Some(pid)
    }

    fn refuse_promise(&self, q: &Quote, why: &str) {
        tracing::warn!(peer = %q.peer, cause = %why, "refused a promise");
        self.update_reputation(q.key, false);
        self.back_off(q.peer, BACKOFF_BROKEN, why.to_string());
    }
}
