//! File contents: the per-inode open state, reads, writes and the commit
//! that cuts dirty bytes into chunks.
//!
//! An open inode has one [`FileState`] shared by all its handles. Writes go
//! into its [`Overlay`]; a commit (on flush, fsync, release, truncate, or
//! when the overlay grows past [`FLUSH_BYTES`]) re-cuts only the touched
//! span: it starts at the cut point before the first dirty byte and stops at
//! the first new cut past the last dirty byte that is also an old cut (or a
//! hole, or the end of the file). FUSE writes never shift later bytes, so
//! old cuts beyond the span keep their offsets.

mod journal;

use super::cache;
use super::commit::{seal_slices, write_commit, write_shared};
use super::overlay::Overlay;
use super::{Drive, FsError};
use crate::chunk::ManifestEntry;
use crate::store::Stamp;
use crate::store::Store;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Dirty bytes one open file may hold before a commit cuts them.
pub const FLUSH_BYTES: usize = 8 * 1024 * 1024;
/// Dirty and in-flight bytes of all open files together past which every
/// writer commits what it holds: bounds the node's memory when many files
/// are written at once.
pub const DIRTY_TOTAL_MAX: usize = 96 * 1024 * 1024;
/// Below this a file's dirty bytes are not worth cutting early.
const DIRTY_MIN_EARLY: usize = 1024 * 1024;

/// Complete chunks of a streaming writer, handed to the background
/// committer: bytes `[start, start + bytes.len())`, cut at `lens`.
pub struct Job {
    pub start: u64,
    pub bytes: Vec<u8>,
    pub lens: Vec<usize>,
}

impl Job {
    pub fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// (file offset, start in `bytes`, length) of each chunk.
    pub fn cuts(&self) -> Vec<(u64, usize, usize)> {
        let mut at = 0;
        self.lens
            .iter()
            .map(|&len| {
                let cut = (self.start + at as u64, at, len);
                at += len;
                cut
            })
            .collect()
    }
}

use journal::Journal;

/// A sealed chunk: its manifest entry and its stored bytes.
pub type Sealed = (ManifestEntry, Vec<u8>);

/// One manifest splice, kept to undo it if its commit fails.
struct Splice {
    at: usize,
    added: usize,
    removed: Vec<ManifestEntry>,
}

/// What a write leaves to do.
pub enum WriteOutcome {
    Done,
    /// Hand this job to the background committer.
    Stream(Arc<Job>),
    /// The dirty bytes are not a simple stream, or memory is short: commit
    /// them now, once no job is in flight (all of them with `final_cut`).
    CommitNow {
        final_cut: bool,
    },
}

/// The open state of one inode.
pub struct FileState {
    pub ino: u64,
    /// Size as `stat` shows it now.
    pub size: u64,
    /// Size the index records.
    db_size: u64,
    manifest: Vec<ManifestEntry>,
    overlay: Overlay,
    /// The drive-wide count of dirty and in-flight bytes.
    dirty: Arc<AtomicUsize>,
    /// Manifest entries dropped since the last commit (by a truncate or a
    /// re-cut): the commit deletes them and releases their chunks.
    removed: Vec<ManifestEntry>,
    meta_dirty: bool,
    pub mtime: Option<Stamp>,
    pub ctime: Option<Stamp>,
    /// Streamed chunks being sealed and stored in the background, oldest
    /// first. Their bytes are in neither the manifest nor the overlay.
    pub inflight: VecDeque<Arc<Job>>,
    /// Handles open on this inode; the state goes when it reaches zero.
    pub opens: u32,
    /// What of the dirty bytes the store's journal holds.
    journal: Journal,
    /// The access time was brought up to date (relatime) since this state
    /// was loaded or last written: reads need not look again.
    pub atime_fresh: bool,
}

impl FileState {
    /// The open state of `ino`: its manifest, and on top of it the bytes of
    /// any journal records a crash left (they stay journaled until the
    /// next commit cuts them).
    pub fn load(drive: &Drive, ino: u64, size: u64) -> Result<FileState, FsError> {
        let mut st = FileState {
            ino,
            size,
            db_size: size,
            manifest: drive.store.manifest(ino)?,
            overlay: Overlay::counted(drive.dirty.clone()),
            dirty: drive.dirty.clone(),
            removed: Vec::new(),
            meta_dirty: false,
            mtime: None,
            ctime: None,
            inflight: VecDeque::new(),
            opens: 0,
            journal: Journal::default(),
            atime_fresh: false,
        };
        st.replay_journal(drive)?;
        Ok(st)
    }

    pub fn is_dirty(&self) -> bool {
        !self.overlay.is_empty() || self.meta_dirty || self.mtime.is_some()
    }

    pub fn manifest(&self) -> &[ManifestEntry] {
        &self.manifest
    }

    pub fn removed(&self) -> &[ManifestEntry] {
        &self.removed
    }

    /// Bytes of the chunks taken out of the manifest since the last
    /// commit (the store still counts them).
    pub fn removed_bytes(&self) -> u64 {
        self.removed.iter().map(|e| u64::from(e.len)).sum()
    }

    /// Bytes written and not yet in the store (dirty or in flight).
    pub fn uncommitted_bytes(&self) -> u64 {
        (self.overlay.bytes() + self.inflight.iter().map(|j| j.bytes.len()).sum::<usize>()) as u64
    }

    /// Reads up to `len` bytes at `off`. A read inside one chunk with no
    /// dirty bytes over it shares the cached plaintext instead of copying.
    pub fn read(&self, drive: &Drive, off: u64, len: u32) -> Result<ReadOut, FsError> {
        if off >= self.size {
            return Ok(ReadOut::Owned(Vec::new()));
        }
        let end = self.size.min(off + u64::from(len));
        let i = self.manifest.partition_point(|e| e.end() <= off);
        if let Some(e) = self.manifest.get(i).copied() {
            // Sequential readers soon want the next chunks: load them on
            // the other core while this one is served.
            if end > e.offset + u64::from(e.len) / 2 {
                drive.prefetch(&self.manifest[i + 1..self.manifest.len().min(i + 1 + cache::MAX_PREFETCH)]);
            }
            if e.offset <= off && end <= e.end() && !self.overlay.overlaps(off, end) {
                let plain = drive.plaintext(&e)?;
                let range = (off - e.offset) as usize..(end - e.offset) as usize;
                return Ok(ReadOut::Shared(plain, range));
            }
        }
        Ok(ReadOut::Owned(self.materialize(drive, off, end)?))
    }

    /// `SEEK_DATA` (`hole == false`): the first offset at or after `off`
    /// that holds data; `SEEK_HOLE`: the first that does not (the end of
    /// the file counts as a hole). `None` when there is no such offset
    /// (the caller answers ENXIO). Data is what any chunk, streamed job or
    /// dirty range covers, widened to whole blocks (`BLOCK_SIZE`, as
    /// `st_blksize` says) as a disk's holes are: tools probe the block
    /// size that way; the rest are holes that read as zeros.
    pub fn seek(&self, off: u64, hole: bool) -> Option<u64> {
        if off >= self.size {
            return None;
        }
        let mut extents: Vec<(u64, u64)> =
            self.manifest.iter().filter(|e| e.len > 0).map(|e| (e.offset, e.end())).collect();
        extents.extend(self.inflight.iter().map(|j| (j.start, j.end())));
        extents.extend(self.overlay.clusters(0));
        let block = u64::from(super::BLOCK_SIZE);
        for (start, end) in &mut extents {
            *start -= *start % block;
            *end = end.div_ceil(block).saturating_mul(block);
        }
        extents.sort_unstable();
        let mut pos = off;
        for (start, end) in extents {
            let end = end.min(self.size);
            if end <= pos {
                continue;
            }
            if hole {
                if start > pos {
                    return Some(pos);
                }
                pos = end;
            } else {
                return Some(start.max(pos));
            }
        }
        if hole { Some(pos.min(self.size)) } else { None }
    }

    /// The whole chunks of `[off, off + len)` a copy can share by
    /// reference, and where the shared part ends: `None` unless `off` is
    /// not inside a chunk, nothing of the range is dirty or in flight, and
    /// at least one chunk fits. A chunk that crosses the range's end stops
    /// the share there (a short copy); holes in the range stay holes.
    pub fn shareable(&self, off: u64, len: u64) -> Option<(Vec<ManifestEntry>, u64)> {
        let limit = off.checked_add(len)?.min(self.size);
        if off >= limit || self.straddles(off) || !self.inflight.is_empty() || self.overlay.overlaps(off, limit) {
            return None;
        }
        let i = self.manifest.partition_point(|e| e.end() <= off);
        let mut end = limit;
        let mut entries = Vec::new();
        for e in &self.manifest[i..] {
            if e.offset >= limit {
                break;
            }
            if e.end() > limit {
                end = e.offset;
                break;
            }
            entries.push(*e);
        }
        (!entries.is_empty()).then_some((entries, end))
    }

    /// True when the file ends at `off` with nothing uncommitted: a copy
    /// may append shared chunks there.
    pub fn ends_clean_at(&self, off: u64) -> bool {
        self.size == off
            && self.db_size == off
            && !self.is_dirty()
            && self.inflight.is_empty()
            && self.removed.is_empty()
    }

    /// Appends `entries` (another file's chunks, shared by reference) and
    /// grows the file to `size`, in one transaction.
    pub fn append_shared(&mut self, drive: &Drive, entries: &[ManifestEntry], size: u64) -> Result<(), FsError> {
        write_shared(&drive.store, self.ino, entries, size)?;
        self.manifest.extend_from_slice(entries);
        self.size = size;
        self.db_size = size;
        Ok(())
    }

    /// Records a write and commits when the overlay has grown large.
    pub fn write(&mut self, drive: &Drive, off: u64, data: &[u8]) -> Result<WriteOutcome, FsError> {
        let end = off.checked_add(data.len() as u64).ok_or(FsError::TooBig)?;
        if end > super::MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        self.atime_fresh = false;
        self.overlay.insert(off, data);
        self.journal.written(off, end);
        self.size = self.size.max(end);
        let now = Stamp::now();
        self.mtime = Some(now);
        self.ctime = Some(now);
        let threshold = self.commit_threshold(drive);
        if self.crowded() {
            // Memory is short: cut everything now, here, rather than hand
            // more bytes to a committer that is already behind.
            return Ok(WriteOutcome::CommitNow { final_cut: true });
        }
        if self.overlay.bytes() < threshold {
            return Ok(WriteOutcome::Done);
        }
        if !self.journal().is_empty() {
            // Journaled bytes leave the overlay only in a commit of all of them.
            return Ok(WriteOutcome::CommitNow { final_cut: true });
        }
        Ok(match self.split_stream(drive) {
            Some(job) => WriteOutcome::Stream(job),
            None => WriteOutcome::CommitNow { final_cut: false },
        })
    }

    /// When the dirty bytes are one run at the end of the file over no old
    /// chunk (a streaming writer), moves its complete chunks out into a job.
    /// The last chunk stays dirty: its end is only where the writer is.
    fn split_stream(&mut self, drive: &Drive) -> Option<Arc<Job>> {
        // A job's commit takes every pending removal with it, and the
        // dirty edges of a punch that removed a chunk must land with it.
        if !self.removed.is_empty() {
            return None;
        }
        let (start, len) = self.overlay.single_range()?;
        if start + len as u64 != self.size || self.has_old_bytes(start, self.size) {
            return None;
        }
        let lens = drive.chunker.cut_lengths(self.overlay.contiguous(start, self.size)?);
        if lens.len() < 2 {
            return None;
        }
        let complete = &lens[..lens.len() - 1];
        let split: usize = complete.iter().sum();
        let mut bytes = self.overlay.take(start)?;
        let tail = bytes.split_off(split);
        self.overlay.put(start + split as u64, tail);
        self.dirty.fetch_add(bytes.len(), Ordering::Relaxed);
        let job = Arc::new(Job { start, bytes, lens: complete.to_vec() });
        self.inflight.push_back(job.clone());
        Some(job)
    }

    /// Records the outcome of the oldest job: on success its chunks join
    /// the manifest in one transaction; on failure its bytes go back under
    /// the dirty bytes, for the next commit to retry and report.
    pub fn finish_job(&mut self, store: &Store, job: &Job, sealed: Vec<Sealed>, at: &[Option<(u32, u64)>]) {
        if !self.inflight.front().is_some_and(|j| std::ptr::eq(&**j, job)) {
            tracing::error!(ino = self.ino, "background commit out of order; committing synchronously later");
        }
        self.inflight.retain(|j| !std::ptr::eq(&**j, job));
        self.dirty.fetch_sub(job.bytes.len(), Ordering::Relaxed);
        let removed_before = self.removed.len();
        let i = self.manifest.partition_point(|e| e.end() <= job.start);
        let j = self.manifest.partition_point(|e| e.offset < job.end());
        let removed: Vec<ManifestEntry> = self.manifest.splice(i..j, sealed.iter().map(|(e, _)| *e)).collect();
        let undo = [Splice { at: i, added: sealed.len(), removed: removed.clone() }];
        self.removed.extend(removed);
        let db_size = self.db_size.max(job.end()).min(self.size);
        match write_commit(store, self, &sealed, at, db_size) {
            Ok(()) => {
                self.removed.clear();
                self.db_size = db_size;
            }
            Err(e) => {
                tracing::warn!(ino = self.ino, cause = %e, "background commit failed; will retry at flush");
                self.undo_splices(&undo, removed_before);
                let mut merged = job.bytes.clone();
                self.overlay.read_into(job.start, &mut merged);
                self.overlay.insert(job.start, &merged);
            }
        }
    }

    /// Changes the size; a shrink drops the chunks past the end and re-cuts
    /// the one the new end falls in.
    pub fn truncate(&mut self, drive: &Drive, size: u64) -> Result<(), FsError> {
        if size > super::MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        self.atime_fresh = false;
        if size < self.size {
            self.cut_out(drive, size, u64::MAX)?;
        }
        self.size = size;
        self.meta_dirty = true;
        let now = Stamp::now();
        self.mtime = Some(now);
        self.ctime = Some(now);
        self.commit(drive, true)
    }

    /// Makes `[off, end)` a hole (fallocate's punch; the size stays), see
    /// [`FileState::cut_out`]. Callers settle in-flight jobs first.
    ///
    /// The hole is committed with the next flush, like written bytes, or
    /// at once when the dirty bytes have grown as large as a write would
    /// let them: a run of punches through one chunk (`fallocate
    /// --dig-holes`, a VM image's discards) then re-cuts it once, not
    /// once per punch (each re-sealed the rest of its chunk, about 20 ms).
    pub fn punch(&mut self, drive: &Drive, off: u64, end: u64) -> Result<(), FsError> {
        let end = end.min(self.size);
        if off >= end {
            return Ok(());
        }
        self.cut_out(drive, off, end)?;
        self.atime_fresh = false;
        self.meta_dirty = true;
        let now = Stamp::now();
        self.mtime = Some(now);
        self.ctime = Some(now);
        if self.crowded() || self.overlay.bytes() >= self.commit_threshold(drive) {
            return self.commit(drive, true);
        }
        Ok(())
    }

    /// Whether the drive's dirty bytes have outgrown memory and this file
    /// holds enough of them to be worth cutting now.
    fn crowded(&self) -> bool {
        self.dirty.load(Ordering::Relaxed) > DIRTY_TOTAL_MAX && self.overlay.bytes() >= DIRTY_MIN_EARLY
    }

    /// Dirty bytes past which a write or a punch commits: at least a few
    /// maximal chunks, so that a stream always has a complete chunk to
    /// hand over.
    fn commit_threshold(&self, drive: &Drive) -> usize {
        FLUSH_BYTES.max(3 * drive.chunker.sizes().max as usize)
    }

    /// Takes `[off, end)` out of the file's data (a truncate's tail, a
    /// punched hole): dirty bytes there go, chunks wholly inside leave the
    /// manifest (released at the commit), and of a chunk the range cuts only
    /// the bytes outside it stay, as dirty bytes under any newer ones. The
    /// edges are read before anything changes, so a chunk that cannot be
    /// read leaves the state as it was.
    fn cut_out(&mut self, drive: &Drive, off: u64, end: u64) -> Result<(), FsError> {
        let i = self.manifest.partition_point(|e| e.end() <= off);
        let j = self.manifest.partition_point(|e| e.offset < end);
        let mut parts: Vec<(u64, Vec<u8>)> = Vec::new();
        for e in &self.manifest[i..j] {
            if e.offset < off || e.end() > end {
                let plain = drive.plaintext(e)?;
                if e.offset < off {
                    parts.push((e.offset, plain[..(off - e.offset) as usize].to_vec()));
                }
                if e.end() > end {
                    parts.push((end, plain[(end - e.offset) as usize..].to_vec()));
                }
            }
        }
        self.overlay.remove_range(off, end);
        let gone: Vec<ManifestEntry> = self.manifest.splice(i..j, []).collect();
        self.removed.extend(gone);
        for (at, mut bytes) in parts {
            self.overlay.read_into(at, &mut bytes);
            self.overlay.insert(at, &bytes);
        }
        Ok(())
    }

    /// Cuts dirty bytes into chunks and writes them with the manifest and
    /// the inode in one transaction. With `final_cut` false, a last chunk
    /// that ends at the end of the file and holds only new bytes stays
    /// dirty, so a streaming writer is not cut at its buffer boundaries.
    /// A file with journal records always cuts everything: the commit
    /// deletes the records, so no journaled byte may stay behind.
    pub fn commit(&mut self, drive: &Drive, final_cut: bool) -> Result<(), FsError> {
        if !self.is_dirty() {
            return Ok(());
        }
        let final_cut = final_cut || !self.journal().is_empty();
        tracing::debug!(ino = self.ino, final_cut, dirty = self.overlay.bytes(), size = self.size, "commit");
        let max = u64::from(drive.chunker.sizes().max);
        let removed_before = self.removed.len();
        let mut undo: Vec<Splice> = Vec::new();
        let mut sealed_all: Vec<Sealed> = Vec::new();
        let mut committed: Vec<(u64, u64)> = Vec::new();
        let mut covered_to = 0u64;
        let mut cut_all = || -> Result<(), FsError> {
            for (ds, de) in self.overlay.clusters(max) {
                let ds = ds.max(covered_to);
                if ds >= de {
                    continue;
                }
                let (start, end, sealed) = self.recut(drive, ds, de, final_cut, covered_to)?;
                covered_to = end;
                if start == end {
                    continue;
                }
                let i = self.manifest.partition_point(|e| e.end() <= start);
                let j = self.manifest.partition_point(|e| e.offset < end);
                let removed: Vec<ManifestEntry> = self.manifest.splice(i..j, sealed.iter().map(|(e, _)| *e)).collect();
                undo.push(Splice { at: i, added: sealed.len(), removed: removed.clone() });
                self.removed.extend(removed);
                sealed_all.extend(sealed);
                committed.push((start, end));
            }
            Ok(())
        };
        let cut = cut_all();
        let committed_end = self.manifest.last().map_or(0, |e| e.end());
        let new_db_size = if final_cut || self.tail_clean(&committed) {
            self.size
        } else {
            self.db_size.max(committed_end.min(self.size))
        };
        let written = cut.and_then(|()| write_commit(&drive.store, self, &sealed_all, &[], new_db_size));
        if let Err(e) = written {
            self.undo_splices(&undo, removed_before);
            return Err(e);
        }
        self.removed.clear();
        for (start, end) in committed {
            self.overlay.remove_range(start, end);
        }
        self.db_size = new_db_size;
        self.meta_dirty = false;
        if self.overlay.is_empty() {
            self.mtime = None;
            self.ctime = None;
        }
        self.journal.committed(&self.overlay);
        Ok(())
    }

    /// Puts the manifest back as it was before `undo`'s splices (newest
    /// first), without copying the whole list on every commit.
    fn undo_splices(&mut self, undo: &[Splice], removed_before: usize) {
        for u in undo.iter().rev() {
            self.manifest.splice(u.at..u.at + u.added, u.removed.iter().copied());
        }
        self.removed.truncate(removed_before);
    }

    /// True when committing `committed` leaves no dirty bytes behind.
    fn tail_clean(&self, committed: &[(u64, u64)]) -> bool {
        self.overlay.clusters(0).iter().all(|(s, e)| committed.iter().any(|(a, b)| a <= s && e <= b))
    }

    /// Cuts and seals the span around dirty range `[ds, de)`. Returns the
    /// replaced span `[start, end)` and the sealed chunks that now cover it.
    fn recut(
        &self,
        drive: &Drive,
        ds: u64,
        de: u64,
        final_cut: bool,
        floor: u64,
    ) -> Result<(u64, u64, Vec<Sealed>), FsError> {
        let max = u64::from(drive.chunker.sizes().max);
        // Never re-cut chunks this commit has just made (not stored yet).
        let start = self.recut_start(ds).max(floor);
        let mut sealed = Vec::new();
        let mut pos = start;
        // A hole right after the dirty bytes stays a hole: the last chunk
        // ends where they do instead of taking in zeros past them.
        let hole_at = (de < self.size && !self.has_data(de)).then_some(de);
        loop {
            let window_end = self.size.min(de.max(pos) + 2 * max).min(hole_at.unwrap_or(u64::MAX));
            if pos >= window_end {
                return Ok((start, pos, sealed));
            }
            // A streaming writer's bytes are all dirty and contiguous: cut
            // them where they lie instead of copying them into a window.
            let owned;
            let window: &[u8] = match self.overlay.contiguous(pos, window_end) {
                Some(w) if !self.has_old_bytes(pos, window_end) => w,
                _ => {
                    owned = self.materialize(drive, pos, window_end)?;
                    &owned
                }
            };
            let mut cuts: Vec<(u64, usize, usize)> = Vec::new();
            let mut a = pos;
            let mut done = None;
            let mut rewindow = false;
            for len in drive.chunker.cut_lengths(window) {
                let b = a + len as u64;
                if b == window_end && window_end < self.size && hole_at != Some(b) {
                    rewindow = true;
                    break;
                }
                if b == self.size && !final_cut && !self.has_old_bytes(a, b) {
                    done = Some(a);
                    break;
                }
                cuts.push((a, (a - pos) as usize, len));
                a = b;
                if b >= de && !self.straddles(b) {
                    done = Some(b);
                    break;
                }
            }
            sealed.extend(seal_slices(&drive.secret, window, &cuts));
            if let Some(end) = done {
                return Ok((start, end, sealed));
            }
            if !rewindow && a >= window_end {
                return Ok((start, a, sealed));
            }
            pos = a;
        }
    }

    /// Where re-cutting for a write at `ds` begins: the start of the chunk
    /// holding `ds`, or of the chunk just before it (an append re-cuts the
    /// old last chunk, whose end was only the end of the file), or `ds`
    /// itself in a hole.
    fn recut_start(&self, ds: u64) -> u64 {
        let i = self.manifest.partition_point(|e| e.end() <= ds);
        if let Some(e) = self.manifest.get(i).filter(|e| e.offset <= ds) {
            return e.offset;
        }
        if ds > 0 && i > 0 && self.manifest[i - 1].end() == ds {
            return self.manifest[i - 1].offset;
        }
        ds
    }

    /// True when any chunk, streamed job or dirty range holds byte `at`.
    fn has_data(&self, at: u64) -> bool {
        self.has_old_bytes(at, at + 1)
            || self.overlay.overlaps(at, at + 1)
            || self.inflight.iter().any(|j| j.start <= at && at < j.end())
    }

    /// True when an old chunk spans across `at`.
    fn straddles(&self, at: u64) -> bool {
        let i = self.manifest.partition_point(|e| e.end() <= at);
        self.manifest.get(i).is_some_and(|e| e.offset < at)
    }

    /// True when old chunks hold any byte of `[a, b)`.
    fn has_old_bytes(&self, a: u64, b: u64) -> bool {
        let i = self.manifest.partition_point(|e| e.end() <= a);
        self.manifest.get(i).is_some_and(|e| e.offset < b)
    }

    /// The file's bytes in `[off, end)`: old chunks, then dirty bytes on
    /// top; holes read as zeros.
    fn materialize(&self, drive: &Drive, off: u64, end: u64) -> Result<Vec<u8>, FsError> {
        // Built by appending, chunk after chunk in file order, so only the
        // holes between them are zeroed (a read across a chunk boundary is
        // the common case of a sequential reader).
        let len = (end - off) as usize;
        let mut buf = Vec::with_capacity(len);
        let i = self.manifest.partition_point(|e| e.end() <= off);
        let j = self.manifest.partition_point(|e| e.offset < end);
        for k in i..j {
            let e = self.manifest[k];
            if e.len == 0 {
                continue;
            }
            let plain = drive.plaintext(&e)?;
            let a = e.offset.max(off);
            let b = e.end().min(end);
            buf.resize((a - off) as usize, 0);
            buf.extend_from_slice(&plain[(a - e.offset) as usize..(b - e.offset) as usize]);
        }
        buf.resize(len, 0);
        for job in &self.inflight {
            let a = job.start.max(off);
            let b = job.end().min(end);
            if a < b {
                buf[(a - off) as usize..(b - off) as usize]
                    .copy_from_slice(&job.bytes[(a - job.start) as usize..(b - job.start) as usize]);
            }
        }
        self.overlay.read_into(off, &mut buf);
        Ok(buf)
    }
}

/// What a read returns: bytes of its own, or a range of a cached chunk.
pub enum ReadOut {
    Owned(Vec<u8>),
    Shared(Arc<Vec<u8>>, std::ops::Range<usize>),
}

impl ReadOut {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ReadOut::Owned(v) => v,
            ReadOut::Shared(p, r) => &p[r.clone()],
        }
    }
}
