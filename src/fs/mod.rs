//! The drive: POSIX file system logic over the store, and its FUSE adapter.
//!
//! [`Drive`] holds the logic and is usable without a mount (tests call it
//! directly); [`fuse::PactFs`] is the thin fuser adapter that turns kernel
//! requests into `Drive` calls and `FsError`s into errnos. Namespace
//! operations live in `namespace.rs`, file contents in `data.rs`, sealing
//! and storing them in `commit.rs`.
//!
//! Locking order, outer to inner: the open-file table, one file's state,
//! the store's writer lock. Nothing here talks to the network: chunks come
//! from the store (later through the market agent's handle).

mod cache;
mod chunks;
mod commit;
mod data;
pub mod durability;
pub mod fuse;
mod loaders;
pub mod mount_flags;
mod namespace;
mod overlay;
pub mod remote;

pub use data::{DIRTY_TOTAL_MAX, FLUSH_BYTES, ReadOut};
pub use durability::{Durability, Offline};
pub use remote::Remote;

use crate::chunk::{ChunkError, ChunkSizes, Chunker, ManifestEntry, UserSecret};
use crate::lock;
use crate::store::{Inode, Kind, Store, StoreError};
use commit::{seal_slices, spawn_committer};
use data::{FileState, Job, WriteOutcome};
use mount_flags::AtimeRule;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, mpsc};

/// Background jobs one file may have in flight before its writer waits:
/// bounds the memory a fast writer can pile up ahead of the store.
const MAX_INFLIGHT: usize = 2;

/// Largest file the drive accepts (the kernel's own limit for FUSE files).
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;
/// Longest name in a directory.
pub const NAME_MAX: usize = 255;
/// Block size reported to `stat` and `statfs`.
pub const BLOCK_SIZE: u32 = 4096;

/// A failed file system operation, as the caller can act on it.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid argument")]
    Invalid,
    #[error("name too long")]
    NameTooLong,
    #[error("no such attribute")]
    NoAttr,
    #[error("result does not fit the buffer")]
    Range,
    #[error("attribute value too large")]
    AttrTooBig,
    #[error("file too large")]
    TooBig,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("bad file handle")]
    BadHandle,
    #[error("too many links")]
    TooManyLinks,
    #[error("operation not supported")]
    NotSupported,
    #[error("no space left on the drive")]
    NoSpace,
    /// The bytes of a chunk failed verification: never served.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A chunk not cached locally that no holder could serve.
    #[error("chunk unavailable: {0}")]
    Unavailable(String),
}

impl FsError {
    /// The errno the kernel passes on to the application.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::Invalid => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::NoAttr => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::AttrTooBig => libc::E2BIG,
            FsError::TooBig => libc::EFBIG,
            FsError::NotPermitted => libc::EPERM,
            FsError::BadHandle => libc::EBADF,
            FsError::TooManyLinks => libc::EMLINK,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::NoSpace => libc::ENOSPC,
            FsError::Chunk(_) | FsError::Unavailable(_) => libc::EIO,
            FsError::Store(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// Who asks: new inodes are owned by the caller.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The calling process (0: none known), for its supplementary groups.
    pub pid: u32,
}

/// What `statfs` reports, in blocks of [`BLOCK_SIZE`].
#[derive(Clone, Copy, Debug)]
pub struct FsStats {
    pub blocks: u64,
    pub blocks_free: u64,
    pub files: u64,
    pub files_free: u64,
}

/// One entry of a directory listing.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: Kind,
}

/// One open inode: its state, and a signal for "no job in flight".
struct FileCell {
    state: Mutex<FileState>,
    idle: Condvar,
}

type JobQueue = mpsc::Sender<(Arc<FileCell>, Arc<Job>)>;

enum Handle {
    /// An open file: its cell, shared with every other handle of the inode.
    File { ino: u64, cell: Arc<FileCell> },
    /// An open directory; its listing as the last read from offset 0
    /// took it.
    Dir { ino: u64, entries: Option<Arc<Vec<DirEntry>>> },
}

/// The drive's logic: everything FUSE asks, answered from the store.
pub struct Drive {
    pub(crate) store: Arc<Store>,
    pub(crate) secret: UserSecret,
    pub(crate) chunker: Chunker,
    capacity: u64,
    cache: Arc<cache::PlainCache>,
    /// The threads that load chunks ahead of sequential readers.
    loaders: Arc<loaders::Loaders>,
    /// Dirty and in-flight bytes of all open files (see `DIRTY_TOTAL_MAX`).
    dirty: Arc<std::sync::atomic::AtomicUsize>,
    open_files: Mutex<HashMap<u64, Arc<FileCell>>>,
    handles: Mutex<HashMap<u64, Handle>>,
    /// Directories removed (rmdir, or replaced by a rename) as the kernel
    /// last saw them, link count 0, until it forgets them: an open
    /// descriptor or a working directory still `fstat`s them, as on a
    /// local disk. In memory only: a directory holds no data.
    dead_dirs: Mutex<HashMap<u64, Inode>>,
    next_fh: AtomicU64,
    /// The background committer of streaming writes; `None` if its thread
    /// could not start (writes then commit in the foreground).
    jobs: Option<JobQueue>,
    committer: Option<std::thread::JoinHandle<()>>,
    /// Answers the `user.pactfs.*` attributes; [`Offline`] until the node
    /// hands over its network's handle.
    durability: RwLock<Arc<dyn Durability>>,
    /// Fetches chunks not cached locally; `None` without a network.
    remote: RwLock<Option<Arc<dyn Remote>>>,
    /// The kernel's flags for the mount, once mounted (see
    /// [`Drive::follow_mount`]); relatime and read-write without.
    mount_flags: std::sync::OnceLock<mount_flags::MountFlags>,
}

impl Drop for Drive {
    /// Closing the queue ends the committer after its last job; waiting for
    /// it means the store is no longer shared once the drive is gone. The
    /// loaders end after the loads they run (not waited for: a fetch may
    /// take its whole deadline).
    fn drop(&mut self) {
        self.loaders.close();
        self.jobs = None;
        if let Some(h) = self.committer.take() {
            let _ = h.join();
        }
    }
}

impl Drive {
    pub fn new(store: Arc<Store>, secret: UserSecret, sizes: ChunkSizes, capacity: u64) -> Drive {
        let (jobs, committer) = match spawn_committer(store.clone(), secret.clone()) {
            Some((q, h)) => (Some(q), Some(h)),
            None => (None, None),
        };
        Drive {
            jobs,
            committer,
            store,
            secret,
            chunker: Chunker::new(sizes),
            capacity,
            cache: Arc::new(cache::PlainCache::default()),
            loaders: Arc::default(),
            dirty: Arc::default(),
            open_files: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            dead_dirs: Mutex::new(HashMap::new()),
            mount_flags: std::sync::OnceLock::new(),
            next_fh: AtomicU64::new(1),
            durability: RwLock::new(Arc::new(Offline::default())),
            remote: RwLock::new(None),
        }
    }

    /// Gives the drive what it reports in the `user.pactfs.*` attributes
    /// (the node's handle over its store and market agent).
    pub fn set_durability(&self, handle: Arc<dyn Durability>) {
        *self.durability.write().unwrap_or_else(|p| p.into_inner()) = handle;
    }

    /// Gives the drive a way to fetch chunks that are not cached locally.
    pub fn set_remote(&self, remote: Arc<dyn Remote>) {
        *self.remote.write().unwrap_or_else(|p| p.into_inner()) = Some(remote);
    }

    /// Follows the flags the kernel keeps for the mount whose source is
    /// `source` (its fsname): `ro`, `noatime`, `strictatime` and
    /// `nodiratime` then decide when reads write the access time, also
    /// after a remount.
    pub fn follow_mount(&self, source: String) {
        let _ = self.mount_flags.set(mount_flags::MountFlags::new(source));
    }

    /// When a read (`dir` false) or a listing writes the access time.
    fn atime_rule(&self, dir: bool) -> AtimeRule {
        self.mount_flags.get().map_or(AtimeRule::Relative, |m| m.get().atime_rule(dir))
    }

    /// Whether a file's pages may stay in the kernel's cache across opens
    /// (they are dropped when its mtime moves): not under `strictatime`,
    /// where every read must reach the drive to count.
    pub fn keeps_page_cache(&self) -> bool {
        self.atime_rule(false) != AtimeRule::Strict
    }

    fn remote(&self) -> Option<Arc<dyn Remote>> {
        self.remote.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn durability(&self) -> Arc<dyn Durability> {
        self.durability.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Bytes written to open files and not yet in the store.
    pub fn dirty_bytes(&self) -> usize {
        self.dirty.load(Ordering::Relaxed)
    }

    /// The attributes of `ino`, with the live size and times of an open file.
    pub fn getattr(&self, ino: u64) -> Result<Inode, FsError> {
        // The open state first: a last close holds the table while it
        // writes the final size, so a state that is gone by now has left
        // the store up to date, and one that is still here is the truth.
        let open = self.open_state(ino);
        let Some(mut inode) = self.store.inode(ino)? else {
            return lock(&self.dead_dirs).get(&ino).cloned().ok_or(FsError::NotFound);
        };
        if let Some(cell) = open {
            let st = lock(&cell.state);
            inode.size = st.size;
            // Bytes not cut yet will be covered once they are; chunks a
            // punch took out are gone already.
            inode.allocated =
                (inode.allocated + st.uncommitted_bytes()).saturating_sub(st.removed_bytes()).min(st.size);
            if let Some(m) = st.mtime {
                inode.mtime = m;
            }
            if let Some(c) = st.ctime {
                inode.ctime = c;
            }
        }
        Ok(inode)
    }

    pub fn statfs(&self) -> FsStats {
        let bs = u64::from(BLOCK_SIZE);
        let blocks = self.capacity / bs;
        let used = self.store.used_bytes().div_ceil(bs);
        FsStats {
            blocks,
            blocks_free: blocks.saturating_sub(used),
            files: u32::MAX as u64,
            files_free: u32::MAX as u64,
        }
    }

    fn open_state(&self, ino: u64) -> Option<Arc<FileCell>> {
        lock(&self.open_files).get(&ino).cloned()
    }

    /// Locks a file's state once no background job of it is in flight.
    fn settle<'a>(&self, cell: &'a FileCell) -> MutexGuard<'a, FileState> {
        let mut st = lock(&cell.state);
        while !st.inflight.is_empty() {
            st = cell.idle.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st
    }

    fn new_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, h);
        fh
    }

    fn file_of(&self, fh: u64) -> Result<Arc<FileCell>, FsError> {
        match lock(&self.handles).get(&fh) {
            Some(Handle::File { cell, .. }) => Ok(cell.clone()),
            _ => Err(FsError::BadHandle),
        }
    }

    /// Opens a file, returning a handle. (O_TRUNC reaches us as a separate
    /// setattr: FUSE_ATOMIC_O_TRUNC is not negotiated.)
    pub fn open(&self, ino: u64) -> Result<u64, FsError> {
        // The inode is read under the table's lock: a last close of the
        // same file may be writing its final size right now.
        let mut files = lock(&self.open_files);
        let inode = self.store.inode(ino)?.ok_or(FsError::NotFound)?;
        match inode.kind {
            Kind::Dir => return Err(FsError::IsDir),
            Kind::File => {}
            _ => return Err(FsError::Invalid),
        }
        let cell = match files.get(&ino) {
            Some(c) => c.clone(),
            None => {
                let state = Mutex::new(FileState::load(self, ino, inode.size)?);
                let c = Arc::new(FileCell { state, idle: Condvar::new() });
                files.insert(ino, c.clone());
                c
            }
        };
        lock(&cell.state).opens += 1;
        drop(files);
        Ok(self.new_handle(Handle::File { ino, cell }))
    }

    pub fn read(&self, fh: u64, off: u64, len: u32) -> Result<ReadOut, FsError> {
        let cell = self.file_of(fh)?;
        let mut st = lock(&cell.state);
        let out = st.read(self, off, len)?;
        if !st.atime_fresh {
            // Under strictatime every read counts: never fresh.
            st.atime_fresh = self.atime_rule(false) != AtimeRule::Strict;
            let modified = st.mtime.into_iter().chain(st.ctime).max();
            // The bytes were read: a full disk or a failed write of the
            // time must not fail the read.
            if let Err(e) = self.touch_atime(st.ino, None, modified) {
                tracing::debug!(ino = st.ino, cause = %e, "access time not updated");
            }
        }
        Ok(out)
    }

    /// `lseek(2)` with `SEEK_DATA` or `SEEK_HOLE` (see [`FileState::seek`]).
    pub fn seek(&self, fh: u64, off: u64, hole: bool) -> Result<Option<u64>, FsError> {
        let cell = self.file_of(fh)?;
        let st = lock(&cell.state);
        Ok(st.seek(off, hole))
    }

    /// Records a write. A streaming writer's complete chunks are sealed and
    /// stored in the background while it goes on writing.
    pub fn write(&self, fh: u64, off: u64, data: &[u8]) -> Result<u32, FsError> {
        let cell = self.file_of(fh)?;
        let mut st = lock(&cell.state);
        while st.inflight.len() >= MAX_INFLIGHT {
            st = cell.idle.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        match st.write(self, off, data)? {
            WriteOutcome::Done => {}
            WriteOutcome::Stream(job) => {
                let queued = self.jobs.as_ref().is_some_and(|q| q.send((cell.clone(), job.clone())).is_ok());
                if !queued {
                    // No committer: do its work here.
                    let sealed = seal_slices(&self.secret, &job.bytes, &job.cuts());
                    st.finish_job(&self.store, &job, sealed, &[]);
                }
            }
            WriteOutcome::CommitNow { final_cut } => {
                drop(st);
                self.settle(&cell).commit(self, final_cut)?;
            }
        }
        Ok(data.len() as u32)
    }

    /// copy_file_range(2): up to `len` bytes from one open file to another
    /// (or another place in the same one), a block at a time; stops early
    /// at the end of the source. Returns the bytes copied.
    pub fn copy_range(&self, fh_in: u64, off_in: u64, fh_out: u64, off_out: u64, len: u64) -> Result<u64, FsError> {
        if let Some(n) = self.share_range(fh_in, off_in, fh_out, off_out, len)? {
            return Ok(n);
        }
        const BLOCK: u64 = 1024 * 1024;
        let mut done = 0;
        while done < len {
            let want = (len - done).min(BLOCK) as u32;
            let data = self.read(fh_in, off_in + done, want)?;
            let bytes = data.as_slice();
            if bytes.is_empty() {
                break;
            }
            self.write(fh_out, off_out + done, bytes)?;
            done += bytes.len() as u64;
        }
        Ok(done)
    }

    /// The fast form of [`Drive::copy_range`]: when the destination ends
    /// exactly where the copy goes, at the source's offset, and that offset
    /// is a chunk boundary of the source, the source's whole chunks are
    /// shared by reference (as a whole-file `cp` into a new file asks).
    /// `None` when the copy must move bytes.
    fn share_range(
        &self,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> Result<Option<u64>, FsError> {
        if off_in != off_out {
            return Ok(None);
        }
        let (src, dst) = (self.file_of(fh_in)?, self.file_of(fh_out)?);
        if Arc::ptr_eq(&src, &dst) {
            return Ok(None);
        }
        // Both files stay locked until the destination's transaction is
        // written, so no change to the source can release a chunk first;
        // locking in inode order keeps two opposite copies from deadlocking.
        let src_ino = lock(&src.state).ino;
        let dst_ino = lock(&dst.state).ino;
        let src_first = src_ino < dst_ino;
        let (mut s, mut d) = if src_first {
            let s = self.settle(&src);
            (s, self.settle(&dst))
        } else {
            let d = self.settle(&dst);
            (self.settle(&src), d)
        };
        if s.is_dirty() {
            s.commit(self, true)?;
        }
        if !d.ends_clean_at(off_out) {
            return Ok(None);
        }
        let Some((entries, end)) = s.shareable(off_in, len) else { return Ok(None) };
        d.append_shared(self, &entries, end)?;
        Ok(Some(end - off_in))
    }

    /// fallocate's punch: `off..end` becomes a hole that reads as zeros
    /// (see [`FileState::punch`]).
    pub fn punch(&self, fh: u64, off: u64, end: u64) -> Result<(), FsError> {
        let cell = self.file_of(fh)?;
        self.settle(&cell).punch(self, off, end)
    }

    /// Writes zeros over `off..end` (fallocate's zero-range mode), a
    /// block at a time so that a large range never sits in memory at once.
    pub fn write_zeros(&self, fh: u64, off: u64, end: u64) -> Result<(), FsError> {
        const BLOCK: usize = 1024 * 1024;
        let zeros = vec![0u8; BLOCK];
        let mut at = off;
        while at < end {
            let n = usize::try_from(end - at).map_or(BLOCK, |left| left.min(BLOCK));
            self.write(fh, at, &zeros[..n])?;
            at += n as u64;
        }
        Ok(())
    }

    /// Cuts and indexes what was written through any handle of the file,
    /// so that errors show at close(2). A streaming writer's last chunk may
    /// stay dirty until the last close or an fsync: every process that
    /// forks while the file is open sends a flush when its copy of the
    /// descriptor closes, and cutting there would re-cut that chunk later.
    ///
    /// A file with a journal (one that is fsynced in place, a database)
    /// adds to its journal instead: every fork of a process holding it
    /// open would otherwise re-cut what the journal spared.
    pub fn flush(&self, fh: u64) -> Result<(), FsError> {
        let cell = self.file_of(fh)?;
        let mut st = self.settle(&cell);
        if !st.journal().is_empty() && st.journal_sync(self)? {
            return Ok(());
        }
        st.commit(self, false)
    }

    /// Makes everything written durable: as a journal record when a commit
    /// would re-cut much more than was written (a page in a database),
    /// otherwise by cutting and indexing it.
    pub fn fsync(&self, fh: u64) -> Result<(), FsError> {
        let cell = self.file_of(fh)?;
        {
            let mut st = self.settle(&cell);
            if st.journal_sync(self)? {
                return Ok(());
            }
            st.commit(self, true)?;
        }
        self.store.sync()?;
        Ok(())
    }

    /// Commits the open files whose journal records are `min_age` old or
    /// older, so that their bytes become chunks and get placed. Returns how
    /// many it committed; a file that fails (a chunk it needs is on no
    /// reachable provider) keeps its journal and is tried next time.
    pub fn fold_journals(&self, min_age: std::time::Duration) -> usize {
        let cells: Vec<_> = lock(&self.open_files).values().cloned().collect();
        let mut folded = 0;
        for cell in cells {
            let mut st = self.settle(&cell);
            if st.journal_age().is_some_and(|age| age >= min_age) {
                match st.commit(self, true) {
                    Ok(()) => folded += 1,
                    Err(e) => {
                        tracing::warn!(ino = st.ino, cause = %e, "cutting journaled bytes failed; they stay journaled")
                    }
                }
            }
        }
        folded
    }

    /// Cuts the journal records a crash left into their files' chunks, and
    /// drops those of files that are gone; run before the drive serves.
    /// Returns the files cut. One that fails (a chunk to re-cut was
    /// evicted and no provider answers yet) keeps its records: opening it
    /// replays them, and its next commit cuts them.
    pub fn recover_journals(&self) -> Result<usize, StoreError> {
        let mut recovered = 0;
        for ino in self.store.journaled_inodes()? {
            let cut = match self.store.inode(ino)? {
                Some(i) if i.nlink > 0 && i.kind == Kind::File => self.with_state(ino, |st| st.commit(self, true)),
                _ => self.store.drop_journal(ino).map_err(FsError::from),
            };
            match cut {
                Ok(()) => recovered += 1,
                Err(e) => tracing::warn!(ino, cause = %e, "journaled writes left by a crash stay journaled for now"),
            }
        }
        Ok(recovered)
    }

    /// Makes every committed change durable (directory entries included).
    pub fn sync_all(&self) -> Result<(), FsError> {
        let cells: Vec<_> = lock(&self.open_files).values().cloned().collect();
        for cell in cells {
            self.settle(&cell).commit(self, true)?;
        }
        self.store.sync()?;
        Ok(())
    }

    pub fn release(&self, fh: u64) -> Result<(), FsError> {
        let h = lock(&self.handles).remove(&fh);
        match h {
            Some(Handle::File { ino, .. }) => self.close_state(ino),
            Some(Handle::Dir { .. }) => Ok(()),
            None => Err(FsError::BadHandle),
        }
    }

    /// Drops one open of `ino`; the last one commits and, for a file
    /// unlinked while open, deletes it.
    fn close_state(&self, ino: u64) -> Result<(), FsError> {
        let mut files = lock(&self.open_files);
        let Some(cell) = files.get(&ino).cloned() else { return Ok(()) };
        let mut st = self.settle(&cell);
        st.opens = st.opens.saturating_sub(1);
        if st.opens > 0 {
            return Ok(());
        }
        // A file whose last name went while it was open goes now.
        let orphan = self.store.inode(ino)?.is_none_or(|i| i.nlink == 0);
        let result = if orphan { self.delete_inode(ino, st.manifest()) } else { st.commit(self, true) };
        drop(st);
        files.remove(&ino);
        result
    }

    /// Removes an inode and releases its chunks, in one transaction.
    fn delete_inode(&self, ino: u64, manifest: &[ManifestEntry]) -> Result<(), FsError> {
        let mut txn = self.store.begin();
        for e in manifest {
            txn.ref_chunk(&e.id, -1);
        }
        txn.delete_inode(ino)?;
        txn.commit(false)?;
        Ok(())
    }

    /// Runs `f` on the open state of `ino`, opening it for the call if no
    /// handle has it open (truncate by path, say).
    fn with_state<R>(&self, ino: u64, f: impl FnOnce(&mut FileState) -> Result<R, FsError>) -> Result<R, FsError> {
        let fh = self.open(ino)?;
        let result = match self.file_of(fh) {
            Ok(cell) => f(&mut self.settle(&cell)),
            Err(e) => Err(e),
        };
        let closed = self.release(fh);
        let r = result?;
        closed?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_journal;
