//! Append-only pack files holding sealed chunk bodies beside the index.
//!
//! Chunk bodies stay out of RocksDB's WAL and LSM, so every byte is written
//! once. A pack is never rewritten in place: compaction copies the live
//! bodies of a mostly-dead pack into the current one, then deletes it.
//!
//! ```text
//! pack file := "PACTPK01" record*
//! record    := magic "PCHK" (4) | body length u32 BE (4) | chunk id (32) | body
//! ```
//!
//! The index (in RocksDB) points at the body offset. A torn record at the
//! tail after a crash is never referenced: a new process always starts a
//! new pack, and the index only names bodies appended before it was written.

use super::StoreError;
use crate::chunk::ChunkId;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const FILE_MAGIC: &[u8; 8] = b"PACTPK01";
const RECORD_MAGIC: &[u8; 4] = b"PCHK";
const RECORD_HEADER: u64 = 4 + 4 + 32;
/// A pack is closed once it grows past this; smaller packs make compaction
/// cheaper, larger ones mean fewer files.
const PACK_TARGET: u64 = 256 * 1024 * 1024;

/// The set of pack files under one directory; appends go to the newest.
pub struct Packs {
    dir: PathBuf,
    current: Mutex<Current>,
}

struct Current {
    no: u32,
    file: File,
    len: u64,
    /// Appended to since the last sync. Only the current pack can be:
    /// a pack is synced when it is closed.
    dirty: bool,
}

impl Packs {
    /// Opens `dir`, starting a fresh pack numbered after every existing one.
    pub fn open(dir: &Path) -> Result<Packs, StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let next = Self::list(dir)?.into_iter().max().map_or(1, |n| n + 1);
        let current = Self::create(dir, next)?;
        Ok(Packs { dir: dir.to_path_buf(), current: Mutex::new(current) })
    }

    /// Numbers of the pack files present on disk.
    pub fn list(dir: &Path) -> Result<Vec<u32>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
            let entry = entry.map_err(|e| StoreError::io(dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(no) = name.strip_suffix(".pack").and_then(|n| n.parse::<u32>().ok()) {
                out.push(no);
            }
        }
        Ok(out)
    }

    pub fn path_of(dir: &Path, no: u32) -> PathBuf {
        dir.join(format!("{no:08}.pack"))
    }

    fn create(dir: &Path, no: u32) -> Result<Current, StoreError> {
        let path = Self::path_of(dir, no);
        let mut file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        file.write_all(FILE_MAGIC).map_err(|e| StoreError::io(&path, e))?;
        // The directory entry of a new pack must be durable before any index
        // entry that names it.
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(dir, e))?;
        Ok(Current { no, file, len: FILE_MAGIC.len() as u64, dirty: true })
    }

    /// The pack appends currently go to.
    pub fn current_no(&self) -> u32 {
        self.lock().no
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        // A panic while holding this lock leaves at worst an unreferenced
        // tail record, so the state is still usable.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a sealed body; returns (pack, body offset).
    pub fn append(&self, id: &ChunkId, body: &[u8]) -> Result<(u32, u64), StoreError> {
        let mut cur = self.lock();
        if cur.len >= PACK_TARGET {
            let next = Self::create(&self.dir, cur.no + 1)?;
            let old = std::mem::replace(&mut *cur, next);
            old.file.sync_data().map_err(|e| StoreError::io(&Self::path_of(&self.dir, old.no), e))?;
        }
        let len = u32::try_from(body.len()).map_err(|_| StoreError::Corrupt {
            what: "chunk".into(),
            detail: format!("body of {} bytes is too large", body.len()),
        })?;
        let mut header = [0u8; RECORD_HEADER as usize];
        header[..4].copy_from_slice(RECORD_MAGIC);
        header[4..8].copy_from_slice(&len.to_be_bytes());
        header[8..].copy_from_slice(&id.0);
        let no = cur.no;
        // Two writes rather than one copy of the body: the file is opened
        // for append and this lock is the only writer.
        cur.file
            .write_all(&header)
            .and_then(|()| cur.file.write_all(body))
            .map_err(|e| StoreError::io(&Self::path_of(&self.dir, no), e))?;
        let offset = cur.len + RECORD_HEADER;
        cur.len += RECORD_HEADER + body.len() as u64;
        cur.dirty = true;
        Ok((no, offset))
    }

    /// Makes every appended body durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut cur = self.lock();
        if !cur.dirty {
            return Ok(());
        }
        let no = cur.no;
        cur.file.sync_data().map_err(|e| StoreError::io(&Self::path_of(&self.dir, no), e))?;
        cur.dirty = false;
        Ok(())
    }

    /// Reads the sealed body at `offset` in pack `no`.
    pub fn read(&self, no: u32, offset: u64, len: u32) -> Result<Vec<u8>, StoreError> {
        let path = Self::path_of(&self.dir, no);
        let file = File::open(&path).map_err(|e| StoreError::io(&path, e))?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset).map_err(|e| StoreError::io(&path, e))?;
        Ok(buf)
    }

    /// Size of a pack file on disk (0 when it is gone).
    pub fn file_len(&self, no: u32) -> u64 {
        fs::metadata(Self::path_of(&self.dir, no)).map_or(0, |m| m.len())
    }

    /// Deletes a pack file that no index entry names any more.
    pub fn remove(&self, no: u32) -> Result<(), StoreError> {
        let path = Self::path_of(&self.dir, no);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }
}
