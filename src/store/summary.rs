//! Placement counters for `pactfs status` and the durability checks:
//! what is waiting (one pass over the `pending` queue) and how far the
//! drive's chunks are replicated (one pass over `chunks`).

use super::records;
use super::{Store, StoreError};
use crate::chunk::ChunkId;
use rocksdb::IteratorMode;
use serde::Serialize;

/// A chunk's recorded replicas: (holder key, the holder's signed receipt).
pub type Receipts = Vec<([u8; 32], Vec<u8>)>;

/// The placement queue at a glance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PendingSummary {
    /// Chunks in the queue.
    pub chunks: u64,
    /// Sealed bytes of those chunks (what still has to be uploaded once
    /// per missing replica).
    pub bytes: u64,
    /// Replicas still missing over the queued chunks: the sum of
    /// `target - replicas` (never negative).
    pub missing_replicas: u64,
}

/// Replication over every chunk in the index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplicaSummary {
    pub chunks: u64,
    /// Chunks that left the queue (reached the target when they did).
    pub placed: u64,
    /// Replicas recorded, over all chunks.
    pub replicas: u64,
    /// Chunks with fewer than `target` replicas recorded (the queued ones,
    /// and placed ones left short by a raised target).
    pub under_target: u64,
}

impl Store {
    /// One pass over the `pending` queue, looking up each chunk's record.
    /// A queue entry whose chunk left the index meanwhile is skipped.
    pub fn pending_summary(&self, target: u32) -> Result<PendingSummary, StoreError> {
        let mut s = PendingSummary::default();
        for item in self.db.iterator_cf(self.cf("pending"), IteratorMode::Start) {
            let (k, _) = item?;
            let Some(id) = records::decode_chunk_id(&k) else { continue };
            let Some(rec) = self.chunk(&id)? else { continue };
            s.chunks += 1;
            s.bytes += u64::from(rec.len);
            s.missing_replicas += u64::from(target.saturating_sub(u32::from(rec.placement.replicas)));
        }
        Ok(s)
    }

    /// One pass over the chunk index.
    pub fn replica_summary(&self, target: u32) -> Result<ReplicaSummary, StoreError> {
        let mut s = ReplicaSummary::default();
        for item in self.db.iterator_cf(self.cf("chunks"), IteratorMode::Start) {
            let (_, v) = item?;
            let rec = records::decode_chunk(&v).map_err(|e| StoreError::corrupt("chunk record", e))?;
            s.chunks += 1;
            s.replicas += u64::from(rec.placement.replicas);
            if !rec.placement.pending {
                s.placed += 1;
            }
            if u32::from(rec.placement.replicas) < target {
                s.under_target += 1;
            }
        }
        Ok(s)
    }

    /// Every chunk id in the placement queue.
    pub fn all_pending(&self) -> Result<Vec<ChunkId>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf("pending"), IteratorMode::Start) {
            let (k, _) = item?;
            if let Some(id) = records::decode_chunk_id(&k) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Every recorded replica of `id`: (holder key, the holder's receipt),
    /// in one pass over the chunk's `replicas` entries.
    pub fn replica_receipts(&self, id: &ChunkId) -> Result<Receipts, StoreError> {
        let mut out = Vec::new();
        for item in self.prefix_iter("replicas", &id.0) {
            let (k, v) = item?;
            if let Ok(holder) = <[u8; 32]>::try_from(&k[32..]) {
                out.push((holder, v.to_vec()));
            }
        }
        Ok(out)
    }

    /// Whether `id` still waits for placement: `Some(true)` if queued,
    /// `Some(false)` if placed, `None` if no file uses it any more.
    pub fn is_pending(&self, id: &ChunkId) -> Result<Option<bool>, StoreError> {
        Ok(self.chunk(id)?.map(|rec| rec.placement.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(store: &Store, seed: u64, len: usize) -> ChunkId {
        let body = crate::test_data::data(len, seed);
        let id = ChunkId::of(&body);
        let mut txn = store.begin();
        txn.add_chunk_at(&id, &body, None).unwrap();
        txn.commit(false).unwrap();
        id
    }

    #[test]
    fn summaries_follow_replicas_and_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 0).unwrap();
        assert_eq!(store.pending_summary(3).unwrap(), PendingSummary::default());
        assert_eq!(store.replica_summary(3).unwrap(), ReplicaSummary::default());
        // An inline body (below INLINE_MAX) and a packed one: both count by
        // their sealed length.
        let a = add(&store, 1, 1_000);
        let b = add(&store, 2, 100_000);
        let p = store.pending_summary(3).unwrap();
        assert_eq!(p, PendingSummary { chunks: 2, bytes: 101_000, missing_replicas: 6 });
        assert_eq!(store.all_pending().unwrap().len(), 2);

        store.record_replica(&a, &[1; 32], b"r", 3).unwrap();
        store.record_replica(&a, &[2; 32], b"r", 3).unwrap();
        assert_eq!(store.pending_summary(3).unwrap().missing_replicas, 4);
        store.record_replica(&a, &[3; 32], b"r", 3).unwrap();
        // `a` reached the target and left the queue.
        assert_eq!(
            store.pending_summary(3).unwrap(),
            PendingSummary { chunks: 1, bytes: 100_000, missing_replicas: 3 }
        );
        assert_eq!(store.is_pending(&a).unwrap(), Some(false));
        assert_eq!(store.is_pending(&b).unwrap(), Some(true));
        let receipts = store.replica_receipts(&a).unwrap();
        assert_eq!(receipts.iter().map(|(h, _)| h[0]).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(store.replica_receipts(&b).unwrap().is_empty());
        let r = store.replica_summary(3).unwrap();
        assert_eq!(r, ReplicaSummary { chunks: 2, placed: 1, replicas: 3, under_target: 1 });
        // A raised target leaves the placed chunk short, not queued.
        assert_eq!(store.replica_summary(4).unwrap().under_target, 2);

        // A chunk no file uses any more leaves both counts.
        let mut txn = store.begin();
        txn.ref_chunk(&b, -1);
        txn.commit(false).unwrap();
        assert_eq!(store.pending_summary(3).unwrap(), PendingSummary::default());
        assert_eq!(store.is_pending(&b).unwrap(), None);
        assert_eq!(store.replica_summary(3).unwrap().chunks, 1);
    }
}
