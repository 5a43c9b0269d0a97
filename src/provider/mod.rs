//! The provider: sells capacity by storing other nodes' sealed chunks in
//! its own store and serving them back.
//!
//! It trusts nothing a client says: every chunk must hash to its id, an
//! upload needs a capability signed for this node by the uploading peer,
//! the capacity is a hard limit, and only chunks it holds are served. It
//! never needs a key to do any of this: chunk ids are hashes of the sealed
//! bytes.

use crate::chunk::ChunkId;
use crate::net::proto::{GetChunk, HasChunks, PutChunk};
use crate::net::{Refusal, Request, Response, Service};
use crate::promise::{NodeKey, Receipt, Signer, unix_now};
use crate::store::{Store, StoreError};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What `pactfs node info` shows of a provider.
#[derive(Clone, Debug, Serialize)]
pub struct ProviderStats {
    pub chunks: u64,
    pub bytes: u64,
    pub capacity: u64,
}

pub struct Provider {
    store: Arc<Store>,
    signer: Signer,
    me: NodeKey,
    capacity: u64,
    /// Bytes promised to uploads in progress, so that concurrent uploads
    /// cannot together overrun the capacity.
    reserved: AtomicU64,
    chunks: AtomicU64,
}

impl Provider {
    /// A provider selling `capacity` bytes of `store` (its own store, not
    /// a drive's).
    pub fn new(store: Arc<Store>, signer: Signer, capacity: u64) -> Result<Provider, StoreError> {
        let chunks = store.chunk_records()?.len() as u64;
        let me = signer.node_key();
        Ok(Provider { store, signer, me, capacity, reserved: AtomicU64::new(0), chunks: AtomicU64::new(chunks) })
    }

    pub fn stats(&self) -> ProviderStats {
        ProviderStats {
            chunks: self.chunks.load(Ordering::Relaxed),
            bytes: self.store.used_bytes(),
            capacity: self.capacity,
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
        if let Err(e) = m.token.check(from, &self.me, unix_now()) {
            return Response::refused(Refusal::Unauthorized, format!("upload capability refused: {e}"));
        }
        let id = ChunkId(m.id);
        if !id.verifies(&m.body) {
            return Response::refused(Refusal::BadChunk, "the chunk does not hash to its id");
        }
        let len = m.body.len() as u64;
        match self.store.holds(&id) {
            Ok(true) => return self.receipt(from, &id, m.body.len()),
            Ok(false) => {}
            Err(e) => return internal(e),
        }
        let reserved = self.reserved.fetch_add(len, Ordering::SeqCst) + len;
        let _release = Release(&self.reserved, len);
        let used = self.store.used_bytes();
        if used + reserved > self.capacity {
            return Response::refused(
                Refusal::Full,
                format!("no room: {} of {} bytes used, chunk of {len} bytes", used, self.capacity),
            );
        }
        match self.store.hold(&id, &m.body) {
            Ok(new) => {
                if new {
                    self.chunks.fetch_add(1, Ordering::Relaxed);
                }
                self.receipt(from, &id, m.body.len())
            }
            Err(e) => internal(e),
        }
    }

    fn receipt(&self, client: &NodeKey, id: &ChunkId, len: usize) -> Response {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        Response::Stored(self.signer.sign(Receipt {
            chunk: id.0,
            len,
            client: *client,
            provider: self.me,
            at: unix_now(),
        }))
    }

    fn get(&self, m: GetChunk) -> Response {
        let id = ChunkId(m.id);
        let body = match self.store.chunk_body(&id) {
            Ok(b) => b,
            Err(StoreError::ChunkMissing(_)) => return Response::refused(Refusal::NotFound, "chunk not held here"),
            Err(e) => return internal(e),
        };
        // Never serve bytes that rotted on this disk as if they were good.
        if !id.verifies(&body) {
            tracing::error!(chunk = %id.fmt_short(), "held chunk fails verification");
            return Response::refused(Refusal::Internal, "the stored copy is damaged");
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
            Request::Get(m) => self.get(m),
            Request::Has(m) => self.has(m),
        }
    }
}

fn internal(e: StoreError) -> Response {
    tracing::error!(cause = %e, "provider store failed");
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return Response::refused(Refusal::Full, "the provider's disk is full");
    }
    Response::refused(Refusal::Internal, "the provider's store failed")
}

struct Release<'a>(&'a AtomicU64, u64);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests;
