//! Which chunk bodies are local: the cache of placed chunks.
//!
//! A placed chunk (not pending, with at least one verified replica) may
//! lose its local body: its record stays, with [`REMOTE_PACK`] as its pack,
//! and reads fetch it back from a holder ([`Store::restore_body`]). Pending
//! chunks are never evicted: they are the only copy. Files the user pinned
//! (`pactfs pin`) keep their chunks local; the pins are inode numbers in
//! the `meta` column family. Recency is kept in memory only (a RocksDB
//! write per read would cost more than it saves): after a restart every
//! chunk is equally old until read.

use super::records::{self, ChunkRecord};
use super::{INLINE_PACK, Store, StoreError};
use crate::chunk::{ChunkId, Verified};
use rocksdb::{IteratorMode, WriteBatch};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

/// The pack a record names when its body is not in the local store.
pub const REMOTE_PACK: u32 = u32::MAX;
const PIN_PREFIX: &[u8] = b"pin/";

impl ChunkRecord {
    /// Whether the sealed body is in this store.
    pub fn is_local(&self) -> bool {
        self.pack != REMOTE_PACK
    }
}

/// What [`Store::evict`] did with one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evicted {
    /// The body is gone from the local store; its bytes.
    Freed(u64),
    /// Still waiting for placement (or never placed): kept.
    Pending,
    AlreadyRemote,
    /// Not in the index.
    Unknown,
}

fn pin_key(ino: u64) -> Vec<u8> {
    [PIN_PREFIX, &ino.to_be_bytes()].concat()
}

impl Store {
    /// Notes that a chunk's body was just read (least recently used goes first).
    pub(crate) fn touch(&self, id: &ChunkId) {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        crate::lock(&self.recency).insert(*id, tick);
    }

    /// Whether the chunk's sealed body is in this store (false if unknown).
    pub fn has_local_body(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Ok(self.chunk(id)?.is_some_and(|r| r.is_local()))
    }

    /// Frees the local body of a placed chunk. Pending chunks stay.
    pub fn evict(&self, id: &ChunkId) -> Result<Evicted, StoreError> {
        self.free_body(id, false)
    }

    /// Frees a local body that failed its check, so that the next read
    /// fetches the chunk from a holder: as [`Store::evict`], but a pinned
    /// chunk's rotten copy goes too. A chunk with no replica elsewhere
    /// keeps it (`Pending`): it is the only copy there is.
    pub fn drop_rotten(&self, id: &ChunkId) -> Result<Evicted, StoreError> {
        self.free_body(id, true)
    }

    fn free_body(&self, id: &ChunkId, even_pinned: bool) -> Result<Evicted, StoreError> {
        let _guard = crate::lock(&self.writer);
        let Some(mut rec) = self.chunk(id)? else { return Ok(Evicted::Unknown) };
        if !rec.is_local() {
            return Ok(Evicted::AlreadyRemote);
        }
        if rec.placement.pending || (rec.placement.pinned && !even_pinned) || rec.placement.replicas == 0 {
            return Ok(Evicted::Pending);
        }
        let mut batch = WriteBatch::default();
        if rec.pack == INLINE_PACK {
            batch.delete_cf(self.cf("bodies"), id.0);
        } else {
            batch.delete_cf(self.cf("pack_index"), records::pack_index_key(rec.pack, rec.offset));
        }
        self.add_live(&mut batch, rec.pack, 0, -i64::from(rec.len))?;
        let len = u64::from(rec.len);
        rec.pack = REMOTE_PACK;
        rec.offset = 0;
        batch.put_cf(self.cf("chunks"), id.0, records::encode(&rec));
        self.write(batch, false)?;
        self.used_bytes.fetch_sub(len.min(self.used_bytes()), Ordering::Relaxed);
        crate::lock(&self.recency).remove(id);
        Ok(Evicted::Freed(len))
    }

    /// Puts a fetched (verified) body back, making the chunk local again.
    /// Returns false if the chunk is unknown or
    /// already local.
    pub fn restore_body(&self, body: &Verified) -> Result<bool, StoreError> {
        let (id, sealed) = (&body.id(), body.bytes());
        if self.chunk(id)?.is_none_or(|r| r.is_local()) {
            return Ok(false);
        }
        // The copy into the pack happens outside the writer lock.
        let at = if sealed.len() > super::INLINE_MAX { Some(self.packs.append(id, sealed)?) } else { None };
        let _guard = crate::lock(&self.writer);
        let Some(mut rec) = self.chunk(id)?.filter(|r| !r.is_local()) else {
            // Restored meanwhile (or released): the appended copy is dead space.
            if let Some((pack, _)) = at {
                let mut batch = WriteBatch::default();
                self.add_live(&mut batch, pack, sealed.len() as i64, 0)?;
                self.write(batch, false)?;
            }
            return Ok(false);
        };
        let mut batch = WriteBatch::default();
        let (pack, offset) = match at {
            Some(at) => {
                batch.put_cf(self.cf("pack_index"), records::pack_index_key(at.0, at.1), id.0);
                at
            }
            None => {
                batch.put_cf(self.cf("bodies"), id.0, sealed);
                (INLINE_PACK, 0)
            }
        };
        let len = sealed.len() as i64;
        self.add_live(&mut batch, pack, len, len)?;
        rec.pack = pack;
        rec.offset = offset;
        batch.put_cf(self.cf("chunks"), id.0, records::encode(&rec));
        self.write(batch, false)?;
        self.used_bytes.fetch_add(sealed.len() as u64, Ordering::Relaxed);
        self.touch(id);
        Ok(true)
    }

    /// Adds to a pack's total and live byte counts in `batch`.
    fn add_live(&self, batch: &mut WriteBatch, pack: u32, total: i64, live: i64) -> Result<(), StoreError> {
        let key = records::pack_key(pack);
        let mut pr = match self.db.get_cf(self.cf("packs"), key)? {
            Some(v) => records::decode_pack(&v).map_err(|e| StoreError::corrupt("pack record", e))?,
            None => records::PackRecord::default(),
        };
        pr.total = (pr.total as i64 + total).max(0) as u64;
        pr.live = (pr.live as i64 + live).max(0) as u64;
        batch.put_cf(self.cf("packs"), key, records::encode(&pr));
        Ok(())
    }

    /// Pins or unpins a file or directory (its inode number).
    pub fn set_pin(&self, ino: u64, on: bool) -> Result<(), StoreError> {
        let key = pin_key(ino);
        if on {
            self.db.put_cf(self.cf("meta"), key, b"")?;
        } else {
            self.db.delete_cf(self.cf("meta"), key)?;
        }
        Ok(())
    }

    /// The inodes pinned with `pactfs pin`.
    pub fn pinned_inodes(&self) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for item in self.prefix_iter("meta", PIN_PREFIX) {
            let (k, _) = item?;
            if let Some(ino) = records::parse_u64(&k[PIN_PREFIX.len()..]) {
                out.push(ino);
            }
        }
        Ok(out)
    }

    /// Every chunk of the files at or under `ino` (directories walked).
    pub fn chunks_under(&self, ino: u64) -> Result<HashSet<ChunkId>, StoreError> {
        let mut out = HashSet::new();
        let mut todo = vec![ino];
        let mut seen = HashSet::new();
        while let Some(ino) = todo.pop() {
            if !seen.insert(ino) {
                continue;
            }
            let Some(inode) = self.inode(ino)? else { continue };
            if inode.kind == records::Kind::Dir {
                todo.extend(self.read_dir(ino)?.into_iter().map(|(_, d)| d.ino));
            } else {
                out.extend(self.manifest(ino)?.into_iter().map(|e| e.id));
            }
        }
        Ok(out)
    }

    /// The chunks to evict, least recently read first, so that the local
    /// bodies come down to `target` bytes: placed, local, and not under a
    /// pinned inode. Pins of inodes that no longer exist are dropped.
    pub fn eviction_plan(&self, target: u64) -> Result<Vec<ChunkId>, StoreError> {
        let used = self.used_bytes();
        if used <= target {
            return Ok(Vec::new());
        }
        let mut pinned = HashSet::new();
        for ino in self.pinned_inodes()? {
            if self.inode(ino)?.is_none() {
                self.set_pin(ino, false)?;
                continue;
            }
            pinned.extend(self.chunks_under(ino)?);
        }
        let recency: HashMap<ChunkId, u64> = crate::lock(&self.recency).clone();
        let mut candidates: Vec<(u64, ChunkId, u64)> = Vec::new();
        for item in self.db.iterator_cf(self.cf("chunks"), IteratorMode::Start) {
            let (k, v) = item?;
            let Some(id) = records::decode_chunk_id(&k) else { continue };
            let Ok(rec) = records::decode_chunk(&v) else { continue };
            let p = &rec.placement;
            if rec.is_local() && !p.pending && !p.pinned && p.replicas > 0 && !pinned.contains(&id) {
                candidates.push((recency.get(&id).copied().unwrap_or(0), id, u64::from(rec.len)));
            }
        }
        candidates.sort_unstable();
        let mut over = used - target;
        let mut out = Vec::new();
        for (_, id, len) in candidates {
            if over == 0 {
                break;
            }
            out.push(id);
            over = over.saturating_sub(len);
        }
        Ok(out)
    }
}
