//! Renewals and expiry. Inside `renew_window` before a promise expires,
//! the chunks it covers that a file still references are bid for again at
//! the same provider, as a renewal that starts when the old promise ends.
//! A promise nobody needs is let expire. At expiry, the replicas it held
//! are forgotten and their chunks, if still referenced, queue for
//! placement again.

use super::held::{Held, State};
use super::{Agent, hex, lock, rand_nonce};
use crate::chunk::ChunkId;
use crate::ledger::Event;
use crate::net::{Request, Response, peer_id_of};
use crate::promise::{Terms, unix_now};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// A renewal that failed (the provider unreachable, refusing, too dear)
/// is tried again after this long, or after a quarter of the renewal
/// window when that is shorter, so a short window still gets retries.
const RENEW_RETRY: Duration = Duration::from_secs(30);
/// A promise left to lapse is not looked at again before it expires.
const LAPSE_FOREVER: Duration = Duration::from_secs(100 * 365 * 86400);

/// Why a promise due for renewal was not renewed.
enum Renewal {
    /// Nothing under it is needed any more: let it run out.
    Lapse,
    Failed(String),
}

impl From<String> for Renewal {
    fn from(e: String) -> Renewal {
        Renewal::Failed(e)
    }
}

impl From<&str> for Renewal {
    fn from(e: &str) -> Renewal {
        Renewal::Failed(e.to_string())
    }
}

impl Agent {
    pub(super) async fn renew_and_expire(&self) {
        let now = unix_now();
        let window = self.config().renew_window;
        let (expired, due): (Vec<Held>, Vec<Held>) = {
            let held = lock(&self.held);
            let active = held.values().filter(|h| h.state == State::Active);
            let expired = active.clone().filter(|h| h.promise.terms.expiry <= now).cloned().collect();
            // Retrieval promises are not renewed: a new one is made when needed.
            let due = active
                .filter(|h| h.is_storage())
                .filter(|h| h.promise.terms.expiry > now && h.promise.terms.expiry <= now + window)
                .cloned()
                .collect();
            (expired, due)
        };
        for h in expired {
            self.expire(h).await;
        }
        let due_ids: HashSet<[u8; 32]> = due.iter().map(Held::id).collect();
        // Forget promises no longer due (renewed, expired, broken).
        lock(&self.renew_later).retain(|id, _| due_ids.contains(id));
        for h in due {
            let id = h.id();
            if lock(&self.renew_later).get(&id).is_some_and(|t| *t > Instant::now()) {
                continue;
            }
            match self.renew(&h).await {
                Ok(()) => {
                    lock(&self.renew_later).remove(&id);
                }
                // Final: a chunk no file references is out of the index,
                // so nothing can make this promise needed again.
                Err(Renewal::Lapse) => {
                    tracing::info!(promise = %hex(&id), "no chunk under it is needed any more: it will lapse");
                    lock(&self.renew_later).insert(id, Instant::now() + LAPSE_FOREVER);
                }
                Err(Renewal::Failed(e)) => {
                    tracing::info!(promise = %hex(&id), cause = %e, "not renewed; will try again");
                    let retry = RENEW_RETRY.min(Duration::from_secs(window / 4)).max(Duration::from_secs(1));
                    lock(&self.renew_later).insert(id, Instant::now() + retry);
                }
            }
        }
    }

    /// The ids of `h` and of the promises it renewed, back to the first:
    /// receipts name the promise a chunk was first stored under.
    pub(super) fn lineage(&self, h: &Held) -> HashSet<[u8; 32]> {
        let held = lock(&self.held);
        let mut ids = HashSet::from([h.id()]);
        let mut cur = h.promise.terms.renews;
        while let Some(id) = cur {
            if !ids.insert(id) {
                break;
            }
            cur = held.get(&id).and_then(|p| p.promise.terms.renews);
        }
        ids
    }

    async fn expire(&self, mut h: Held) {
        let id = h.id();
        let provider = h.provider();
        let lineage = self.lineage(&h);
        let chunks = if h.is_storage() { h.promise.terms.chunks.clone() } else { Vec::new() };
        // The provider drops what no promise covers at expiry: nothing is
        // kept, even a last copy (the renewal was the time to keep it).
        let dropped = self
            .on_store(move |s| super::repair::release_replicas(s, &chunks, &provider, &lineage, false))
            .await
            .map(|r| r.dropped.len())
            .unwrap_or_else(|e| {
                tracing::error!(cause = %e, "cannot release an expired promise's replicas");
                0
            });
        h.state = State::Expired;
        self.save(&h);
        lock(&self.held).insert(id, h);
        tracing::info!(promise = %hex(&id), requeued = dropped, "promise expired");
        self.log(Event::Expired { promise: id });
    }

    async fn renew(&self, old: &Held) -> Result<(), Renewal> {
        let provider = old.provider();
        let chunks = old.promise.terms.chunks.clone();
        // Still needed: referenced by a file and still held there.
        let live: Vec<(ChunkId, u64)> = self
            .on_store(move |s| {
                let mut out = Vec::new();
                for c in chunks {
                    let c = ChunkId(c);
                    if let Some(rec) = s.chunk(&c)?
                        && rec.refs > 0
                        && s.replica_holders(&c)?.contains(&provider.0)
                    {
                        out.push((c, u64::from(rec.len)));
                    }
                }
                Ok(out)
            })
            .await?;
        if live.is_empty() {
            return Err(Renewal::Lapse);
        }
        let cfg = self.config();
        let peer = peer_id_of(&provider).ok_or("bad provider key")?;
        let quote = lock(&self.quotes).get(&peer).cloned();
        let price = quote.as_ref().map_or(old.promise.terms.price, |q| q.ask.body.price_per_gib_month);
        if price > cfg.max_price_per_gib_month {
            return Err(format!("the provider now asks {price}, above the maximum").into());
        }
        let start = old.promise.terms.expiry;
        let duration = match &quote {
            Some(q) => cfg
                .promise_duration
                .clamp(q.ask.body.min_duration, q.ask.body.max_duration.max(q.ask.body.min_duration)),
            None => old.promise.terms.duration(),
        };
        let terms = Terms {
            chunks: live.iter().map(|(c, _)| c.0).collect(),
            bytes: live.iter().map(|(_, l)| *l).sum(),
            price,
            start,
            expiry: start + duration,
            nonce: rand_nonce(),
            renews: Some(old.id()),
            ..old.promise.terms.clone()
        };
        let answer = self.net.request(peer, Request::Bid(self.signer.sign(terms.clone()))).await;
        let p = match answer {
            Ok(Response::Promise(p)) => *p,
            Ok(Response::Refused(r)) => return Err(format!("renewal refused: {}", r.message).into()),
            Ok(Response::Counter(c)) => return Err(format!("renewal countered at {}", c.price).into()),
            Ok(other) => return Err(format!("unexpected answer {other:?}").into()),
            Err(e) => return Err(e.to_string().into()),
        };
        if p.terms != terms || p.verify().is_err() {
            return Err("the renewal's promise does not verify".into());
        }
        let new_id = p.id();
        let mut new = Held::new(p);
        new.last_audit = old.last_audit;
        self.save(&new);
        {
            let mut held = lock(&self.held);
            if let Some(o) = held.get_mut(&old.id()) {
                o.state = State::Renewed;
                o.renewed_by = Some(new_id);
                let o = o.clone();
                self.save(&o);
            }
            held.insert(new_id, new);
        }
        tracing::info!(old = %hex(&old.id()), new = %hex(&new_id), "promise renewed");
        self.log(Event::Renewed { old: old.id(), new: new_id });
        Ok(())
    }
}
