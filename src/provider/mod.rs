//! The provider: sells capacity by storing other nodes' sealed chunks in
//! its own store and serving them back, under promises it signed.
//!
//! It trusts nothing a client says: a bid must be signed by the peer that
//! sends it and carry a fresh nonce; an upload or a fetch must name a live
//! promise of that peer covering the chunk; every chunk must hash to its
//! id; promised bytes never exceed the capacity; only chunks it holds are
//! served. It never needs a key to do any of this: chunk ids are hashes of
//! the sealed bytes.

mod book;
mod hot;
mod market;
pub mod pricing;
mod roots;

pub use hot::{HOT_AFTER, VoluntaryStats};
pub use market::{ASK_TTL_SECS, PAYMENT_GRACE_SECS};

use crate::chunk::ChunkId;
use crate::ledger::{Event, Ledger};
use crate::net::proto::{AuditChunk, GetChunk, HasChunks, PutChunk};
use crate::net::{Refusal, Request, Response, Service};
use crate::promise::{Ask, NodeKey, Receipt, Signed, Signer, unix_now};
use crate::store::{Store, StoreError};
use book::{Book, Sold, SoldRecord};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// What a provider sells, from `[provider]` (prices in milli-credits).
#[derive(Clone, Debug)]
pub struct ProviderTerms {
    pub capacity: u64,
    /// Floor of the storage price, per GiB-month.
    pub price_per_gib_month: u64,
    pub price_per_gib_retrieval: u64,
    pub min_duration: u64,
    pub max_duration: u64,
    /// Room for voluntary copies of hot chunks (0: none kept).
    pub voluntary_capacity: u64,
}

/// Misbehaviour switched on by tests (only a `fault-injection` build lets
/// the node set these).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Publish asks whose price was changed after signing.
    pub tamper_ask: bool,
    /// Answer bids with a promise signed by a key not its own.
    pub forge_promise: bool,
    /// Publish asks that offer the whole capacity as free, as an ask signed
    /// before the room was sold would: a client that trusts it bids for
    /// room that is gone.
    pub stale_ask: bool,
    /// Answer audits with a proof made up rather than computed from the
    /// bytes held (the siblings of another range).
    pub forge_proof: bool,
}

/// What `pactfs node info` shows of a provider.
#[derive(Clone, Debug, Serialize)]
pub struct ProviderStats {
    pub chunks: u64,
    pub bytes: u64,
    pub capacity: u64,
    /// Bytes promised under live promises.
    pub committed: u64,
    pub promises: usize,
    /// The current storage price, milli-credits per GiB-month.
    pub price_per_gib_month: u64,
    /// Hot chunks served here and copies kept voluntarily.
    pub voluntary: VoluntaryStats,
}

pub struct Provider {
    store: Arc<Store>,
    signer: Signer,
    me: NodeKey,
    terms: ProviderTerms,
    faults: Faults,
    ledger: Option<Arc<Ledger>>,
    book: Mutex<Book>,
    demand: Mutex<pricing::Demand>,
    /// Price and expiry of each unexpired ask: honoured even if the price
    /// has risen since.
    honoured: Mutex<Vec<(u64, u64)>>,
    /// Serialises cheques so that totals only grow.
    cheques: Mutex<()>,
    started: Instant,
    chunks: AtomicU64,
    hot: Mutex<hot::Hot>,
}

impl Provider {
    /// A provider selling `terms.capacity` bytes of `store` (its own store,
    /// not a drive's). Loads the promises it sold.
    pub fn new(
        store: Arc<Store>,
        signer: Signer,
        terms: ProviderTerms,
        faults: Faults,
        ledger: Option<Arc<Ledger>>,
    ) -> Result<Provider, StoreError> {
        let chunks = store.chunk_records()?.len() as u64;
        // Each chunk goes out once per client: caching it buys nothing.
        store.set_direct_reads(true);
        let me = signer.node_key();
        let mut book = Book::default();
        for (id, bytes) in store.promises()? {
            let record = SoldRecord::decode(&bytes).map_err(|e| StoreError::Corrupt {
                what: format!("promise record {}", crate::chunk::hex(&id)),
                detail: e.to_string(),
            })?;
            let mut sold = Sold::new(record);
            for c in sold.record.promise.terms.chunks.clone() {
                if let Some(rec) = store.chunk(&ChunkId(c))? {
                    sold.stored.insert(c);
                    sold.stored_bytes += u64::from(rec.len);
                }
            }
            book.insert(sold);
        }
        let hot = hot::Hot::load(&store)?;
        Ok(Provider {
            store,
            signer,
            me,
            terms,
            faults,
            ledger,
            book: Mutex::new(book),
            demand: Mutex::default(),
            honoured: Mutex::default(),
            cheques: Mutex::default(),
            started: Instant::now(),
            chunks: AtomicU64::new(chunks),
            hot: Mutex::new(hot),
        })
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        crate::lock(&self.book)
    }

    fn log(&self, event: Event) {
        if let Some(l) = &self.ledger
            && let Err(e) = l.append(event)
        {
            tracing::error!(cause = %e, "cannot append to the ledger");
        }
    }

    pub fn node_key(&self) -> NodeKey {
        self.me
    }

    pub fn stats(&self) -> ProviderStats {
        let book = self.book();
        ProviderStats {
            chunks: self.chunks.load(Ordering::Relaxed),
            bytes: self.store.used_bytes(),
            capacity: self.terms.capacity,
            committed: book.committed(),
            promises: book.sold.len(),
            price_per_gib_month: {
                drop(book);
                self.current_price()
            },
            voluntary: self.voluntary_stats(),
        }
    }

    /// The ids of every chunk held (to announce them after a restart).
    pub fn held(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        Ok(self.store.chunk_records()?.into_iter().map(|(id, _)| id.0).collect())
    }

    /// Flushes everything to disk (on shutdown).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.store.sync()
    }

    fn put(&self, from: &NodeKey, m: PutChunk) -> Response {
        let now = unix_now();
        let id = ChunkId(m.id);
        let len = m.body.len() as u64;
        let Some(promise) = self.book().storing_under(from, &m.promise, &m.id, now) else {
            return Response::refused(
                Refusal::Unauthorized,
                "the named promise is not a live one of this client covering the chunk",
            );
        };
        if !id.verifies(&m.body) {
            return Response::refused(Refusal::BadChunk, "the chunk does not hash to its id");
        }
        {
            // Reserve the bytes under the promise before the slow write, so
            // that concurrent uploads cannot together overrun it.
            let mut book = self.book();
            let Some(sold) = book.sold.get_mut(&promise) else {
                return Response::refused(Refusal::Unauthorized, "the promise ended");
            };
            if !sold.stored.contains(&m.id) {
                let limit = sold.record.promise.terms.bytes;
                if sold.stored_bytes + len > limit {
                    return Response::refused(
                        Refusal::Full,
                        format!("beyond the promise: {} of {limit} bytes stored, chunk of {len}", sold.stored_bytes),
                    );
                }
                sold.stored.insert(m.id);
                sold.stored_bytes += len;
            }
        }
        let unreserve = || {
            if let Some(sold) = self.book().sold.get_mut(&promise)
                && sold.stored.remove(&m.id)
            {
                sold.stored_bytes -= len;
            }
        };
        let answer = match self.store.hold(&id, &m.body) {
            Ok(new) => {
                if new {
                    self.chunks.fetch_add(1, Ordering::Relaxed);
                }
                self.receipt(from, &promise, &id, m.body.len())
            }
            Err(e) => {
                unreserve();
                internal(e)
            }
        };
        // Stored: the buffer reads the next chunk off the network.
        crate::bufpool::give(m.body);
        answer
    }

    fn receipt(&self, client: &NodeKey, promise: &[u8; 32], id: &ChunkId, len: usize) -> Response {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        Response::Stored(self.signer.sign(Receipt {
            promise: *promise,
            chunk: id.0,
            len,
            client: *client,
            provider: self.me,
            at: unix_now(),
        }))
    }

    fn get(&self, from: &NodeKey, m: GetChunk) -> Response {
        let promised = self.book().authorizing(from, &m.promise, &m.id, unix_now()).is_some();
        // A copy of a hot or voluntarily kept chunk needs no promise.
        let free = !promised && m.promise == [0; 32] && self.serves_freely(&m.id);
        if !promised && !free {
            return Response::refused(Refusal::Unauthorized, "no live promise of this client covers the chunk");
        }
        let id = ChunkId(m.id);
        let body = match self.store.chunk_body(&id) {
            Ok(b) => b,
            Err(StoreError::ChunkMissing(_)) => return Response::refused(Refusal::NotFound, "chunk not held here"),
            Err(e) => return internal(e),
        };
        // Not re-hashed here: the client checks every byte against the id
        // and treats bytes that rotted on this disk as a broken promise,
        // which is what a refusal would cost too; audits find rot without a
        // read. Hashing again cost a tenth of the provider's CPU on a get.
        if promised {
            self.note_served(&m.id);
        }
        match m.range {
            None => Response::Chunk(body),
            Some((offset, len)) => {
                let end = offset.checked_add(u64::from(len)).filter(|&e| e <= body.len() as u64);
                match end {
                    Some(end) => Response::Chunk(body[offset as usize..end as usize].to_vec()),
                    None => Response::refused(Refusal::BadRequest, "range past the end of the chunk"),
                }
            }
        }
    }

    /// Proves holding a byte range of a chunk, from the bytes held.
    fn audit(&self, from: &NodeKey, m: AuditChunk) -> Response {
        let Some(pid) = self.book().authorizing(from, &m.promise, &m.id, unix_now()) else {
            return Response::refused(Refusal::Unauthorized, "no live promise of this client covers the chunk");
        };
        let max = self.book().sold.get(&pid).map_or(0, |s| s.record.promise.terms.audit.max_range);
        if m.len > max.max(1024) || m.len > crate::net::proto::MAX_AUDIT_RANGE {
            return Response::refused(Refusal::BadRequest, format!("audit of {} bytes: at most {max}", m.len));
        }
        let body = match self.store.chunk_body(&ChunkId(m.id)) {
            Ok(b) => b,
            Err(StoreError::ChunkMissing(_)) => return Response::refused(Refusal::NotFound, "chunk not held here"),
            Err(e) => return internal(e),
        };
        let (offset, len) = (m.offset, u64::from(m.len));
        let Some(mut siblings) = crate::chunk::proof::prove(&body, offset, len) else {
            return Response::refused(Refusal::BadRequest, "the range is not a node of the chunk's tree");
        };
        let mut bytes = body[offset as usize..(offset + len) as usize].to_vec();
        if self.faults.forge_proof {
            // Test builds: siblings that belong to no such tree; a range
            // that is the whole tree (a small chunk) has no siblings, so
            // the forger makes up its bytes instead.
            for s in &mut siblings {
                *s = *blake3::hash(s).as_bytes();
            }
            if siblings.is_empty()
                && let Some(b) = bytes.first_mut()
            {
                *b ^= 0x01;
            }
        }
        Response::Audited(crate::net::proto::Audited { bytes, siblings })
    }

    fn has(&self, m: HasChunks) -> Response {
        let mut out = Vec::with_capacity(m.ids.len());
        for id in m.ids {
            match self.store.holds(&ChunkId(id)) {
                Ok(h) => out.push(h),
                Err(e) => return internal(e),
            }
        }
        Response::Has(out)
    }
}

impl Service for Provider {
    fn serve(&self, from: &NodeKey, req: Request) -> Response {
        match req {
            Request::Put(m) => self.put(from, m),
            Request::Get(m) => self.get(from, m),
            Request::Has(m) => self.has(m),
            Request::Ask => Response::Ask(self.make_ask(&[])),
            Request::Bid(b) => self.bid(from, b),
            Request::Pay(c) => self.pay(from, c),
            Request::PutRoot(r) => self.put_root(from, r),
            Request::GetRoot(c) => self.get_root(&c),
            Request::Audit(a) => self.audit(from, a),
        }
    }

    fn ask(&self, addrs: &[libp2p::Multiaddr]) -> Option<Signed<Ask>> {
        Some(self.make_ask(addrs))
    }
    fn hot(&self) -> Vec<[u8; 32]> {
        self.hot_chunks()
    }
    fn offers(&self) -> Vec<[u8; 32]> {
        self.voluntary_chunks()
    }
}

fn internal(e: StoreError) -> Response {
    tracing::error!(cause = %e, "provider store failed");
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return Response::refused(Refusal::Full, "the provider's disk is full");
    }
    Response::refused(Refusal::Internal, "the provider's store failed")
}

#[cfg(test)]
mod tests;
