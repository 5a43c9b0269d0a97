//! The provider's side of the market: its ask, the answer to a bid
//! (accept, counter or refuse), cheques, and the sweep that frees the space
//! of expired promises.

use super::book::{Sold, SoldRecord};
use super::{Provider, internal, pricing};
use crate::chunk::{ChunkId, hex};
use crate::codec;
use crate::net::proto::Counter;
use crate::net::{Refusal, Response};
use crate::promise::{
    Ask, Bid, CLOCK_SKEW_SECS, Cheque, ChequeAck, NodeKey, Promise, PromiseKind, STATEMENT_V1, Signed, unix_now,
};
use libp2p::Multiaddr;

/// How long an ask is good for: a provider honours its signed price until
/// then, even if its price has since risen.
pub const ASK_TTL_SECS: u64 = 120;
/// How long a client may owe for a promise before its bids are refused.
pub const PAYMENT_GRACE_SECS: u64 = 24 * 3600;
/// Most unexpired asks remembered (asks go out every few seconds).
const MAX_HONOURED: usize = 256;
const NONCE_PREFIX: &[u8] = b"nonce/";
const CHEQUE_PREFIX: &[u8] = b"cheque/";
/// Largest stored cheque accepted back from disk.
const MAX_CHEQUE: usize = 1024;

fn nonce_key(client: &NodeKey, nonce: u64) -> Vec<u8> {
    [NONCE_PREFIX, &client.0, &nonce.to_be_bytes()].concat()
}

fn cheque_key(client: &NodeKey) -> Vec<u8> {
    [CHEQUE_PREFIX, &client.0].concat()
}

impl Provider {
    pub(super) fn current_price(&self) -> u64 {
        let committed = self.book().committed();
        let u = committed as f64 / self.terms.capacity.max(1) as f64;
        let d = crate::lock(&self.demand).at(self.clock());
        pricing::price(self.terms.price_per_gib_month, u, d)
    }

    fn clock(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The ask to publish now, reachable at `addrs`.
    pub fn make_ask(&self, addrs: &[Multiaddr]) -> Signed<Ask> {
        let now = unix_now();
        let price = self.current_price();
        let free = if self.faults.stale_ask {
            // Test builds: the room this provider had before it sold any.
            self.terms.capacity
        } else {
            self.terms.capacity.saturating_sub(self.book().committed())
        };
        let ask = Ask {
            provider: self.me,
            price_per_gib_month: price,
            price_per_gib_retrieval: self.terms.price_per_gib_retrieval,
            free_bytes: free,
            min_duration: self.terms.min_duration,
            max_duration: self.terms.max_duration,
            addrs: addrs.iter().take(crate::promise::MAX_ASK_ADDRS).map(|a| codec::Bytes(a.to_vec())).collect(),
            issued: now,
            expires: now + ASK_TTL_SECS,
        };
        {
            // Every unexpired ask's price stays good until it expires.
            let mut honoured = crate::lock(&self.honoured);
            honoured.retain(|(_, until)| *until >= now);
            if honoured.len() < MAX_HONOURED {
                honoured.push((price, ask.expires));
            }
        }
        let mut signed = self.signer.sign(ask);
        if self.faults.tamper_ask {
            // Test builds: a provider that lies about its price after signing.
            signed.body.price_per_gib_month = signed.body.price_per_gib_month.saturating_sub(1).max(1) / 2;
        }
        signed
    }

    /// The lowest price this provider must take now: its current price,
    /// or a lower one it signed in an ask that has not expired.
    fn price_to_take(&self, now: u64) -> u64 {
        let current = self.current_price();
        let honoured = crate::lock(&self.honoured);
        honoured.iter().filter(|(_, until)| *until >= now).map(|(p, _)| *p).fold(current, u64::min)
    }

    pub(super) fn bid(&self, from: &NodeKey, bid: Bid) -> Response {
        let now = unix_now();
        if let Err(e) = bid.check_bid(from, &self.me) {
            return Response::refused(Refusal::Unauthorized, format!("bid refused: {e}"));
        }
        let t = &bid.body;
        let storage = t.kind == PromiseKind::Storage;
        if !storage && t.renews.is_some() {
            return Response::refused(Refusal::BadRequest, "a retrieval promise renews nothing");
        }
        if t.chunks.is_empty() || t.bytes == 0 {
            return Response::refused(Refusal::BadRequest, "a bid must name chunks and bytes");
        }
        if t.bytes > t.chunks.len() as u64 * crate::net::proto::MAX_CHUNK as u64 {
            return Response::refused(Refusal::BadRequest, "more bytes than the chunks can hold");
        }
        if t.start + CLOCK_SKEW_SECS < now || t.start > now + self.terms.max_duration {
            return Response::refused(Refusal::BadRequest, format!("start {} is too far from now ({now})", t.start));
        }
        let duration = t.duration();
        if !storage {
            if let Err(why) = self.can_serve(from, t, now) {
                return *why;
            }
        } else if duration < self.terms.min_duration || duration > self.terms.max_duration {
            return Response::refused(
                Refusal::BadRequest,
                format!(
                    "duration {duration} s outside this provider's {}..={} s",
                    self.terms.min_duration, self.terms.max_duration
                ),
            );
        }
        match self.store.market_get(&nonce_key(from, t.nonce)) {
            Ok(Some(_)) => return Response::refused(Refusal::Replayed, "this bid's nonce was already used"),
            Ok(None) => {}
            Err(e) => return internal(e),
        }
        // This bid's own demand raises the price of the next, not its own.
        let take = if storage {
            let take = self.price_to_take(now);
            crate::lock(&self.demand).add(self.clock());
            take
        } else {
            self.terms.price_per_gib_retrieval
        };
        if t.price < take {
            return Response::Counter(Counter {
                price: take,
                message: format!("bid {} below the asking price {}", t.price, take),
            });
        }
        let id = t.id();
        let mut book = self.book();
        if book.sold.contains_key(&id) {
            return Response::refused(Refusal::Replayed, "this bid is already a promise");
        }
        // A renewal takes its predecessor's place in the capacity.
        let replaces = match t.renews.and_then(|old| book.sold.get(&old).map(|s| (old, s))) {
            Some((old, s)) if s.record.promise.terms.client == *from && s.record.renewed_by.is_none() => {
                Some((old, s.record.promise.terms.bytes))
            }
            Some(_) => return Response::refused(Refusal::Unauthorized, "renews a promise not held for this client"),
            None if t.renews.is_some() => {
                return Response::refused(Refusal::NotFound, "the promise to renew is not held here");
            }
            None => None,
        };
        let committed = book.committed() - replaces.map_or(0, |r| r.1);
        if storage && committed + t.bytes > self.terms.capacity {
            return Response::refused(
                Refusal::Full,
                format!("no room: {committed} of {} bytes promised, bid for {}", self.terms.capacity, t.bytes),
            );
        }
        let owed = book.accrued_by(from, now.saturating_sub(PAYMENT_GRACE_SECS));
        let paid = self.paid_by(from);
        if owed > paid {
            return Response::refused(Refusal::Unpaid, format!("owes {} milli-credits past the grace", owed - paid));
        }
        match self.store.market_insert_new(&nonce_key(from, t.nonce), &t.expiry.to_be_bytes()) {
            Ok(true) => {}
            Ok(false) => return Response::refused(Refusal::Replayed, "this bid's nonce was already used"),
            Err(e) => return internal(e),
        }
        let promise = if self.faults.forge_promise {
            // Test builds: a provider that answers with a promise it did not sign.
            Promise::accept(&bid, &crate::promise::Signer::from_seed(&[0x5a; 32]))
        } else {
            Promise::accept(&bid, &self.signer)
        };
        let record = SoldRecord { promise: promise.clone(), renewed_by: None };
        if let Err(e) = self.store.put_promise(&id, &record.encode()) {
            return internal(e);
        }
        if let Some((old, _)) = replaces
            && let Some(s) = book.sold.get_mut(&old)
        {
            s.record.renewed_by = Some(id);
            if let Err(e) = self.store.put_promise(&old, &s.record.encode()) {
                return internal(e);
            }
        }
        let mut sold = Sold::new(record);
        // A renewal covers chunks already stored under its predecessor.
        for c in &promise.terms.chunks {
            if let Ok(Some(rec)) = self.store.chunk(&ChunkId(*c)) {
                sold.stored.insert(*c);
                sold.stored_bytes += u64::from(rec.len);
            }
        }
        book.insert(sold);
        drop(book);
        tracing::info!(client = ?from, promise = %hex(&id), chunks = promise.terms.chunks.len(), bytes = promise.terms.bytes, price = promise.terms.price, "promise made");
        self.log(crate::ledger::Event::Promise {
            id,
            client: promise.terms.client,
            provider: self.me,
            chunks: promise.terms.chunks.len() as u32,
            bytes: promise.terms.bytes,
            price_per_gib_month: promise.terms.price,
            start: promise.terms.start,
            expiry: promise.terms.expiry,
            signed: codec::Bytes(promise.encode()),
        });
        Response::Promise(Box::new(promise))
    }

    /// A retrieval bid: short, and only for chunks held here for this
    /// client (under one of its live promises) or kept voluntarily.
    fn can_serve(&self, from: &NodeKey, t: &crate::promise::Terms, now: u64) -> Result<(), Box<Response>> {
        let duration = t.duration();
        if duration == 0 || duration > self.terms.max_duration {
            return Err(Box::new(Response::refused(
                Refusal::BadRequest,
                format!("retrieval for {duration} s: at most {} s", self.terms.max_duration),
            )));
        }
        let book = self.book();
        let mut missing = 0;
        for c in &t.chunks {
            let covered = book.authorizing(from, &[0; 32], c, now).is_some() || self.holds_voluntarily(c);
            if !covered || !self.store.holds(&ChunkId(*c)).unwrap_or(false) {
                missing += 1;
            }
        }
        if missing > 0 {
            return Err(Box::new(Response::refused(
                Refusal::NotFound,
                format!("{missing} of {} chunks are not held here for this client", t.chunks.len()),
            )));
        }
        Ok(())
    }

    fn paid_by(&self, client: &NodeKey) -> u64 {
        self.last_cheque(client).map_or(0, |c| c.body.total)
    }

    fn last_cheque(&self, client: &NodeKey) -> Option<Signed<Cheque>> {
        let bytes = self.store.market_get(&cheque_key(client)).ok()??;
        codec::decode(STATEMENT_V1, &bytes, MAX_CHEQUE).ok()
    }

    pub(super) fn pay(&self, from: &NodeKey, cheque: Signed<Cheque>) -> Response {
        if let Err(e) = cheque.check_cheque(from, &self.me) {
            return Response::refused(Refusal::Unauthorized, format!("cheque refused: {e}"));
        }
        let _guard = crate::lock(&self.cheques);
        let prev = self.last_cheque(from);
        let prev_total = prev.as_ref().map_or(0, |c| c.body.total);
        if let Some(p) = &prev {
            if p.body == cheque.body {
                return self.ack(&cheque.body);
            }
            if cheque.body.seq <= p.body.seq || cheque.body.total < p.body.total {
                return Response::refused(
                    Refusal::BadRequest,
                    format!(
                        "cheque {} for {} does not supersede {} for {}",
                        cheque.body.seq, cheque.body.total, p.body.seq, p.body.total
                    ),
                );
            }
        }
        if let Err(e) = self.store.market_put(&cheque_key(from), &codec::encode(STATEMENT_V1, &cheque), true) {
            return internal(e);
        }
        let amount = cheque.body.total - prev_total;
        tracing::info!(client = ?from, amount, total = cheque.body.total, "cheque received");
        self.log(crate::ledger::Event::Payment {
            client: *from,
            provider: self.me,
            amount,
            total: cheque.body.total,
            signed: codec::Bytes(codec::encode(STATEMENT_V1, &cheque)),
        });
        self.ack(&cheque.body)
    }

    fn ack(&self, c: &Cheque) -> Response {
        Response::Paid(self.signer.sign(ChequeAck {
            client: c.client,
            provider: c.provider,
            total: c.total,
            seq: c.seq,
            at: unix_now(),
        }))
    }

    /// Ends promises past their expiry and drops the chunks no live
    /// promise covers any more. Returns the chunks dropped.
    pub fn sweep(&self, now: u64) -> usize {
        let mut dropped = 0;
        let expired = self.book().expired(now);
        for id in expired {
            let orphans = self.book().remove(&id);
            if let Err(e) = self.store.delete_promise(&id) {
                tracing::error!(cause = %e, "cannot forget an expired promise");
            }
            for c in orphans.into_iter().filter(|c| !self.holds_voluntarily(c)) {
                match self.store.unhold(&ChunkId(c)) {
                    Ok(true) => {
                        dropped += 1;
                        self.chunks.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(cause = %e, "cannot drop an expired chunk"),
                }
            }
            tracing::info!(promise = %hex(&id), "promise expired");
            self.log(crate::ledger::Event::Expired { promise: id });
        }
        // Nonces of bids whose promise would have expired cannot be
        // replayed (their start is too old): forget them.
        if let Ok(nonces) = self.store.market_scan(NONCE_PREFIX) {
            for (k, v) in nonces {
                let exp = <[u8; 8]>::try_from(&v[..]).map(u64::from_be_bytes).unwrap_or(0);
                if exp < now.saturating_sub(CLOCK_SKEW_SECS) {
                    let _ = self.store.market_delete(&k);
                }
            }
        }
        dropped
    }
}
