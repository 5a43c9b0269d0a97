//! Append-only pack files holding sealed chunk bodies beside the index.
//!
//! Chunk bodies stay out of RocksDB's WAL and LSM, so every byte is written
//! once. A pack is never rewritten in place: compaction copies the live
//! bodies of a mostly-dead pack into the current one, then deletes it.
//!
//! ```text
//! pack file := "PACTPK02" zeros to 4096 | record*
//! record    := magic "PCHK" (4) | body length u32 BE (4) | chunk id (32) | body
//!              | zeros to the next multiple of 4096
//! ```
//!
//! Records are 4 KiB-aligned so that appends can bypass the page cache
//! (O_DIRECT where the file system allows it): on the virtual machines
//! pactfs was measured on, copying new data into the page cache cost more
//! CPU than the whole network path. Packs of format 01 (unaligned records)
//! are still read; nothing parses packs sequentially, the index holds
//! every body's offset.
//!
//! The index (in RocksDB) points at the body offset. A torn record at the
//! tail after a crash is never referenced: a new process always starts a
//! new pack, and the index only names bodies appended before it was written.

use super::StoreError;
use crate::chunk::ChunkId;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const FILE_MAGIC: &[u8; 8] = b"PACTPK02";
/// Alignment of records (and of direct writes).
const ALIGN: usize = 4096;
const RECORD_MAGIC: &[u8; 4] = b"PCHK";
const RECORD_HEADER: u64 = 4 + 4 + 32;
/// A pack is closed once it grows past this; smaller packs make compaction
/// cheaper, larger ones mean fewer files.
const PACK_TARGET: u64 = 256 * 1024 * 1024;

/// The set of pack files under one directory; appends go to the newest.
pub struct Packs {
    dir: PathBuf,
    current: Mutex<Current>,
    /// Held while a sync runs: one fsync at a time, and a caller that
    /// waited here usually finds its appends already covered (group commit).
    syncing: Mutex<()>,
    /// Every append numbered up to this one is durable.
    synced: AtomicU64,
    /// Read large bodies around the page cache (see [`Packs::set_direct_reads`]).
    direct_reads: std::sync::atomic::AtomicBool,
}

struct Current {
    no: u32,
    file: Arc<File>,
    len: u64,
    /// Number of the last append (over all packs of this process). Only
    /// the current pack can hold unsynced appends: a pack is synced when
    /// it is closed.
    appended: u64,
    /// The staging buffer of a record, 4 KiB-aligned within.
    buf: AlignedBuf,
}

/// A byte buffer whose usable part starts on a 4 KiB boundary.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    const fn new() -> AlignedBuf {
        AlignedBuf { raw: Vec::new(), start: 0 }
    }

    /// The first `len` usable bytes (contents unspecified), growing if needed.
    fn get(&mut self, len: usize) -> &mut [u8] {
        if self.raw.len() < self.start + len {
            self.raw = vec![0u8; len + ALIGN];
            self.start = self.raw.as_ptr().align_offset(ALIGN);
        }
        &mut self.raw[self.start..self.start + len]
    }
}

fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Smallest body read with O_DIRECT when direct reads are on.
pub const DIRECT_READ_MIN: usize = 64 * 1024;

/// Reads `len` bytes at `offset` through O_DIRECT: the aligned span around
/// them, then the bytes. `None` when the file system refuses O_DIRECT or
/// the span passes the end of the file (a pack of the unaligned format):
/// the caller reads buffered.
fn read_direct(path: &Path, offset: u64, len: usize) -> Option<Vec<u8>> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path).ok()?;
    let start = offset - offset % ALIGN as u64;
    let skip = (offset - start) as usize;
    let span = round_up(skip + len);
    let read = |buf: &mut AlignedBuf| {
        let b = buf.get(span);
        file.read_exact_at(b, start).ok()?;
        let mut body = crate::bufpool::take(len);
        body.copy_from_slice(&b[skip..skip + len]);
        Some(body)
    };
    if span > KEPT_SPAN_MAX {
        return read(&mut AlignedBuf::new());
    }
    // One staging span per thread, kept between reads: zeroing a fresh
    // span for every chunk served was 4 % of a cold read's CPU.
    thread_local! {
        static SPAN: std::cell::RefCell<AlignedBuf> = const { std::cell::RefCell::new(AlignedBuf::new()) };
    }
    SPAN.with_borrow_mut(read)
}

/// Largest staging span a thread keeps between direct reads (a chunk of
/// the default maximum size fits).
const KEPT_SPAN_MAX: usize = 4 * 1024 * 1024 + 2 * ALIGN;

/// Opens a new pack for writing, bypassing the page cache if the file
/// system supports it, and writes its header block.
fn open_pack(path: &Path, buf: &mut AlignedBuf) -> std::io::Result<File> {
    let header = buf.get(ALIGN);
    header.fill(0);
    header[..FILE_MAGIC.len()].copy_from_slice(FILE_MAGIC);
    let open = |flags: i32| {
        OpenOptions::new().create(true).truncate(false).read(true).write(true).custom_flags(flags).open(path)
    };
    if let Ok(file) = open(libc::O_DIRECT)
        && file.write_all_at(header, 0).is_ok()
    {
        return Ok(file);
    }
    // tmpfs and some others refuse O_DIRECT: the same format, buffered.
    let file = open(0)?;
    file.write_all_at(header, 0)?;
    Ok(file)
}

impl Packs {
    /// Opens `dir`, starting a fresh pack numbered after every existing one.
    pub fn open(dir: &Path) -> Result<Packs, StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let next = Self::list(dir)?.into_iter().max().map_or(1, |n| n + 1);
        let current = Self::create(dir, next, 0)?;
        Ok(Packs {
            dir: dir.to_path_buf(),
            current: Mutex::new(current),
            syncing: Mutex::new(()),
            synced: AtomicU64::new(0),
            direct_reads: std::sync::atomic::AtomicBool::new(false),
        })
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

    fn create(dir: &Path, no: u32, appended: u64) -> Result<Current, StoreError> {
        let path = Self::path_of(dir, no);
        if path.exists() {
            return Err(StoreError::io(&path, std::io::Error::from(std::io::ErrorKind::AlreadyExists)));
        }
        let mut buf = AlignedBuf::new();
        let file = open_pack(&path, &mut buf).map_err(|e| StoreError::io(&path, e))?;
        // The directory entry of a new pack must be durable before any index
        // entry that names it.
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(dir, e))?;
        Ok(Current { no, file: Arc::new(file), len: ALIGN as u64, appended, buf })
    }

    /// The pack appends currently go to.
    pub fn current_no(&self) -> u32 {
        self.lock().no
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        // A panic while holding this lock leaves at worst an unreferenced
        // tail record, so the state is still usable.
        crate::lock(&self.current)
    }

    /// Appends a sealed body; returns (pack, body offset).
    pub fn append(&self, id: &ChunkId, body: &[u8]) -> Result<(u32, u64), StoreError> {
        let mut cur = self.lock();
        if cur.len >= PACK_TARGET {
            let next = Self::create(&self.dir, cur.no + 1, cur.appended)?;
            let old = std::mem::replace(&mut *cur, next);
            old.file.sync_data().map_err(|e| StoreError::io(&Self::path_of(&self.dir, old.no), e))?;
        }
        let len = u32::try_from(body.len()).map_err(|_| StoreError::Corrupt {
            what: "chunk".into(),
            detail: format!("body of {} bytes is too large", body.len()),
        })?;
        let no = cur.no;
        let at = cur.len;
        let h = RECORD_HEADER as usize;
        let padded = round_up(h + body.len());
        let file = cur.file.clone();
        let rec = cur.buf.get(padded);
        rec[..4].copy_from_slice(RECORD_MAGIC);
        rec[4..8].copy_from_slice(&len.to_be_bytes());
        rec[8..h].copy_from_slice(&id.0);
        rec[h..h + body.len()].copy_from_slice(body);
        rec[h + body.len()..].fill(0);
        file.write_all_at(rec, at).map_err(|e| StoreError::io(&Self::path_of(&self.dir, no), e))?;
        cur.len += padded as u64;
        cur.appended += 1;
        Ok((no, at + RECORD_HEADER))
    }

    /// Makes every body appended before this call durable. The fsync runs
    /// outside the append lock, so appends go on meanwhile, and concurrent
    /// callers share one fsync.
    pub fn sync(&self) -> Result<(), StoreError> {
        let wanted = self.lock().appended;
        if self.synced.load(Ordering::Acquire) >= wanted {
            return Ok(());
        }
        let _one_at_a_time = crate::lock(&self.syncing);
        if self.synced.load(Ordering::Acquire) >= wanted {
            return Ok(());
        }
        // Cover everything appended up to now, not only what this caller
        // needs: the callers queued behind us then return at once.
        let (covers, file, no) = {
            let cur = self.lock();
            (cur.appended, cur.file.clone(), cur.no)
        };
        file.sync_data().map_err(|e| StoreError::io(&Self::path_of(&self.dir, no), e))?;
        self.synced.fetch_max(covers, Ordering::Release);
        Ok(())
    }

    /// Reads bodies of [`DIRECT_READ_MIN`] bytes or more with O_DIRECT.
    /// Bodies are appended around the page cache, so a first read comes
    /// from the disk either way, and on the machines measured a direct read
    /// of the aligned span was twice as fast as a buffered cold one (1.1
    /// against 0.49 GB/s). Right for a provider, which serves a chunk once
    /// to each client; a drive keeps the page cache for files read again.
    pub fn set_direct_reads(&self, on: bool) {
        self.direct_reads.store(on, Ordering::Relaxed);
    }

    /// Reads the sealed body at `offset` in pack `no`.
    pub fn read(&self, no: u32, offset: u64, len: u32) -> Result<Vec<u8>, StoreError> {
        let path = Self::path_of(&self.dir, no);
        if len as usize >= DIRECT_READ_MIN
            && self.direct_reads.load(Ordering::Relaxed)
            && let Some(body) = read_direct(&path, offset, len as usize)
        {
            return Ok(body);
        }
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
