//! Reading chunks for files: the shared plaintext cache, background
//! prefetch, local bodies (authenticated by their AES-GCM tag) and
//! fetches from holders (verified against the id first), with a rotten
//! local copy fetched again.

use super::{Drive, FsError, Remote};
use crate::chunk::{self, ChunkError, ManifestEntry};
use crate::store::{Evicted, Store, StoreError};
use std::sync::Arc;

/// Reads, verifies and decrypts one chunk: from the store, or from the
/// network if its body is not local (then kept locally again). A local
/// copy that rotted is dropped and fetched again when a holder has the
/// chunk; the only copy of a chunk is never dropped.
fn load_chunk(store: &Store, remote: Option<&dyn Remote>, e: &ManifestEntry) -> Result<Vec<u8>, FsError> {
    let opened = match store.chunk_body(&e.id) {
        Err(StoreError::NotLocal(_)) => return fetch_chunk(store, remote, e),
        other => chunk::open_local(&e.id, &e.key, other?),
    };
    let err = match opened {
        Ok(plain) => return Ok(plain),
        Err(err) => err,
    };
    // Rot, or a wrong key in the manifest? The stored bytes against the id
    // tell (the failed decryption scrambled its buffer).
    let rotten = store.chunk_body(&e.id).is_ok_and(|body| !e.id.verifies(&body));
    if rotten && let Some(remote) = remote {
        match store.drop_rotten(&e.id) {
            Ok(Evicted::Freed(_)) => {
                tracing::warn!(chunk = %e.id.fmt_short(), "the local copy is corrupt: fetching the chunk from a holder");
                return fetch_chunk(store, Some(remote), e);
            }
            Ok(_) => tracing::error!(chunk = %e.id.fmt_short(), "the local copy is corrupt and the only one"),
            Err(why) => tracing::error!(chunk = %e.id.fmt_short(), cause = %why, "cannot drop a corrupt local copy"),
        }
    }
    let err = if rotten { ChunkError::IdMismatch { id: e.id } } else { err };
    tracing::error!(chunk = %e.id.fmt_short(), cause = %err, "chunk failed verification");
    Err(FsError::Chunk(err))
}

/// Fetches a chunk that is not local from a holder, verified against its
/// id before anything else, keeps a copy and decrypts it.
fn fetch_chunk(store: &Store, remote: Option<&dyn Remote>, e: &ManifestEntry) -> Result<Vec<u8>, FsError> {
    let remote = remote.ok_or_else(|| FsError::Unavailable("no network to fetch it from".into()))?;
    let body = remote.fetch(&e.id).map_err(|why| {
        tracing::warn!(chunk = %e.id.fmt_short(), cause = %why, "chunk unavailable");
        FsError::Unavailable(why)
    })?;
    if let Err(err) = store.restore_body(&body) {
        tracing::warn!(chunk = %e.id.fmt_short(), cause = %err, "cannot keep a fetched chunk");
    }
    chunk::open_verified(&e.key, body).map_err(|err| {
        tracing::error!(chunk = %e.id.fmt_short(), cause = %err, "chunk failed verification");
        FsError::Chunk(err)
    })
}

impl Drive {
    /// The plaintext of one chunk of a file: cached, or read, verified and
    /// decrypted.
    pub(super) fn plaintext(&self, e: &ManifestEntry) -> Result<Arc<Vec<u8>>, FsError> {
        if let Some(plain) = self.cache.get(&e.id) {
            return Ok(plain);
        }
        if let Some(plain) = self.cache.wait_loading(&e.id) {
            return Ok(plain);
        }
        let plain = Arc::new(load_chunk(&self.store, self.remote().as_deref(), e)?);
        self.cache.insert(e.id, plain.clone());
        Ok(plain)
    }

    /// Loads chunks into the cache in the background (best effort: a
    /// failure here surfaces when the reader gets to the chunk).
    pub(super) fn prefetch(&self, entries: &[ManifestEntry]) {
        for e in entries {
            if !self.cache.begin_prefetch(&e.id) {
                continue;
            }
            let (store, e, remote) = (self.store.clone(), *e, self.remote());
            let claim = Claim(self.cache.clone(), e.id);
            // Dropping the claim, however the load ends, frees the readers
            // waiting for it.
            let _ = self.loaders.run(Box::new(move || {
                if let Ok(plain) = load_chunk(&store, remote.as_deref(), &e) {
                    claim.0.insert(e.id, Arc::new(plain));
                }
                drop(claim);
            }));
        }
    }
}

/// A background load's claim on a chunk (`PlainCache::begin_prefetch`),
/// given up when dropped.
struct Claim(Arc<super::cache::PlainCache>, crate::chunk::ChunkId);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.end_prefetch(&self.1);
    }
}
