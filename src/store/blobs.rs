//! Kept blobs: chunks held for their own sake, not as part of a file.
//!
//! A sealed ledger range must be stored "like any data": encrypted as a
//! chunk, placed on providers by the agent, and never collected. Chunks
//! live as long as something references them, and until now only manifest
//! entries did. The smallest honest addition is a second kind of
//! reference: a record in the `blobs` column family (chunk id ->
//! [`BlobRecord`]) that holds one reference, counted by `fsck` like a
//! manifest entry. Rejected: an internal file in the drive's namespace
//! (the user could see and delete it; FUSE would have to hide it), and a
//! bare extra reference count with no record (fsck would "repair" it
//! away, and the chunk key needed to read the blob back would be lost).
//!
//! New blobs join the placement queue like new file chunks.

use super::records::{self, BlobRecord};
use super::{Store, StoreError};
use crate::chunk::ChunkId;
use rocksdb::IteratorMode;

impl Store {
    /// Keeps `sealed` (the chunk `id`) for good: stored, referenced by its
    /// `blobs` record, queued for placement, and on disk when this
    /// returns. Returns false if the blob was already kept.
    pub fn keep_blob(&self, id: &ChunkId, sealed: &[u8], record: &BlobRecord) -> Result<bool, StoreError> {
        if self.db.get_pinned_cf(self.cf("blobs"), id.0)?.is_some() {
            return Ok(false);
        }
        // A large body is copied into the pack outside the writer lock.
        let at = self.pre_append(id, sealed)?;
        let mut txn = self.begin();
        if self.db.get_pinned_cf(self.cf("blobs"), id.0)?.is_some() {
            return Ok(false);
        }
        txn.keep_blob(id, sealed, at, record)?;
        txn.commit(true)?;
        Ok(true)
    }

    /// Lets a kept blob go (an old snapshot part, once a newer root's
    /// parts are placed): its chunk is released like a deleted file's.
    /// Returns false if it was not kept.
    pub fn release_blob(&self, id: &ChunkId) -> Result<bool, StoreError> {
        let mut txn = self.begin();
        if self.db.get_pinned_cf(self.cf("blobs"), id.0)?.is_none() {
            return Ok(false);
        }
        txn.release_blob(id);
        txn.commit(true)?;
        Ok(true)
    }

    /// Every kept blob, in id order.
    pub fn blobs(&self) -> Result<Vec<(ChunkId, BlobRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf("blobs"), IteratorMode::Start) {
            let (k, v) = item?;
            let Some(id) = records::decode_chunk_id(&k) else { continue };
            let rec = records::decode_blob(&v).map_err(|e| StoreError::corrupt("blob record", e))?;
            out.push((id, rec));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{self, UserSecret};

    #[test]
    fn a_kept_blob_is_pending_referenced_and_survives_fsck() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 0).unwrap();
        let secret = UserSecret::from_bytes([3; 32]);
        // One blob inline in `bodies`, one in a pack.
        for (n, size) in [(1u64, 1000usize), (2, 300_000)] {
            let plain = crate::test_data::data(size, n);
            let (key, id, sealed) = chunk::seal(&secret, &plain);
            let rec = BlobRecord { what: format!("ledger test {n}"), key, len: plain.len() as u32 };
            assert!(store.keep_blob(&id, &sealed, &rec).unwrap());
            assert!(!store.keep_blob(&id, &sealed, &rec).unwrap(), "kept once");
            assert_eq!(store.chunk(&id).unwrap().unwrap().refs, 1);
            assert!(store.pending_ids(None, 10).unwrap().contains(&id), "queued for placement");
            let back = chunk::open(&id, &rec.key, store.chunk_body(&id).unwrap()).unwrap();
            assert_eq!(back, plain, "readable with the kept key");
        }
        assert_eq!(store.blobs().unwrap().len(), 2);
        let report = store.fsck(false).unwrap();
        assert!(report.clean(), "{:?}", report.findings);
        assert_eq!(report.chunks_verified, 2);
        // Repair finds nothing to collect.
        assert!(store.fsck(true).unwrap().clean());
        assert_eq!(store.blobs().unwrap().len(), 2);
        assert_eq!(store.stats().unwrap().chunks, 2);
    }
}
