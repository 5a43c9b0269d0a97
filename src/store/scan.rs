//! Whole-store scans: statistics, the consistency check (`pactfs fsck`),
//! orphan collection and pack compaction.

use super::records::{self, Kind};
use super::{ROOT_INO, Store, StoreError};
use crate::chunk::ChunkId;
use rocksdb::{IteratorMode, WriteBatch};
use serde::Serialize;
use std::collections::HashMap;

/// What `pactfs stats` reports.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Sum of file sizes as `ls` shows them.
    pub logical_bytes: u64,
    /// Distinct chunks in the index.
    pub chunks: u64,
    /// Manifest entries naming a chunk (a chunk used twice counts twice).
    pub chunk_refs: u64,
    /// Sealed bytes of the distinct chunks.
    pub stored_bytes: u64,
    /// Chunks whose sealed body is in the local cache, and their bytes
    /// (the rest were evicted after placement: providers hold them).
    pub local_chunks: u64,
    pub local_bytes: u64,
    /// Sealed bytes that dedup did not have to store again.
    pub dedup_saved_bytes: u64,
    /// Chunks still waiting for placement (pinned locally).
    pub pending_chunks: u64,
    /// Chunks that reached the replication target.
    pub placed_chunks: u64,
    /// Replicas recorded on providers, over all chunks.
    pub replicas: u64,
    pub pack_files: u64,
    /// Bytes of pack files on disk (live and not yet compacted).
    pub pack_bytes: u64,
    /// Chunk bodies written by the running node since it started.
    pub chunks_written: u64,
}

/// One problem `fsck` found, and whether `--repair` mended it.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub what: String,
    pub repaired: bool,
}

/// The result of a consistency check.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FsckReport {
    pub inodes: u64,
    pub dirents: u64,
    pub chunks: u64,
    pub chunks_verified: u64,
    /// Placed chunks whose body was evicted (held by providers only).
    pub chunks_remote: u64,
    /// Files unlinked while open when the node stopped (not damage;
    /// reclaimed by `--repair` and by the node at start).
    pub orphans: u64,
    /// Files with journal records (fsynced bytes not yet cut into chunks:
    /// not damage; the node cuts them when it starts).
    pub journaled: u64,
    pub findings: Vec<Finding>,
}

impl FsckReport {
    pub fn clean(&self) -> bool {
        self.findings.is_empty()
    }

    pub fn unrepaired(&self) -> usize {
        self.findings.iter().filter(|f| !f.repaired).count()
    }
}

impl Store {
    pub fn stats(&self) -> Result<Stats, StoreError> {
        let mut s = Stats { chunks_written: self.chunks_written(), ..Stats::default() };
        for item in self.db.iterator_cf(self.cf("inodes"), IteratorMode::Start) {
            let (_, v) = item?;
            let inode = records::decode_inode(&v).map_err(|e| StoreError::corrupt("inode", e))?;
            match inode.kind {
                Kind::File => {
                    s.files += 1;
                    s.logical_bytes += inode.size;
                }
                Kind::Dir => s.directories += 1,
                Kind::Symlink => s.symlinks += 1,
                _ => {}
            }
        }
        for item in self.db.iterator_cf(self.cf("chunks"), IteratorMode::Start) {
            let (_, v) = item?;
            let rec = records::decode_chunk(&v).map_err(|e| StoreError::corrupt("chunk record", e))?;
            s.chunks += 1;
            s.chunk_refs += rec.refs;
            s.stored_bytes += u64::from(rec.len);
            if rec.is_local() {
                s.local_chunks += 1;
                s.local_bytes += u64::from(rec.len);
            }
            s.dedup_saved_bytes += rec.refs.saturating_sub(1) * u64::from(rec.len);
            s.replicas += u64::from(rec.placement.replicas);
            if !rec.placement.pending {
                s.placed_chunks += 1;
            }
        }
        s.pending_chunks = self.db.iterator_cf(self.cf("pending"), IteratorMode::Start).count() as u64;
        let dir = self.data_dir.join("packs");
        for no in super::Packs::list(&dir)? {
            s.pack_files += 1;
            s.pack_bytes += self.packs.file_len(no);
        }
        Ok(s)
    }

    /// Deletes inodes no directory entry names any more (files unlinked
    /// while open when the process died), releasing their chunks.
    pub fn sweep_orphans(&self) -> Result<u64, StoreError> {
        let mut orphans = Vec::new();
        for item in self.db.iterator_cf(self.cf("inodes"), IteratorMode::Start) {
            let (_, v) = item?;
            let inode = records::decode_inode(&v).map_err(|e| StoreError::corrupt("inode", e))?;
            if inode.nlink == 0 && inode.ino != ROOT_INO {
                orphans.push(inode.ino);
            }
        }
        for ino in &orphans {
            let manifest = self.manifest(*ino)?;
            let mut txn = self.begin();
            for e in &manifest {
                txn.ref_chunk(&e.id, -1);
            }
            txn.delete_inode(*ino)?;
            txn.commit(false)?;
        }
        Ok(orphans.len() as u64)
    }

    /// Copies the live bodies out of mostly-dead packs and deletes them.
    /// Returns the bytes of pack files removed.
    pub fn compact_packs(&self) -> Result<u64, StoreError> {
        let current = self.packs.current_no();
        let mut victims = Vec::new();
        for item in self.db.iterator_cf(self.cf("packs"), IteratorMode::Start) {
            let (k, v) = item?;
            let Some(no) = records::parse_u32(&k) else { continue };
            let pr = records::decode_pack(&v).map_err(|e| StoreError::corrupt("pack record", e))?;
            // Half dead is the point where copying the rest costs no more
            // than the space it returns.
            if no != current && no != super::INLINE_PACK && pr.live * 2 <= pr.total {
                victims.push(no);
            }
        }
        let mut freed = 0;
        for no in victims {
            freed += self.compact_one(no)?;
        }
        Ok(freed)
    }

    /// Moves the live bodies of pack `no` to the current pack and deletes
    /// it. The copying runs without the writer lock, so writers are not
    /// held up for the length of a pack; the lock is taken only to repoint
    /// the chunks that are still where they were copied from.
    fn compact_one(&self, no: u32) -> Result<u64, StoreError> {
        let prefix = no.to_be_bytes();
        // (chunk, old offset, new pack, new offset, length)
        let mut copies: Vec<(ChunkId, u64, u32, u64, u32)> = Vec::new();
        for item in self.prefix_iter("pack_index", &prefix) {
            let (_, v) = item?;
            let Some(id) = records::decode_chunk_id(&v) else { continue };
            let Some(rec) = self.chunk(&id)?.filter(|r| r.pack == no) else { continue };
            let body = self.packs.read(rec.pack, rec.offset, rec.len)?;
            let (pack, offset) = self.packs.append(&id, &body)?;
            copies.push((id, rec.offset, pack, offset, rec.len));
        }
        let _guard = crate::lock(&self.writer);
        let mut batch = WriteBatch::default();
        // Per destination pack: (bytes appended, bytes now live there).
        let mut per_pack: HashMap<u32, (u64, u64)> = HashMap::new();
        let mut moved = 0u64;
        for (id, old_offset, pack, offset, len) in copies {
            let len = u64::from(len);
            per_pack.entry(pack).or_default().0 += len;
            match self.chunk(&id)? {
                Some(mut rec) if rec.pack == no && rec.offset == old_offset => {
                    batch.delete_cf(self.cf("pack_index"), records::pack_index_key(no, old_offset));
                    batch.put_cf(self.cf("pack_index"), records::pack_index_key(pack, offset), id.0);
                    rec.pack = pack;
                    rec.offset = offset;
                    batch.put_cf(self.cf("chunks"), id.0, records::encode(&rec));
                    per_pack.entry(pack).or_default().1 += len;
                    moved += len;
                }
                // Released while it was copied: the copy is dead space.
                _ => {}
            }
        }
        for (pack, (total, live)) in per_pack {
            let key = records::pack_key(pack);
            let mut pr = match self.db.get_cf(self.cf("packs"), key)? {
                Some(v) => records::decode_pack(&v).map_err(|e| StoreError::corrupt("pack record", e))?,
                None => records::PackRecord::default(),
            };
            pr.total += total;
            pr.live += live;
            batch.put_cf(self.cf("packs"), key, records::encode(&pr));
        }
        batch.delete_cf(self.cf("packs"), records::pack_key(no));
        self.packs.sync()?;
        self.write(batch, true)?;
        let size = self.packs.file_len(no);
        self.packs.remove(no)?;
        tracing::debug!(pack = no, moved, freed = size, "compacted pack");
        Ok(size)
    }

    /// Checks the index against itself and the packs: dangling entries,
    /// link counts, reference counts, and every chunk body against its id.
    /// With `repair`, mends what it can in one batch per kind of finding.
    pub fn fsck(&self, repair: bool) -> Result<FsckReport, StoreError> {
        self.fsck_with_progress(repair, &mut |_, _| {})
    }

    /// [`Store::fsck`], calling `progress(chunks checked, chunks estimated)`
    /// as it reads chunk bodies (best effort: the estimate may be off).
    pub fn fsck_with_progress(
        &self,
        repair: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<FsckReport, StoreError> {
        // Orphans are released the way the node does at start, so that
        // their chunks do not show up as damage.
        let swept = if repair { self.sweep_orphans()? } else { 0 };
        let mut report = super::fsck::run(self, repair, progress)?;
        report.orphans += swept;
        Ok(report)
    }
}
