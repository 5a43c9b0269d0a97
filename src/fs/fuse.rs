//! The fuser adapter: kernel requests in, [`Drive`] calls, replies out.
//!
//! Nothing here decides anything: it converts types, maps [`FsError`] to an
//! errno in one place ([`errno`]), and picks the kernel cache timeouts.

use super::namespace::{SetAttr, SetTime};
use super::{BLOCK_SIZE, Caller, Drive, FsError, NAME_MAX};
use crate::store::{Inode, Kind};
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long the kernel may cache attributes and names. Every change goes
/// through this mount and the kernel invalidates what its own operations
/// touch (a write the size and times, a link or unlink the inode, a create
/// the parent), and nothing in the node changes a name or an attribute
/// behind its back; so the timeout only bounds how often a tree is looked
/// up again. At 1 s, a `git status` of 2000 files run a few seconds after
/// the last took 0.08-0.11 s; at 60 s, 0.03 s (no lookup, no getattr).
const TTL: Duration = Duration::from_secs(60);
/// Largest write the kernel may send in one request: big writes cost a
/// tenth of the CPU of 4 KiB ones.
const MAX_WRITE: u32 = 1024 * 1024;
/// Most bytes one copy_file_range call copies.
const COPY_MAX: u64 = 1 << 30;

/// The mounted file system: a thin shell over a shared [`Drive`].
pub struct PactFs {
    drive: Arc<Drive>,
}

impl PactFs {
    pub fn new(drive: Arc<Drive>) -> PactFs {
        PactFs { drive }
    }
}

fn errno(e: &FsError) -> Errno {
    if let FsError::Store(err) = e {
        tracing::error!(cause = %err, "store error");
    }
    Errno::from_i32(e.errno())
}

fn caller(req: &Request) -> Caller {
    Caller { uid: req.uid(), gid: req.gid(), pid: req.pid() }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

fn attr(i: &Inode) -> FileAttr {
    let bs = u64::from(BLOCK_SIZE);
    FileAttr {
        ino: INodeNo(i.ino),
        size: i.size,
        blocks: if i.kind == Kind::File { i.allocated } else { i.size }.div_ceil(bs) * (bs / 512),
        atime: i.atime.into(),
        mtime: i.mtime.into(),
        ctime: i.ctime.into(),
        crtime: i.crtime.into(),
        kind: file_type(i.kind),
        perm: i.perm,
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        rdev: i.rdev,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

/// The attributes sent with a negative entry; the kernel reads only the
/// node id (0) and the timeout.
fn negative_attr() -> FileAttr {
    let epoch = std::time::UNIX_EPOCH;
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: epoch,
        mtime: epoch,
        ctime: epoch,
        crtime: epoch,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::SpecificTime(t) => SetTime::At(undo_fuser_pre_epoch(t)),
        TimeOrNow::Now => SetTime::Now,
    })
}

/// The time the kernel sent, from what fuser 0.18 made of it. The kernel
/// gives (seconds, nanoseconds) with the nanoseconds counted forward, so
/// 1969-12-31 23:59:58.25 is (-2, 250000000); fuser subtracts both from
/// the epoch (its `system_time_from_time`, marked TODO there) and hands
/// over 23:59:57.75. Every time it hands over before the epoch came from
/// whole negative seconds, so the two parts separate again: `-s - n`
/// is really `-s + n`. Later times are converted correctly.
/// (`vfs::times_before_1970_keep_their_fraction` fails if fuser changes.)
fn undo_fuser_pre_epoch(t: std::time::SystemTime) -> std::time::SystemTime {
    use std::time::{Duration, UNIX_EPOCH};
    match UNIX_EPOCH.duration_since(t) {
        Ok(before) if before.subsec_nanos() != 0 => UNIX_EPOCH
            .checked_sub(Duration::from_secs(before.as_secs()))
            .and_then(|whole| whole.checked_add(Duration::from_nanos(u64::from(before.subsec_nanos()))))
            .unwrap_or(t),
        _ => t,
    }
}

fn reply_entry(reply: ReplyEntry, r: Result<Inode, FsError>) {
    match r {
        Ok(i) => reply.entry(&TTL, &attr(&i), Generation(0)),
        Err(e) => reply.error(errno(&e)),
    }
}

fn open_flags(drive: &Drive) -> FopenFlags {
    if drive.keeps_page_cache() { FopenFlags::FOPEN_KEEP_CACHE } else { FopenFlags::empty() }
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), FsError>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, r: Result<Vec<u8>, FsError>) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(&e)),
    }
}

impl Filesystem for PactFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(max);
        }
        if let Err(max) = config.set_max_readahead(MAX_WRITE) {
            let _ = config.set_max_readahead(max);
        }
        // EXPORT_SUPPORT: file handles (open_by_handle_at, NFS) outlive the
        // kernel's cache and remounts, since an inode number is never
        // handed out twice; the kernel finds them again by "." and "..".
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_EXPORT_SUPPORT,
        ] {
            let _ = config.add_capabilities(flag);
        }
        // HANDLE_KILLPRIV_V2: the kernel stops asking for security.capability
        // before every write (a round trip each, which halved the rate of
        // small writes) and leaves dropping set-user-ID and capabilities on
        // write, truncate and chown to us (Drive::drop_privs). Linux's bit
        // only: macFUSE gives bit 28 another meaning.
        #[cfg(target_os = "linux")]
        let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.drive.sync_all() {
            tracing::error!(cause = %e, "final sync failed");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.drive.lookup(parent.0, name.as_bytes()) {
            // A negative entry (node 0) the kernel may cache like a
            // positive one: every later create goes through this mount and
            // replaces it, and tools probe for missing names a lot.
            Err(FsError::NotFound) => reply.entry(&TTL, &negative_attr(), Generation(0)),
            r => reply_entry(reply, r),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, _nlookup: u64) {
        self.drive.forget(ino.0);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.drive.getattr(ino.0) {
            Ok(i) => reply.attr(&TTL, &attr(&i)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // The kernel's request to drop privileges (FATTR_KILL_SUIDGID) does
        // not reach us through fuser. It comes with every chown; with a
        // truncate by someone without CAP_FSETID (taken as anyone but
        // root); and, for their other writes (fallocate, a copy into the
        // file), as a setattr that changes nothing else. From root such a
        // setattr follows the kernel's own removal of file capabilities,
        // which leaves set-user-ID alone.
        let chown = uid.is_some() || gid.is_some();
        let nothing_else = mode.is_none() && !chown && size.is_none() && atime.is_none() && mtime.is_none();
        let unprivileged = req.uid() != 0;
        let drop_privs = (chown || (unprivileged && (size.is_some() || nothing_else))).then(|| caller(req));
        let set = SetAttr { mode, uid, gid, size, atime: set_time(atime), mtime: set_time(mtime), drop_privs };
        match self.drive.setattr(ino.0, set) {
            Ok(i) => reply.attr(&TTL, &attr(&i)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.drive.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => Kind::File,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            _ => return reply.error(Errno::EINVAL),
        };
        reply_entry(reply, self.drive.mknod(caller(req), parent.0, name.as_bytes(), kind, mode, rdev));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        reply_entry(reply, self.drive.mkdir(caller(req), parent.0, name.as_bytes(), mode));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.drive.unlink(parent.0, name.as_bytes()));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.drive.rmdir(parent.0, name.as_bytes()));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        reply_entry(
            reply,
            self.drive.symlink(caller(req), parent.0, link_name.as_bytes(), target.as_os_str().as_bytes()),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.drive.rename(parent.0, name.as_bytes(), newparent.0, newname.as_bytes(), flags.bits()));
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.drive.link(ino.0, newparent.0, newname.as_bytes()));
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.drive.open(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), open_flags(&self.drive)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.drive.read(fh.0, offset, size) {
            Ok(bytes) => reply.data(bytes.as_slice()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        tracing::trace!(fh = fh.0, offset, len = data.len(), "write");
        // Set by the kernel when the writer lacks CAP_FSETID (HANDLE_KILLPRIV_V2).
        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID)
            && let Err(e) = self.drive.drop_privs(ino.0, caller(req))
        {
            return reply.error(errno(&e));
        }
        match self.drive.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        tracing::debug!(fh = fh.0, "flush");
        reply_empty(reply, self.drive.flush(fh.0));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.drive.release(fh.0));
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply_empty(reply, self.drive.fsync(fh.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.drive.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = match self.drive.dir_entries(fh.0, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino), i as u64 + 1, file_type(e.kind), OsStr::from_bytes(&e.name)) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let entries = match self.drive.dir_entries(fh.0, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            // An entry removed since opendir is skipped, not an error.
            let Ok(inode) = self.drive.getattr(e.ino) else { continue };
            if reply.add(INodeNo(e.ino), i as u64 + 1, OsStr::from_bytes(&e.name), &TTL, &attr(&inode), Generation(0)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        reply_empty(reply, self.drive.release(fh.0));
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply_empty(reply, self.drive.store().sync().map_err(FsError::from));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.drive.statfs();
        reply.statfs(
            s.blocks,
            s.blocks_free,
            s.blocks_free,
            s.files,
            s.files_free,
            BLOCK_SIZE,
            NAME_MAX as u32,
            BLOCK_SIZE,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.drive.setxattr(ino.0, name.as_bytes(), value, flags));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, size, self.drive.getxattr(ino.0, name.as_bytes()));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, size, self.drive.listxattr(ino.0));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.drive.removexattr(ino.0, name.as_bytes()));
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        // Only reached without `default_permissions`; mirror the kernel's check.
        let r = self.drive.getattr(ino.0).and_then(|i| {
            if req.uid() == 0 || mask.is_empty() {
                return Ok(());
            }
            let bits = if req.uid() == i.uid {
                (i.perm >> 6) & 7
            } else if req.gid() == i.gid {
                (i.perm >> 3) & 7
            } else {
                i.perm & 7
            };
            let want = (mask.bits() & 7) as u16;
            if bits & want == want { Ok(()) } else { Err(FsError::NotPermitted) }
        });
        match r {
            Ok(()) => reply.ok(),
            Err(FsError::NotPermitted) => reply.error(Errno::EACCES),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.drive.create(caller(req), parent.0, name.as_bytes(), mode) {
            Ok((i, fh)) => reply.created(&TTL, &attr(&i), Generation(0), FileHandle(fh), open_flags(&self.drive)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Copies inside the drive: no round trip through the kernel per
    /// block. The kernel has already refused overlapping ranges of one file.
    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // The reply counts bytes in 32 bits; a shorter copy is a valid
        // answer and the caller asks again for the rest.
        let len = len.min(COPY_MAX);
        match self.drive.copy_range(fh_in.0, offset_in, fh_out.0, offset_out, len) {
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// No ioctl is understood (inode flags, FICLONE): ENOTTY, as a local
    /// file system answers an ioctl it does not know, so tools fall back
    /// quietly.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        tracing::trace!(cmd, "ioctl refused");
        reply.error(Errno::ENOTTY);
    }

    /// Only `SEEK_DATA` and `SEEK_HOLE` reach the file system; the kernel
    /// answers the other forms itself.
    fn lseek(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        let hole = match whence {
            libc::SEEK_DATA => false,
            libc::SEEK_HOLE => true,
            _ => return reply.error(Errno::EINVAL),
        };
        let Ok(off) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        match self.drive.seek(fh.0, off, hole) {
            // Sizes stay below MAX_FILE_SIZE, far inside i64.
            Ok(Some(at)) => reply.offset(i64::try_from(at).unwrap_or(i64::MAX)),
            Ok(None) => reply.error(Errno::ENXIO),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Space is not reserved ahead (chunks are content-addressed and
        // deduplicated, so zeros cost almost nothing): preallocation only
        // sets the size, a punched range becomes a hole and a zeroed one
        // is written with zeros. A range larger than the free space is
        // refused (ENOSPC), since writing it could never succeed.
        const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE;
        const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
        let supported = mode == 0 || mode == KEEP || mode == PUNCH | KEEP || mode == ZERO || mode == ZERO | KEEP;
        if !supported {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let r = self.drive.getattr(ino.0).and_then(|i| {
            let end = offset.checked_add(length).ok_or(FsError::TooBig)?;
            let keep = mode & KEEP != 0;
            let free = self.drive.statfs().blocks_free.saturating_mul(u64::from(BLOCK_SIZE));
            if mode & PUNCH == 0 && length.saturating_sub(i.allocated) > free {
                return Err(FsError::NoSpace);
            }
            if mode & PUNCH != 0 {
                self.drive.punch(fh.0, offset, end)?;
            } else if mode & ZERO != 0 {
                let zero_end = if keep { end.min(i.size) } else { end };
                self.drive.write_zeros(fh.0, offset, zero_end)?;
            } else if !keep && end > i.size {
                self.drive.setattr(ino.0, SetAttr { size: Some(end), ..SetAttr::default() })?;
            }
            Ok(())
        });
        reply_empty(reply, r);
    }
}

#[cfg(test)]
mod tests {
    use super::undo_fuser_pre_epoch;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn pre_epoch_times_get_their_fraction_back() {
        // What fuser 0.18 hands over for the kernel's (-2, 250000000).
        let handed = UNIX_EPOCH - Duration::new(2, 250_000_000);
        assert_eq!(undo_fuser_pre_epoch(handed), UNIX_EPOCH - Duration::from_millis(1750));
        // The kernel's (-1, 1): 1 s less 1 ns before the epoch.
        let handed = UNIX_EPOCH - Duration::new(1, 1);
        assert_eq!(undo_fuser_pre_epoch(handed), UNIX_EPOCH - Duration::new(0, 999_999_999));
        // Whole seconds, the epoch and later times pass unchanged.
        for t in [UNIX_EPOCH - Duration::from_secs(86_400 * 365 * 68), UNIX_EPOCH, UNIX_EPOCH + Duration::new(5, 7)] {
            assert_eq!(undo_fuser_pre_epoch(t), t);
        }
    }
}
