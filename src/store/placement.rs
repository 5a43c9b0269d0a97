//! Where chunks live beyond this store: the placement queue and replica
//! receipts (a client), and chunks held for others (a provider).

use super::records::{self, ChunkRecord};
use super::{Store, StoreError};
use crate::chunk::ChunkId;
use rocksdb::{Direction, IteratorMode};

/// A recorded replica: the chunk, its holder's key, the holder's receipt.
pub type Replica = (ChunkId, [u8; 32], Vec<u8>);

impl Store {
    /// Up to `limit` chunks waiting for placement, in id order from `after`.
    pub fn pending_ids(&self, after: Option<&ChunkId>, limit: usize) -> Result<Vec<ChunkId>, StoreError> {
        let start = after.map(|a| a.0.to_vec()).unwrap_or_default();
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf("pending"), IteratorMode::From(&start, Direction::Forward)) {
            let (k, _) = item?;
            let Some(id) = records::decode_chunk_id(&k) else { continue };
            if Some(&id) == after {
                continue;
            }
            out.push(id);
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// Records that `holder` stored `id` (with its signed receipt). When the
    /// chunk has `target` replicas it leaves the placement queue and is no
    /// longer pinned. Returns the chunk's replica count, or `None` if the
    /// chunk is no longer in the index (deleted meanwhile).
    pub fn record_replica(
        &self,
        id: &ChunkId,
        holder: &[u8; 32],
        receipt: &[u8],
        target: u32,
    ) -> Result<Option<u32>, StoreError> {
        let _guard = crate::lock(&self.writer);
        let Some(mut rec) = self.chunk(id)? else { return Ok(None) };
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(self.cf("replicas"), records::replica_key(id, holder), receipt);
        let mut holders = self.replica_holders(id)?;
        if !holders.contains(holder) {
            holders.push(*holder);
        }
        let count = holders.len() as u32;
        rec.placement.replicas = u8::try_from(count).unwrap_or(u8::MAX);
        if count >= target {
            rec.placement.pending = false;
            rec.placement.pinned = false;
            batch.delete_cf(self.cf("pending"), id.0);
        }
        batch.put_cf(self.cf("chunks"), id.0, records::encode(&rec));
        self.write(batch, false)?;
        Ok(Some(count))
    }

    /// The node keys holding a replica of `id`.
    pub fn replica_holders(&self, id: &ChunkId) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut out = Vec::new();
        for item in self.prefix_iter("replicas", &id.0) {
            let (k, _) = item?;
            if let Ok(h) = <[u8; 32]>::try_from(&k[32..]) {
                out.push(h);
            }
        }
        Ok(out)
    }

    /// Every recorded replica: (chunk, holder, the holder's receipt).
    pub fn all_replicas(&self) -> Result<Vec<Replica>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf("replicas"), IteratorMode::Start) {
            let (k, v) = item?;
            if let (Some(id), Ok(h)) = (records::decode_chunk_id(&k[..32.min(k.len())]), <[u8; 32]>::try_from(&k[32..]))
            {
                out.push((id, h, v.to_vec()));
            }
        }
        Ok(out)
    }

    /// Stores a chunk held for someone else (a provider's store), durably.
    /// The caller has verified it against its id. Returns false if it was
    /// already held.
    pub fn hold(&self, id: &ChunkId, sealed: &[u8]) -> Result<bool, StoreError> {
        if self.chunk(id)?.is_some() {
            return Ok(false);
        }
        // The copy into the pack happens outside the writer lock; the sync
        // too, so concurrent uploads share their syncs.
        let at = self.pre_append(id, sealed)?;
        let mut txn = self.begin();
        txn.without_placement();
        txn.add_chunk_at(id, sealed, at)?;
        txn.commit(false)?;
        self.sync()?;
        Ok(true)
    }

    /// True when the store holds `id`.
    pub fn holds(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Ok(self.db.get_pinned_cf(self.cf("chunks"), id.0)?.is_some())
    }

    /// Every chunk in the index, with its record.
    pub fn chunk_records(&self) -> Result<Vec<(ChunkId, ChunkRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf("chunks"), IteratorMode::Start) {
            let (k, v) = item?;
            let Some(id) = records::decode_chunk_id(&k) else { continue };
            out.push((id, records::decode_chunk(&v).map_err(|e| StoreError::corrupt("chunk record", e))?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_reach_the_target_and_go_with_the_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 0).unwrap();
        let body = crate::test_data::data(100_000, 1);
        let id = ChunkId::of(&body);
        let mut txn = store.begin();
        txn.add_chunk_at(&id, &body, None).unwrap();
        txn.commit(false).unwrap();
        assert_eq!(store.pending_ids(None, 10).unwrap(), vec![id]);
        assert_eq!(store.record_replica(&id, &[1; 32], b"r1", 2).unwrap(), Some(1));
        // The same holder twice counts once.
        assert_eq!(store.record_replica(&id, &[1; 32], b"r1", 2).unwrap(), Some(1));
        assert!(store.chunk(&id).unwrap().unwrap().placement.pending);
        assert_eq!(store.record_replica(&id, &[2; 32], b"r2", 2).unwrap(), Some(2));
        let rec = store.chunk(&id).unwrap().unwrap();
        assert!(!rec.placement.pending && !rec.placement.pinned);
        assert!(store.pending_ids(None, 10).unwrap().is_empty());
        assert_eq!(store.replica_holders(&id).unwrap(), vec![[1; 32], [2; 32]]);
        // Released: the chunk and its replica records go together.
        let mut txn = store.begin();
        txn.ref_chunk(&id, -1);
        txn.commit(false).unwrap();
        assert!(store.all_replicas().unwrap().is_empty());
        assert_eq!(store.record_replica(&id, &[3; 32], b"r3", 2).unwrap(), None);
    }

    #[test]
    fn direct_reads_return_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 0).unwrap();
        store.set_direct_reads(true);
        // Odd sizes: bodies start 40 bytes into a 4 KiB block and end
        // anywhere, so each read is a span around them. The last is larger
        // than the span a thread keeps between reads.
        let bodies: Vec<Vec<u8>> = [70_001usize, 65_536, 300_007, 1 << 20, (5 << 20) + 3]
            .iter()
            .enumerate()
            .map(|(i, n)| crate::test_data::data(*n, i as u64))
            .collect();
        for b in &bodies {
            store.hold(&ChunkId::of(b), b).unwrap();
        }
        // Growing, then shrinking: a smaller read into the span a larger
        // one left must return its own bytes only.
        for b in bodies.iter().chain(bodies.iter().rev()) {
            assert_eq!(&store.chunk_body(&ChunkId::of(b)).unwrap(), b);
        }
    }

    #[test]
    fn held_chunks_are_not_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 0).unwrap();
        let body = crate::test_data::data(300_000, 2);
        let id = ChunkId::of(&body);
        assert!(store.hold(&id, &body).unwrap());
        assert!(!store.hold(&id, &body).unwrap());
        assert!(store.holds(&id).unwrap());
        assert!(store.pending_ids(None, 10).unwrap().is_empty());
        assert_eq!(store.chunk_body(&id).unwrap(), body);
    }
}
