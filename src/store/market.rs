//! The market's records: promises (a client's bought, a provider's sold)
//! and small keyed records (nonces seen, cheques, spend), kept as opaque
//! bytes the market layer encodes.

use super::{Store, StoreError};
use crate::chunk::ChunkId;
use rocksdb::{IteratorMode, WriteBatch};

/// A record's key and value, as stored.
pub type RawRecord = (Vec<u8>, Vec<u8>);
/// A promise id and its record.
pub type RawPromise = ([u8; 32], Vec<u8>);

impl Store {
    /// Stores (or replaces) a promise record under its id, durably.
    pub fn put_promise(&self, id: &[u8; 32], record: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf("promises"), id, record);
        self.write(batch, true)
    }

    pub fn promise(&self, id: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf("promises"), id)?)
    }

    pub fn delete_promise(&self, id: &[u8; 32]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf("promises"), id);
        self.write(batch, true)
    }

    /// Every promise record, in id order.
    pub fn promises(&self) -> Result<Vec<RawPromise>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf("promises"), IteratorMode::Start) {
            let (k, v) = item?;
            if let Ok(id) = <[u8; 32]>::try_from(&k[..]) {
                out.push((id, v.to_vec()));
            }
        }
        Ok(out)
    }

    pub fn market_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf("market"), key)?)
    }

    /// Writes a market record; with `sync`, durably before returning.
    pub fn market_put(&self, key: &[u8], value: &[u8], sync: bool) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf("market"), key, value);
        self.write(batch, sync)
    }

    /// Inserts `key` only if absent (under the writer lock); false if it
    /// was already there. Durable before returning.
    pub fn market_insert_new(&self, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        let _guard = crate::lock(&self.writer);
        if self.db.get_pinned_cf(self.cf("market"), key)?.is_some() {
            return Ok(false);
        }
        self.market_put(key, value, true)?;
        Ok(true)
    }

    pub fn market_delete(&self, key: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf("market"), key);
        self.write(batch, false)
    }

    /// Every market record whose key starts with `prefix`.
    pub fn market_scan(&self, prefix: &[u8]) -> Result<Vec<RawRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.prefix_iter("market", prefix) {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Drops a chunk held for others (a provider whose promises for it all
    /// ended). Returns false if it was not held.
    pub fn unhold(&self, id: &ChunkId) -> Result<bool, StoreError> {
        if self.chunk(id)?.is_none() {
            return Ok(false);
        }
        let mut txn = self.begin();
        txn.ref_chunk(id, -1);
        txn.commit(false)?;
        Ok(true)
    }

    /// Forgets that `holder` holds `id` (its promise ended or broke): the
    /// chunk, if still in the index, goes back to the placement queue and
    /// is pinned again. Returns whether a replica record was removed.
    pub fn drop_replica(&self, id: &ChunkId, holder: &[u8; 32]) -> Result<bool, StoreError> {
        let _guard = crate::lock(&self.writer);
        let key = super::records::replica_key(id, holder);
        if self.db.get_pinned_cf(self.cf("replicas"), key.as_slice())?.is_none() {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf("replicas"), key.as_slice());
        if let Some(mut rec) = self.chunk(id)? {
            rec.placement.replicas = rec.placement.replicas.saturating_sub(1);
            rec.placement.pending = true;
            rec.placement.pinned = true;
            batch.put_cf(self.cf("pending"), id.0, b"");
            batch.put_cf(self.cf("chunks"), id.0, super::records::encode(&rec));
        }
        self.write(batch, false)?;
        Ok(true)
    }

    /// The receipt `holder` signed for `id`, if recorded.
    pub fn replica_receipt(&self, id: &ChunkId, holder: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf("replicas"), super::records::replica_key(id, holder))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promises_and_market_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 0).unwrap();
        store.put_promise(&[2; 32], b"two").unwrap();
        store.put_promise(&[1; 32], b"one").unwrap();
        assert_eq!(store.promises().unwrap(), vec![([1; 32], b"one".to_vec()), ([2; 32], b"two".to_vec())]);
        store.delete_promise(&[1; 32]).unwrap();
        assert_eq!(store.promise(&[1; 32]).unwrap(), None);
        assert!(store.market_insert_new(b"nonce/a", b"1").unwrap());
        assert!(!store.market_insert_new(b"nonce/a", b"2").unwrap());
        store.market_put(b"nonce/b", b"3", false).unwrap();
        store.market_put(b"other", b"4", false).unwrap();
        let scan = store.market_scan(b"nonce/").unwrap();
        assert_eq!(scan.len(), 2);
        assert_eq!(scan[0].1, b"1");
    }

    #[test]
    fn a_dropped_replica_requeues_its_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 0).unwrap();
        let body = crate::test_data::data(100_000, 3);
        let id = ChunkId::of(&body);
        let mut txn = store.begin();
        txn.add_chunk_at(&id, &body, None).unwrap();
        txn.commit(false).unwrap();
        store.record_replica(&id, &[1; 32], b"r", 1).unwrap();
        assert!(store.pending_ids(None, 10).unwrap().is_empty());
        assert!(store.drop_replica(&id, &[1; 32]).unwrap());
        assert!(!store.drop_replica(&id, &[1; 32]).unwrap());
        assert_eq!(store.pending_ids(None, 10).unwrap(), vec![id]);
        let rec = store.chunk(&id).unwrap().unwrap();
        assert!(rec.placement.pending && rec.placement.pinned && rec.placement.replicas == 0);
    }

    #[test]
    fn unhold_frees_a_held_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 0).unwrap();
        let body = crate::test_data::data(300_000, 4);
        let id = ChunkId::of(&body);
        store.hold(&id, &body).unwrap();
        assert!(store.unhold(&id).unwrap());
        assert!(!store.holds(&id).unwrap());
        assert!(!store.unhold(&id).unwrap());
    }
}
