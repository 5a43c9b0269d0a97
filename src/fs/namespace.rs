//! Namespace operations: names, links, attributes and extended attributes.
//!
//! Each operation is one store transaction. Inodes it changes are gathered
//! in a [`Changes`] set first, so an operation touching the same directory
//! twice (rename within one directory) writes one consistent record.

use super::durability::{self, PROMISES_XATTR, REPLICAS_XATTR, RESERVED_PREFIX};
use super::mount_flags::AtimeRule;
use super::{Caller, DirEntry, Drive, FsError, Handle, NAME_MAX, lock};
use crate::chunk::ChunkId;
use crate::store::{Dirent, Inode, Kind, Stamp, Store, Txn};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

const S_ISUID: u16 = 0o4000;
const S_ISGID: u16 = 0o2000;
const S_IXGRP: u16 = 0o0010;
/// File capabilities: a privilege like set-user-ID, dropped with it.
const CAPS_XATTR: &[u8] = b"security.capability";
/// Longest extended attribute name and value (the kernel's own limits).
const XATTR_NAME_MAX: usize = 255;
const XATTR_SIZE_MAX: usize = 64 * 1024;
/// The kernel's limit on a name list (`XATTR_LIST_MAX`): a file with more
/// could never be listed (`listxattr` fails with E2BIG), so the attribute
/// that would pass it is refused with ENOSPC, as a disk file system does.
const XATTR_LIST_MAX: usize = 64 * 1024;
const XATTR_CREATE: i32 = 1;
const XATTR_REPLACE: i32 = 2;
/// Setting this attribute makes the node panic (test builds only).
#[cfg(feature = "fault-injection")]
pub const FAULT_PANIC_XATTR: &[u8] = b"user.pactfs.fault.panic";

/// Highest link count of a file, as ext4 allows.
const LINK_MAX: u32 = 65000;

/// A time to set: a given one, or now.
#[derive(Clone, Copy, Debug)]
pub enum SetTime {
    At(SystemTime),
    Now,
}

/// The attributes a `setattr` changes; `None` leaves one alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    /// Drop set-user-ID, set-group-ID and file capabilities (see
    /// [`Drive::drop_privs`]) for this caller: the kernel asks for it when
    /// someone without CAP_FSETID truncates the file or writes to it
    /// another way than `write(2)`. A change of owner or group drops them
    /// regardless (for the caller of that change).
    pub drop_privs: Option<Caller>,
}

/// Inodes read and changed within one transaction.
struct Changes<'s> {
    store: &'s Store,
    inodes: HashMap<u64, Inode>,
}

impl<'s> Changes<'s> {
    fn new(store: &'s Store) -> Self {
        Changes { store, inodes: HashMap::new() }
    }

    fn get(&mut self, ino: u64) -> Result<&mut Inode, FsError> {
        if !self.inodes.contains_key(&ino) {
            let inode = self.store.inode(ino)?.ok_or(FsError::NotFound)?;
            self.inodes.insert(ino, inode);
        }
        self.inodes.get_mut(&ino).ok_or(FsError::NotFound)
    }

    fn dir(&mut self, ino: u64) -> Result<&mut Inode, FsError> {
        let d = self.get(ino)?;
        if d.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if d.nlink == 0 {
            // Removed while someone still held it.
            return Err(FsError::NotFound);
        }
        Ok(d)
    }

    fn touch_dir(&mut self, ino: u64, now: Stamp) -> Result<(), FsError> {
        let d = self.get(ino)?;
        d.mtime = now;
        d.ctime = now;
        Ok(())
    }

    fn write(self, txn: &mut Txn<'_>, deleted: &[u64]) {
        for (ino, inode) in &self.inodes {
            if !deleted.contains(ino) {
                txn.put_inode(inode);
            }
        }
    }
}

fn check_name(name: &[u8]) -> Result<(), FsError> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(FsError::Invalid);
    }
    Ok(())
}

impl Drive {
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Inode, FsError> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        // "." and ".." come only from the kernel resolving a file handle
        // (open_by_handle_at, an NFS export): "." of any kind of node.
        if name == b"." {
            return self.getattr(parent);
        }
        let p = self.store.inode(parent)?.ok_or(FsError::NotFound)?;
        if p.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if name == b".." {
            return self.getattr(p.parent);
        }
        let d = self.store.lookup(parent, name)?.ok_or(FsError::NotFound)?;
        self.getattr(d.ino)
    }

    /// Creates a node of any kind but a directory or symlink.
    pub fn mknod(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        kind: Kind,
        perm: u32,
        rdev: u32,
    ) -> Result<Inode, FsError> {
        self.make_node(caller, parent, name, kind, perm, rdev, None)
    }

    pub fn mkdir(&self, caller: Caller, parent: u64, name: &[u8], perm: u32) -> Result<Inode, FsError> {
        self.make_node(caller, parent, name, Kind::Dir, perm, 0, None)
    }

    pub fn symlink(&self, caller: Caller, parent: u64, name: &[u8], target: &[u8]) -> Result<Inode, FsError> {
        if target.len() >= libc::PATH_MAX as usize {
            return Err(FsError::NameTooLong);
        }
        self.make_node(caller, parent, name, Kind::Symlink, 0o777, 0, Some(target.to_vec()))
    }

    /// Creates and opens a regular file.
    pub fn create(&self, caller: Caller, parent: u64, name: &[u8], perm: u32) -> Result<(Inode, u64), FsError> {
        let inode = self.make_node(caller, parent, name, Kind::File, perm, 0, None)?;
        let fh = self.open(inode.ino)?;
        Ok((inode, fh))
    }

    #[allow(clippy::too_many_arguments)]
    fn make_node(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        kind: Kind,
        perm: u32,
        rdev: u32,
        symlink: Option<Vec<u8>>,
    ) -> Result<Inode, FsError> {
        check_name(name)?;
        let mut txn = self.store.begin();
        let mut changes = Changes::new(&self.store);
        let p = changes.dir(parent)?;
        let (parent_gid, parent_sgid) = (p.gid, p.perm & S_ISGID != 0);
        if self.store.lookup(parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        let now = Stamp::now();
        let mut perm = (perm & 0o7777) as u16;
        if kind == Kind::Dir && parent_sgid {
            perm |= S_ISGID;
        }
        let inode = Inode {
            ino: self.store.alloc_ino(),
            kind,
            perm,
            uid: caller.uid,
            gid: if parent_sgid { parent_gid } else { caller.gid },
            size: symlink.as_ref().map_or(0, |t| t.len() as u64),
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            rdev,
            parent,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            symlink,
            allocated: 0,
        };
        changes.touch_dir(parent, now)?;
        if kind == Kind::Dir {
            changes.get(parent)?.nlink += 1;
        }
        txn.put_inode(&inode);
        txn.put_dirent(parent, name, &Dirent { ino: inode.ino, kind });
        changes.write(&mut txn, &[]);
        txn.commit(false)?;
        Ok(inode)
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> Result<Inode, FsError> {
        check_name(newname)?;
        let mut txn = self.store.begin();
        let mut changes = Changes::new(&self.store);
        changes.dir(newparent)?;
        let inode = changes.get(ino)?;
        if inode.kind == Kind::Dir {
            return Err(FsError::NotPermitted);
        }
        if inode.nlink == 0 {
            return Err(FsError::NotFound);
        }
        if inode.nlink >= LINK_MAX {
            return Err(FsError::TooManyLinks);
        }
        let kind = inode.kind;
        if self.store.lookup(newparent, newname)?.is_some() {
            return Err(FsError::Exists);
        }
        let now = Stamp::now();
        let inode = changes.get(ino)?;
        inode.nlink += 1;
        inode.ctime = now;
        changes.touch_dir(newparent, now)?;
        txn.put_dirent(newparent, newname, &Dirent { ino, kind });
        changes.write(&mut txn, &[]);
        txn.commit(false)?;
        self.getattr(ino)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<(), FsError> {
        // Held so that no open races the decision to delete or orphan.
        let files = lock(&self.open_files);
        let mut txn = self.store.begin();
        let mut changes = Changes::new(&self.store);
        changes.dir(parent)?;
        let d = self.store.lookup(parent, name)?.ok_or(FsError::NotFound)?;
        if d.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let now = Stamp::now();
        txn.delete_dirent(parent, name);
        changes.touch_dir(parent, now)?;
        let deleted = self.drop_link(&mut txn, &mut changes, d.ino, files.contains_key(&d.ino), now)?;
        changes.write(&mut txn, &deleted);
        txn.commit(false)?;
        Ok(())
    }

    /// Lowers a non-directory's link count; at zero it is deleted at once,
    /// or at its last close when it is open. Returns inodes deleted.
    fn drop_link(
        &self,
        txn: &mut Txn<'_>,
        changes: &mut Changes<'_>,
        ino: u64,
        is_open: bool,
        now: Stamp,
    ) -> Result<Vec<u64>, FsError> {
        let inode = changes.get(ino)?;
        inode.nlink = inode.nlink.saturating_sub(1);
        inode.ctime = now;
        if inode.nlink > 0 || is_open {
            return Ok(Vec::new());
        }
        for e in self.store.manifest(ino)? {
            txn.ref_chunk(&e.id, -1);
        }
        txn.delete_inode(ino)?;
        Ok(vec![ino])
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<(), FsError> {
        if name == b"." {
            return Err(FsError::Invalid);
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        let mut txn = self.store.begin();
        let mut changes = Changes::new(&self.store);
        changes.dir(parent)?;
        let d = self.store.lookup(parent, name)?.ok_or(FsError::NotFound)?;
        if d.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if self.store.dir_has_entries(d.ino)? {
            return Err(FsError::NotEmpty);
        }
        let now = Stamp::now();
        let dead = self.store.inode(d.ino)?;
        txn.delete_dirent(parent, name);
        txn.delete_inode(d.ino)?;
        let p = changes.get(parent)?;
        p.nlink = p.nlink.saturating_sub(1);
        changes.touch_dir(parent, now)?;
        changes.write(&mut txn, &[d.ino]);
        txn.commit(false)?;
        self.bury_dir(dead, now);
        Ok(())
    }

    /// Sets the access time of a file read or a directory listed, by the
    /// mount's rule ([`AtimeRule`]). The default, relatime, as Linux mounts
    /// by default: only when it is not newer than the last change
    /// (`modified`: one not yet in the store) or is a day old. So a reader
    /// sees whether a file was read since it changed (mail readers,
    /// tmpreaper), and a read costs a write at most once per change. A
    /// read-only or `noatime` mount never writes it.
    /// `seen`: the inode as the caller already read it, if it did.
    pub(super) fn touch_atime(&self, ino: u64, seen: Option<Inode>, modified: Option<Stamp>) -> Result<(), FsError> {
        const DAY_SECS: i64 = 24 * 60 * 60;
        let now = Stamp::now();
        let seen = match seen {
            Some(i) => i,
            None => match self.store.inode(ino)? {
                Some(i) => i,
                None => return Ok(()),
            },
        };
        let rule = self.atime_rule(seen.kind == Kind::Dir);
        let due = |i: &Inode, now: Stamp| match rule {
            AtimeRule::Never => false,
            AtimeRule::Strict => i.atime != now,
            AtimeRule::Relative => {
                let changed = modified.into_iter().chain([i.mtime, i.ctime]).max().unwrap_or_default();
                i.atime <= changed || now.secs - i.atime.secs >= DAY_SECS
            }
        };
        if !due(&seen, now) {
            return Ok(());
        }
        // Read again under the writer lock: a chmod in between must not be
        // undone.
        let mut txn = self.store.begin();
        let Some(mut inode) = self.store.inode(ino)? else { return Ok(()) };
        if !due(&inode, now) {
            return Ok(());
        }
        inode.atime = now;
        txn.put_inode(&inode);
        txn.commit(false)?;
        Ok(())
    }

    /// Keeps a removed directory's last attributes for whoever still holds
    /// it (see `Drive::dead_dirs`).
    fn bury_dir(&self, dead: Option<Inode>, now: Stamp) {
        if let Some(mut inode) = dead {
            inode.nlink = 0;
            inode.ctime = now;
            lock(&self.dead_dirs).insert(inode.ino, inode);
        }
    }

    /// The kernel dropped its last reference to `ino`.
    pub fn forget(&self, ino: u64) {
        lock(&self.dead_dirs).remove(&ino);
    }

    /// `renameat2`: `flags` may hold `RENAME_NOREPLACE` or `RENAME_EXCHANGE`.
    pub fn rename(&self, parent: u64, name: &[u8], newparent: u64, newname: &[u8], flags: u32) -> Result<(), FsError> {
        check_name(newname)?;
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if (noreplace && exchange) || flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            return Err(FsError::Invalid);
        }
        let files = lock(&self.open_files);
        let mut txn = self.store.begin();
        let mut changes = Changes::new(&self.store);
        changes.dir(parent)?;
        changes.dir(newparent)?;
        let src = self.store.lookup(parent, name)?.ok_or(FsError::NotFound)?;
        let dst = self.store.lookup(newparent, newname)?;
        let now = Stamp::now();
        if exchange {
            let dst = dst.ok_or(FsError::NotFound)?;
            txn.put_dirent(parent, name, &dst);
            txn.put_dirent(newparent, newname, &src);
            if parent != newparent {
                self.move_dir(&mut changes, src, parent, newparent)?;
                self.move_dir(&mut changes, dst, newparent, parent)?;
            }
            changes.get(src.ino)?.ctime = now;
            changes.get(dst.ino)?.ctime = now;
            changes.touch_dir(parent, now)?;
            changes.touch_dir(newparent, now)?;
            changes.write(&mut txn, &[]);
            txn.commit(false)?;
            return Ok(());
        }
        let mut deleted = Vec::new();
        let mut dead_dir = None;
        if let Some(dst) = dst {
            if noreplace {
                return Err(FsError::Exists);
            }
            if dst.ino == src.ino {
                // Two names of one file: POSIX says do nothing.
                return Ok(());
            }
            match (src.kind == Kind::Dir, dst.kind == Kind::Dir) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) => {
                    if self.store.dir_has_entries(dst.ino)? {
                        return Err(FsError::NotEmpty);
                    }
                    dead_dir = self.store.inode(dst.ino)?;
                    txn.delete_inode(dst.ino)?;
                    deleted.push(dst.ino);
                    let np = changes.get(newparent)?;
                    np.nlink = np.nlink.saturating_sub(1);
                }
                (false, false) => {
                    deleted = self.drop_link(&mut txn, &mut changes, dst.ino, files.contains_key(&dst.ino), now)?;
                }
            }
        }
        txn.delete_dirent(parent, name);
        txn.put_dirent(newparent, newname, &src);
        if parent != newparent {
            self.move_dir(&mut changes, src, parent, newparent)?;
        }
        changes.get(src.ino)?.ctime = now;
        changes.touch_dir(parent, now)?;
        changes.touch_dir(newparent, now)?;
        changes.write(&mut txn, &deleted);
        txn.commit(false)?;
        self.bury_dir(dead_dir, now);
        Ok(())
    }

    /// Re-parents a directory moved between directories (".." and link counts).
    fn move_dir(&self, changes: &mut Changes<'_>, d: Dirent, from: u64, to: u64) -> Result<(), FsError> {
        if d.kind != Kind::Dir {
            return Ok(());
        }
        changes.get(d.ino)?.parent = to;
        let f = changes.get(from)?;
        f.nlink = f.nlink.saturating_sub(1);
        changes.get(to)?.nlink += 1;
        Ok(())
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        let inode = self.store.inode(ino)?.ok_or(FsError::NotFound)?;
        inode.symlink.ok_or(FsError::Invalid)
    }

    pub fn setattr(&self, ino: u64, attr: SetAttr) -> Result<Inode, FsError> {
        if let Some(size) = attr.size {
            self.with_state(ino, |st| st.truncate(self, size))?;
        }
        let chown = attr.uid.is_some() || attr.gid.is_some();
        let changes_meta = attr.mode.is_some() || chown || attr.atime.is_some() || attr.mtime.is_some();
        if !changes_meta && attr.drop_privs.is_none() {
            return self.getattr(ino);
        }
        if attr.mtime.is_some() {
            // An explicit mtime wins over the one pending writes would set.
            // Journaled writes are cut first: replayed after a crash, their
            // records would set the older time again.
            if let Some(cell) = self.open_state(ino) {
                let mut st = self.settle(&cell);
                if !st.journal().is_empty() {
                    st.commit(self, true)?;
                }
                st.mtime = None;
            }
        }
        let mut txn = self.store.begin();
        let mut inode = self.store.inode(ino)?.ok_or(FsError::NotFound)?;
        let now = Stamp::now();
        // Judged on the file as it was, before a new owner or mode. A chown
        // from a caller nobody named (in-process users, tests) is judged
        // as root's.
        let by = attr.drop_privs.or(chown.then_some(Caller { uid: 0, gid: 0, pid: 0 }));
        let dropped = match by {
            Some(by) => self.drop_privs_in(&mut txn, &mut inode, by)?,
            None => false,
        };
        if let Some(mode) = attr.mode {
            inode.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = attr.uid {
            inode.uid = uid;
        }
        if let Some(gid) = attr.gid {
            inode.gid = gid;
        }
        let stamp = |t: SetTime| match t {
            SetTime::At(t) => Stamp::from(t),
            SetTime::Now => now,
        };
        if let Some(t) = attr.atime {
            inode.atime = stamp(t);
        }
        if let Some(t) = attr.mtime {
            inode.mtime = stamp(t);
        }
        if !changes_meta && !dropped {
            return self.getattr(ino);
        }
        inode.ctime = now;
        txn.put_inode(&inode);
        txn.commit(false)?;
        self.getattr(ino)
    }

    /// Drops what makes running a file a privilege, as the kernel does for
    /// a local file system when `by` (lacking CAP_FSETID) writes to the
    /// file, truncates it or gives it away: set-user-ID; set-group-ID when
    /// group execute is set too, or when `by` is not in the file's group
    /// (without group execute the bit asks for mandatory locking); and file
    /// capabilities. With FUSE_HANDLE_KILLPRIV_V2 (see `fs::fuse`) the
    /// kernel leaves this to the file system; `write(2)` says so in its
    /// flags.
    pub fn drop_privs(&self, ino: u64, by: Caller) -> Result<(), FsError> {
        let mut txn = self.store.begin();
        let mut inode = self.store.inode(ino)?.ok_or(FsError::NotFound)?;
        if self.drop_privs_in(&mut txn, &mut inode, by)? {
            tracing::debug!(ino, uid = by.uid, perm = format_args!("{:o}", inode.perm), "write dropped privileges");
            inode.ctime = Stamp::now();
            txn.put_inode(&inode);
            txn.commit(false)?;
        }
        Ok(())
    }

    /// [`Drive::drop_privs`] within `txn` (directories keep their bits:
    /// set-group-ID on one is inheritance); the caller writes `inode` when
    /// this returns true.
    fn drop_privs_in(&self, txn: &mut Txn<'_>, inode: &mut Inode, by: Caller) -> Result<bool, FsError> {
        if inode.kind == Kind::Dir {
            return Ok(false);
        }
        let mut dropped = false;
        if inode.perm & S_ISUID != 0 {
            inode.perm &= !S_ISUID;
            dropped = true;
        }
        if inode.perm & S_ISGID != 0 && (inode.perm & S_IXGRP != 0 || !in_group(by, inode.gid)) {
            inode.perm &= !S_ISGID;
            dropped = true;
        }
        if self.store.xattr(inode.ino, CAPS_XATTR)?.is_some() {
            txn.delete_xattr(inode.ino, CAPS_XATTR);
            dropped = true;
        }
        Ok(dropped)
    }

    /// Opens a directory. Its entries are read at the first `readdir` and
    /// again at every read from offset 0, so a listing stays consistent
    /// while the directory changes, and `rewinddir(3)` shows what was added
    /// since (POSIX asks for that).
    pub fn opendir(&self, ino: u64) -> Result<u64, FsError> {
        let inode = self.store.inode(ino)?.ok_or(FsError::NotFound)?;
        if inode.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(self.new_handle(Handle::Dir { ino, entries: None }))
    }

    /// The listing of an open directory for a read at `offset`: taken
    /// afresh at offset 0, else the one the read from 0 took.
    pub fn dir_entries(&self, fh: u64, offset: u64) -> Result<Arc<Vec<DirEntry>>, FsError> {
        let ino = match lock(&self.handles).get(&fh) {
            Some(Handle::Dir { entries: Some(entries), .. }) if offset > 0 => return Ok(entries.clone()),
            Some(Handle::Dir { ino, .. }) => *ino,
            _ => return Err(FsError::BadHandle),
        };
        let inode = self.store.inode(ino)?.ok_or(FsError::NotFound)?;
        if let Err(e) = self.touch_atime(ino, Some(inode.clone()), None) {
            tracing::debug!(ino, cause = %e, "access time not updated");
        }
        let mut entries = vec![
            DirEntry { name: b".".to_vec(), ino, kind: Kind::Dir },
            DirEntry { name: b"..".to_vec(), ino: inode.parent, kind: Kind::Dir },
        ];
        for (name, d) in self.store.read_dir(ino)? {
            entries.push(DirEntry { name, ino: d.ino, kind: d.kind });
        }
        let entries = Arc::new(entries);
        if let Some(Handle::Dir { entries: kept, .. }) = lock(&self.handles).get_mut(&fh) {
            *kept = Some(entries.clone());
        }
        Ok(entries)
    }

    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> Result<(), FsError> {
        #[cfg(feature = "fault-injection")]
        if name == FAULT_PANIC_XATTR {
            panic!("fault injection: {} set on inode {ino}", String::from_utf8_lossy(name));
        }
        check_xattr_name(name)?;
        check_writable_xattr(name)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(FsError::AttrTooBig);
        }
        let mut txn = self.store.begin();
        let mut inode = self.store.inode(ino)?.ok_or(FsError::NotFound)?;
        let exists = self.store.xattr(ino, name)?.is_some();
        if flags & XATTR_CREATE != 0 && exists {
            return Err(FsError::Exists);
        }
        if flags & XATTR_REPLACE != 0 && !exists {
            return Err(FsError::NoAttr);
        }
        if !exists {
            let listed: usize = self.store.xattr_names(ino)?.iter().map(|n| n.len() + 1).sum();
            if listed + name.len() + 1 > XATTR_LIST_MAX {
                return Err(FsError::NoSpace);
            }
        }
        txn.put_xattr(ino, name, value);
        inode.ctime = Stamp::now();
        txn.put_inode(&inode);
        txn.commit(false)?;
        Ok(())
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>, FsError> {
        check_xattr_name(name)?;
        let inode = self.store.inode(ino)?.ok_or(FsError::NotFound)?;
        if name.starts_with(RESERVED_PREFIX) {
            return self.durability_xattr(&inode, name);
        }
        self.store.xattr(ino, name)?.ok_or(FsError::NoAttr)
    }

    /// `user.pactfs.replicas` and `user.pactfs.promises` of a file (see
    /// `fs::durability`); other kinds have neither.
    fn durability_xattr(&self, inode: &Inode, name: &[u8]) -> Result<Vec<u8>, FsError> {
        if inode.kind != Kind::File || (name != REPLICAS_XATTR && name != PROMISES_XATTR) {
            return Err(FsError::NoAttr);
        }
        // An open file's state is the truth: bytes not yet cut into chunks
        // are on this machine only.
        let (chunks, uncommitted) = match self.open_state(inode.ino) {
            Some(cell) => {
                let st = lock(&cell.state);
                (st.manifest().iter().map(|e| e.id).collect::<Vec<ChunkId>>(), st.uncommitted_bytes() > 0)
            }
            None => (self.store.manifest(inode.ino)?.iter().map(|e| e.id).collect(), false),
        };
        let mut chunks = chunks;
        chunks.sort_unstable();
        chunks.dedup();
        let handle = self.durability();
        if name == REPLICAS_XATTR {
            let target = handle.target();
            let min = if uncommitted {
                0
            } else if chunks.is_empty() {
                target
            } else {
                handle.min_replicas(&chunks)?
            };
            Ok(durability::replicas_value(min, target))
        } else {
            Ok(durability::promises_value(&handle.promises(&chunks)?))
        }
    }

    /// Attribute names, each followed by a NUL, as `listxattr(2)` returns.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        self.store.inode(ino)?.ok_or(FsError::NotFound)?;
        let mut out = Vec::new();
        for name in self.store.xattr_names(ino)? {
            out.extend_from_slice(&name);
            out.push(0);
        }
        Ok(out)
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<(), FsError> {
        check_xattr_name(name)?;
        check_writable_xattr(name)?;
        let mut txn = self.store.begin();
        let mut inode = self.store.inode(ino)?.ok_or(FsError::NotFound)?;
        if self.store.xattr(ino, name)?.is_none() {
            return Err(FsError::NoAttr);
        }
        txn.delete_xattr(ino, name);
        inode.ctime = Stamp::now();
        txn.put_inode(&inode);
        txn.commit(false)?;
        Ok(())
    }
}

/// The `user.pactfs.` names are pactfs's own, read-only attributes: EPERM
/// ("not permitted") tells the user it is the name, not the file system,
/// that refuses, where ENOTSUP would read as "no xattrs here" and make
/// copy tools give up on every attribute.
fn check_writable_xattr(name: &[u8]) -> Result<(), FsError> {
    if name.starts_with(RESERVED_PREFIX) {
        return Err(FsError::NotPermitted);
    }
    Ok(())
}

/// Whether `by` may keep a group's set-group-ID bit: root, or a member
/// of the group (its own group, or one of its process's supplementary
/// groups, read from /proc; none known without it).
fn in_group(by: Caller, gid: u32) -> bool {
    if by.uid == 0 || by.gid == gid {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", by.pid)) else {
        return false;
    };
    let groups = status.lines().find_map(|l| l.strip_prefix("Groups:")).unwrap_or("");
    groups.split_whitespace().any(|g| g.parse::<u32>() == Ok(gid))
}

fn check_xattr_name(name: &[u8]) -> Result<(), FsError> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(FsError::Range);
    }
    // No ACL support: POSIX ACL attributes must not be stored and ignored.
    if name.starts_with(b"system.") {
        return Err(FsError::NotSupported);
    }
    Ok(())
}
