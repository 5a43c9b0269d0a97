//! One atomic change to the store: a RocksDB write batch plus the chunk
//! reference-count and pack-space bookkeeping that goes with it.

use super::records::{self, BlobRecord, ChunkRecord, Dirent, Inode, PackRecord, Placement};
use super::{INLINE_MAX, INLINE_PACK, META_NEXT_INO, Store, StoreError, WriterGuard};
use crate::chunk::{ChunkId, ManifestEntry};
use rocksdb::WriteBatch;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// A change in progress. Holds the store's writer lock, so reads made
/// through the store while building it see no other writer's half-done work.
/// Dropping it without `commit` discards the batch (appended pack bodies
/// become unreferenced dead bytes).
pub struct Txn<'a> {
    store: &'a Store,
    _guard: WriterGuard<'a>,
    batch: WriteBatch,
    chunk_deltas: HashMap<ChunkId, i64>,
    appended: HashMap<ChunkId, ChunkRecord>,
    /// Bodies appended ahead of this transaction that it did not need.
    dead: Vec<(u32, u64)>,
    touched_inodes: bool,
    /// New chunks join the placement queue (not so in a provider's store).
    queue_pending: bool,
}

impl<'a> Txn<'a> {
    pub(super) fn new(store: &'a Store, guard: WriterGuard<'a>) -> Txn<'a> {
        Txn {
            store,
            _guard: guard,
            batch: WriteBatch::default(),
            chunk_deltas: HashMap::new(),
            appended: HashMap::new(),
            dead: Vec::new(),
            touched_inodes: false,
            queue_pending: true,
        }
    }

    /// New chunks of this transaction are held for others (a provider's
    /// store): they are not queued for placement.
    pub fn without_placement(&mut self) {
        self.queue_pending = false;
    }

    pub fn store(&self) -> &'a Store {
        self.store
    }

    pub(super) fn batch_mut(&mut self) -> &mut WriteBatch {
        &mut self.batch
    }

    pub fn put_inode(&mut self, inode: &Inode) {
        self.touched_inodes = true;
        let cf = self.store.cf("inodes");
        self.batch.put_cf(cf, records::ino_key(inode.ino), records::encode(inode));
    }

    /// Deletes an inode with its manifest and extended attributes; the
    /// caller releases the manifest's chunk references.
    pub fn delete_inode(&mut self, ino: u64) -> Result<(), StoreError> {
        self.batch.delete_cf(self.store.cf("inodes"), records::ino_key(ino));
        self.store.delete_manifest(&mut self.batch, ino)?;
        for name in self.store.xattr_names(ino)? {
            self.batch.delete_cf(self.store.cf("xattrs"), records::xattr_key(ino, &name));
        }
        self.store.delete_journal(&mut self.batch, ino)
    }

    pub fn put_dirent(&mut self, parent: u64, name: &[u8], dirent: &Dirent) {
        let cf = self.store.cf("dirents");
        self.batch.put_cf(cf, records::dirent_key(parent, name), records::encode(dirent));
    }

    pub fn delete_dirent(&mut self, parent: u64, name: &[u8]) {
        self.batch.delete_cf(self.store.cf("dirents"), records::dirent_key(parent, name));
    }

    pub fn put_xattr(&mut self, ino: u64, name: &[u8], value: &[u8]) {
        self.batch.put_cf(self.store.cf("xattrs"), records::xattr_key(ino, name), value);
    }

    pub fn delete_xattr(&mut self, ino: u64, name: &[u8]) {
        self.batch.delete_cf(self.store.cf("xattrs"), records::xattr_key(ino, name));
    }

    /// Changes a file's manifest: drops `removed` and records `added`
    /// (removals first, so an entry replaced at the same offset ends up the
    /// new one). The caller adjusts the chunks' reference counts.
    pub fn change_manifest(&mut self, ino: u64, removed: &[ManifestEntry], added: &[ManifestEntry]) {
        let cf = self.store.cf("manifests");
        for e in removed {
            self.batch.delete_cf(cf, records::manifest_key(ino, e.offset));
        }
        for e in added {
            self.batch.put_cf(cf, records::manifest_key(ino, e.offset), records::encode(e));
        }
    }

    /// Adds one reference to a chunk, storing its sealed body unless the
    /// store already holds it (dedup). The body may already be appended by
    /// [`Store::pre_append`] at `at`. If the chunk turns out to be stored
    /// already, that copy is counted as dead bytes of its pack.
    pub fn add_chunk_at(&mut self, id: &ChunkId, sealed: &[u8], at: Option<(u32, u64)>) -> Result<(), StoreError> {
        let len = sealed.len() as u32;
        if self.appended.contains_key(id) || self.store.chunk(id)?.is_some() {
            if let Some((pack, _)) = at {
                self.dead.push((pack, u64::from(len)));
            }
        } else {
            let (pack, offset) = match at {
                Some(at) => at,
                None if sealed.len() <= INLINE_MAX => {
                    self.batch.put_cf(self.store.cf("bodies"), id.0, sealed);
                    (INLINE_PACK, 0)
                }
                None => self.store.packs.append(id, sealed)?,
            };
            let rec = ChunkRecord { refs: 0, pack, offset, len, placement: Placement::new_pending() };
            self.appended.insert(*id, rec);
        }
        *self.chunk_deltas.entry(*id).or_default() += 1;
        Ok(())
    }

    /// Keeps a sealed blob as a chunk whose one reference is its `blobs`
    /// record (see [`Store::keep_blob`]).
    pub fn keep_blob(
        &mut self,
        id: &ChunkId,
        sealed: &[u8],
        at: Option<(u32, u64)>,
        record: &BlobRecord,
    ) -> Result<(), StoreError> {
        self.add_chunk_at(id, sealed, at)?;
        self.batch.put_cf(self.store.cf("blobs"), id.0, records::encode(record));
        Ok(())
    }

    /// Drops a kept blob's record and the reference it held.
    pub fn release_blob(&mut self, id: &ChunkId) {
        self.batch.delete_cf(self.store.cf("blobs"), id.0);
        self.ref_chunk(id, -1);
    }

    /// Changes a chunk's reference count by `delta` (negative to release).
    pub fn ref_chunk(&mut self, id: &ChunkId, delta: i64) {
        *self.chunk_deltas.entry(*id).or_default() += delta;
    }

    /// Writes the batch; with `sync`, pack bodies and the WAL reach the disk
    /// before this returns.
    pub fn commit(mut self, sync: bool) -> Result<(), StoreError> {
        let store = self.store;
        let mut pack_deltas: HashMap<u32, (i64, i64)> = HashMap::new();
        let mut used_delta: i64 = 0;
        // Inline bodies are accounted as pseudo-pack INLINE_PACK, which
        // compaction never touches.
        for rec in self.appended.values() {
            pack_deltas.entry(rec.pack).or_default().0 += i64::from(rec.len);
        }
        for (pack, len) in &self.dead {
            pack_deltas.entry(*pack).or_default().0 += *len as i64;
        }
        let deltas = std::mem::take(&mut self.chunk_deltas);
        for (id, delta) in deltas {
            let appended = self.appended.get(&id).cloned();
            let (mut rec, is_new) = match appended {
                Some(rec) => (rec, true),
                None => match store.chunk(&id)? {
                    Some(rec) => (rec, false),
                    None => {
                        tracing::warn!(chunk = %id.fmt_short(), delta, "reference change for a chunk not in the index");
                        continue;
                    }
                },
            };
            if delta == 0 && !is_new {
                continue;
            }
            let refs = rec.refs as i64 + delta;
            let len = i64::from(rec.len);
            if refs <= 0 {
                if is_new && rec.pack == INLINE_PACK {
                    // Added and released in this batch: drop the inline body.
                    self.batch.delete_cf(store.cf("bodies"), id.0);
                } else if !is_new {
                    self.batch.delete_cf(store.cf("chunks"), id.0);
                    self.batch.delete_cf(store.cf("pending"), id.0);
                    // Point deletes: range tombstones would slow every
                    // later scan of the column family.
                    if rec.placement.replicas > 0 {
                        for holder in store.replica_holders(&id)? {
                            self.batch.delete_cf(store.cf("replicas"), records::replica_key(&id, &holder));
                        }
                    }
                    if !rec.is_local() {
                        // Its body went with eviction: nothing local to free.
                    } else if rec.pack == INLINE_PACK {
                        self.batch.delete_cf(store.cf("bodies"), id.0);
                    } else {
                        self.batch.delete_cf(store.cf("pack_index"), records::pack_index_key(rec.pack, rec.offset));
                    }
                    if rec.is_local() {
                        pack_deltas.entry(rec.pack).or_default().1 -= len;
                        used_delta -= len;
                    }
                }
                continue;
            }
            rec.refs = refs as u64;
            if is_new && !self.queue_pending {
                rec.placement = Placement { pending: false, pinned: false, replicas: 0, promises: Vec::new() };
            }
            self.batch.put_cf(store.cf("chunks"), id.0, records::encode(&rec));
            if is_new {
                if rec.pack != INLINE_PACK {
                    self.batch.put_cf(store.cf("pack_index"), records::pack_index_key(rec.pack, rec.offset), id.0);
                }
                pack_deltas.entry(rec.pack).or_default().1 += len;
                if self.queue_pending {
                    self.batch.put_cf(store.cf("pending"), id.0, b"");
                }
                used_delta += len;
            }
        }
        for (pack, (total, live)) in pack_deltas {
            let key = records::pack_key(pack);
            let mut pr = match store.db.get_cf(store.cf("packs"), key)? {
                Some(v) => records::decode_pack(&v).map_err(|e| StoreError::corrupt("pack record", e))?,
                None => PackRecord::default(),
            };
            pr.total = (pr.total as i64 + total).max(0) as u64;
            pr.live = (pr.live as i64 + live).max(0) as u64;
            self.batch.put_cf(store.cf("packs"), key, records::encode(&pr));
        }
        if self.touched_inodes {
            let next = store.next_ino.load(Ordering::SeqCst);
            self.batch.put_cf(store.cf("meta"), META_NEXT_INO, next.to_be_bytes());
        }
        if sync {
            store.packs.sync()?;
        }
        let batch = std::mem::take(&mut self.batch);
        store.write(batch, sync)?;
        if used_delta >= 0 {
            store.used_bytes.fetch_add(used_delta as u64, Ordering::Relaxed);
        } else {
            store.used_bytes.fetch_sub(used_delta.unsigned_abs(), Ordering::Relaxed);
        }
        store.chunks_written.fetch_add(self.appended.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkKey;

    fn entries(n: u64) -> Vec<ManifestEntry> {
        (0..n)
            .map(|i| ManifestEntry {
                offset: i << 20,
                len: 1 << 20,
                id: ChunkId([i as u8; 32]),
                key: ChunkKey([0; 32]),
            })
            .collect()
    }

    #[test]
    fn deleting_an_inode_writes_point_deletes_and_spares_its_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 0).unwrap();
        let mut txn = store.begin();
        for ino in [5, 6, 7] {
            txn.change_manifest(ino, &[], &entries(3));
        }
        txn.put_xattr(6, b"user.a", b"1");
        txn.commit(false).unwrap();

        let mut txn = store.begin();
        txn.delete_inode(6).unwrap();
        // The inode, its three manifest entries and its attribute, one by
        // one: a range tombstone here slows every later read of the column
        // family while it sits in the memtable.
        assert_eq!(txn.batch.len(), 1 + 3 + 1);
        txn.commit(false).unwrap();
        assert!(store.manifest(6).unwrap().is_empty());
        assert!(store.xattr_names(6).unwrap().is_empty());
        assert_eq!(store.manifest(5).unwrap(), entries(3));
        assert_eq!(store.manifest(7).unwrap(), entries(3));
    }

    #[test]
    fn prefix_scans_stop_at_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 0).unwrap();
        let mut txn = store.begin();
        for ino in [1, 2, 3, u64::MAX] {
            txn.change_manifest(ino, &[], &entries(2));
        }
        txn.commit(false).unwrap();
        let mut txn = store.begin();
        txn.delete_inode(2).unwrap();
        txn.commit(false).unwrap();
        assert_eq!(store.manifest(1).unwrap(), entries(2));
        assert!(store.manifest(2).unwrap().is_empty());
        assert_eq!(store.manifest(3).unwrap(), entries(2));
        assert_eq!(store.manifest(u64::MAX).unwrap(), entries(2), "an all-ones prefix has no upper bound");
        assert!(store.manifest(4).unwrap().is_empty());
    }
}
