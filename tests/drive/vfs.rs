//! What the kernel and the tools above it expect of a file system beyond
//! the errnos: a rewound listing, a removed directory still open, file
//! handles, access times, block-sized holes, preallocation beyond the free
//! space. Each was found failing with xfstests' generic group.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use crate::common::*;

fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

fn fstat(file: &File) -> io::Result<libc::stat> {
    // SAFETY: an open descriptor and a stat buffer we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(file.as_raw_fd(), &mut st) == 0 { Ok(st) } else { Err(io::Error::last_os_error()) }
    }
}

/// The names a `readdir` loop over `dir` returns, `.` and `..` left out.
///
/// # Safety
/// `dir` must be an open directory stream.
unsafe fn read_names(dir: *mut libc::DIR) -> Vec<String> {
    let mut names = Vec::new();
    loop {
        // SAFETY: the caller's open stream; the entry is read before the next call.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            return names;
        }
        // SAFETY: readdir returns a NUL-terminated name.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) }.to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
}

#[test]
fn rewinddir_shows_names_added_since_opendir() {
    let mut d = Drive::new();
    d.mount();
    let dir = d.path("growing");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("first"), b"1").unwrap();
    let path = cstr(&dir);
    // SAFETY: a valid path; the stream is closed below.
    let stream = unsafe { libc::opendir(path.as_ptr()) };
    assert!(!stream.is_null(), "opendir: {}", io::Error::last_os_error());
    // SAFETY: the stream opened above.
    let before = unsafe { read_names(stream) };
    assert_eq!(before, ["first"]);
    for i in 0..300 {
        fs::write(dir.join(format!("later-{i:03}")), b"2").unwrap();
    }
    fs::remove_file(dir.join("first")).unwrap();
    // POSIX: after rewinddir, readdir returns the directory as it is now.
    // SAFETY: the stream opened above, closed once.
    let mut after = unsafe {
        libc::rewinddir(stream);
        let names = read_names(stream);
        libc::closedir(stream);
        names
    };
    after.sort();
    let want: Vec<String> = (0..300).map(|i| format!("later-{i:03}")).collect();
    assert_eq!(after, want);
    d.unmount();
}

#[test]
fn a_removed_directory_still_open_stats_with_no_links() {
    let mut d = Drive::new();
    d.mount();
    // Replaced by a rename (what `mv -T new old` does)...
    fs::create_dir(d.path("old")).unwrap();
    fs::create_dir(d.path("new")).unwrap();
    let held = File::open(d.path("old")).unwrap();
    let ino = fstat(&held).unwrap().st_ino;
    fs::rename(d.path("new"), d.path("old")).unwrap();
    let st = fstat(&held).expect("fstat of a directory replaced while open");
    assert_eq!((st.st_ino, st.st_nlink), (ino, 0));
    assert_ne!(fs::metadata(d.path("old")).unwrap().ino(), ino, "the name is the new directory's");
    drop(held);
    // ...and removed by rmdir, held as a working directory.
    fs::create_dir(d.path("gone")).unwrap();
    let out = output_of(
        std::process::Command::new("sh")
            .arg("-c")
            .arg("cd \"$1\" && rmdir \"$1\" && stat -c %h .")
            .arg("sh")
            .arg(d.path("gone")),
    );
    assert!(out.status.success(), "stat . in a removed working directory: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout_of(&out).trim(), "0");
    d.unmount();
}

/// A handle of `path` as `name_to_handle_at(2)` makes it.
fn handle_of(path: &Path) -> Vec<u8> {
    const MAX_HANDLE: usize = 128;
    let header = std::mem::size_of::<libc::file_handle>();
    let mut buf = vec![0u8; header + MAX_HANDLE];
    let mut mount_id = 0;
    let path = cstr(path);
    // SAFETY: the buffer holds a file_handle header and MAX_HANDLE bytes,
    // as handle_bytes says; path is NUL-terminated.
    let rc = unsafe {
        let h = buf.as_mut_ptr().cast::<libc::file_handle>();
        (*h).handle_bytes = MAX_HANDLE as u32;
        libc::name_to_handle_at(libc::AT_FDCWD, path.as_ptr(), h, &mut mount_id, 0)
    };
    assert_eq!(rc, 0, "name_to_handle_at: {}", io::Error::last_os_error());
    buf
}

fn open_by_handle(mount: &File, handle: &[u8]) -> io::Result<File> {
    let mut handle = handle.to_vec();
    // SAFETY: a handle buffer name_to_handle_at filled; the fd is ours to own.
    unsafe {
        let fd = libc::open_by_handle_at(mount.as_raw_fd(), handle.as_mut_ptr().cast(), libc::O_RDONLY);
        if fd < 0 { Err(io::Error::last_os_error()) } else { Ok(File::from_raw_fd(fd)) }
    }
}

#[test]
fn file_handles_outlive_the_cache_and_a_remount() {
    let mut d = Drive::new();
    d.mount();
    fs::create_dir(d.path("dir")).unwrap();
    let data = test_data(800, 300 * KIB);
    write_synced(&d.path("dir/file"), &data);
    fs::write(d.path("doomed"), b"x").unwrap();
    let (file, dir, doomed) = (handle_of(&d.path("dir/file")), handle_of(&d.path("dir")), handle_of(&d.path("doomed")));
    fs::remove_file(d.path("doomed")).unwrap();
    // A remount: the kernel has never seen these nodes, so it asks the
    // drive for them by number (what an NFS server does after a restart).
    d.unmount();
    d.mount();
    let mount = File::open(&d.mnt).unwrap();
    let mut got = Vec::new();
    io::Read::read_to_end(&mut open_by_handle(&mount, &file).expect("open a file by its handle"), &mut got).unwrap();
    assert_bytes_eq("read through a handle", &got, &data);
    let dir = open_by_handle(&mount, &dir).expect("open a directory by its handle");
    assert_eq!(fstat(&dir).unwrap().st_ino, fs::metadata(d.path("dir")).unwrap().ino());
    match open_by_handle(&mount, &doomed) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "a deleted file's handle: {e}"),
        Ok(_) => panic!("a deleted file's handle opened"),
    }
    drop((dir, mount));
    d.unmount();
}

fn set_times(path: &Path, atime: libc::timespec, mtime: libc::timespec) {
    let path = cstr(path);
    let times = [atime, mtime];
    // SAFETY: a NUL-terminated path and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat: {}", io::Error::last_os_error());
}

/// A time `secs` after the epoch; [`LONG_AGO`] is one long before any test ran.
fn at(secs: i64) -> libc::timespec {
    libc::timespec { tv_sec: secs, tv_nsec: 0 }
}

const LONG_AGO: i64 = 1_000_000_000;

fn atime_of(path: &Path) -> (i64, i64) {
    let m = fs::metadata(path).unwrap();
    (m.atime(), m.atime_nsec())
}

#[test]
fn reads_set_the_access_time_by_the_relatime_rule() {
    let mut d = Drive::new();
    d.mount();
    let f = d.path("mail");
    fs::write(&f, b"new message").unwrap();
    set_times(&f, at(LONG_AGO), at(LONG_AGO));
    assert_eq!(atime_of(&f), (1_000_000_000, 0));
    // Changed since last read: a read sets the access time.
    fs::read(&f).unwrap();
    let read_at = atime_of(&f);
    assert!(read_at.0 > 1_000_000_000, "atime after a read of a changed file: {read_at:?}");
    // Read since the last change: reading again leaves it.
    fs::read(&f).unwrap();
    assert_eq!(atime_of(&f), read_at, "a second read moved the access time");
    // A write makes the next read count again. (Remounted first: a read
    // the kernel serves from its page cache never reaches the drive.)
    OpenOptions::new().write(true).open(&f).unwrap().write_all_at(b"!", 11).unwrap();
    d.unmount();
    d.mount();
    fs::read(&f).unwrap();
    assert!(atime_of(&f) > read_at, "a read after a write left the access time");
    // A listing is a directory's read.
    let dir = d.path("box");
    fs::create_dir(&dir).unwrap();
    set_times(&dir, at(LONG_AGO), at(LONG_AGO));
    fs::read_dir(&dir).unwrap().for_each(drop);
    assert!(atime_of(&dir).0 > 1_000_000_000, "a directory's atime after a listing");
    // It is kept like any attribute.
    let kept = atime_of(&f);
    d.unmount();
    d.mount();
    assert_eq!(atime_of(&d.path("mail")), kept);
    d.unmount();
}

#[test]
fn access_times_follow_the_mount_flags_after_a_remount() {
    let mut d = Drive::new();
    d.mount();
    let (f, dir) = (d.path("mail"), d.path("box"));
    fs::write(&f, b"new message").unwrap();
    fs::create_dir(&dir).unwrap();
    let mnt = d.mnt.to_str().unwrap().to_owned();
    let remount = |opts: &str| {
        run("mount", &["-i", "-o", &format!("remount,{opts}"), &mnt], None);
    };
    // Read or list after a change (a new mtime: the kernel drops its
    // cached pages, so the read reaches the drive); true if it wrote the
    // access time.
    let read_moves = |atime: i64, mtime: i64| {
        set_times(&f, at(atime), at(mtime));
        fs::read(&f).unwrap();
        atime_of(&f).0 != atime
    };
    let list_moves = |atime: i64, mtime: i64| {
        set_times(&dir, at(atime), at(mtime));
        fs::read_dir(&dir).unwrap().for_each(drop);
        atime_of(&dir).0 != atime
    };
    let base = LONG_AGO;
    assert!(read_moves(base, base + 1) && list_moves(base, base + 1), "relatime: a changed file's read counts");
    remount("noatime");
    assert!(!read_moves(base, base + 2) && !list_moves(base, base + 2), "noatime: reads leave the access time");
    // (`atime` clears noatime: relatime alone would not.)
    remount("atime,relatime,nodiratime");
    assert!(read_moves(base, base + 3) && !list_moves(base, base + 3), "nodiratime: only listings leave it");
    remount("relatime,diratime");
    // Times the relatime rule leaves: read after the last change (the
    // ctime utimensat sets, now), not a day ago.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(!read_moves(now + 3600, now - 7200), "relatime: a read since the change is not written");
    remount("strictatime");
    assert!(read_moves(now + 3600, now - 7199), "strictatime: every read is written");
    // Even of pages the kernel read before (the mtime stays: it keeps no
    // page across opens under strictatime).
    set_times(&f, at(now + 3600), libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT });
    fs::read(&f).unwrap();
    assert_ne!(atime_of(&f).0, now + 3600, "strictatime: a read of cached pages is written");
    remount("relatime");
    set_times(&f, at(base), at(base + 4));
    set_times(&dir, at(base), at(base + 4));
    remount("ro");
    fs::read(&f).unwrap();
    fs::read_dir(&dir).unwrap().for_each(drop);
    assert_eq!((atime_of(&f).0, atime_of(&dir).0), (base, base), "a read-only mount writes nothing");
    remount("rw");
    d.unmount();
}

#[test]
fn a_read_only_mount_refuses_changes_and_writes_no_access_time() {
    let mut d = Drive::new();
    d.mount();
    let f = d.path("kept");
    fs::write(&f, b"as it was").unwrap();
    set_times(&f, at(LONG_AGO), at(LONG_AGO));
    d.unmount();
    d.mount_with(&["--read-only"]);
    let erofs = |r: io::Result<()>| r.is_err_and(|e| e.raw_os_error() == Some(libc::EROFS));
    assert!(erofs(fs::write(&f, b"changed")), "a write on a read-only mount");
    assert!(erofs(fs::write(d.path("new"), b"")), "a create on a read-only mount");
    assert!(erofs(fs::remove_file(&f)), "an unlink on a read-only mount");
    assert_eq!(fs::read(&f).unwrap(), b"as it was");
    assert_eq!(atime_of(&f), (1_000_000_000, 0), "a read on a read-only mount wrote the access time");
    d.unmount();
    d.mount();
    assert_eq!(atime_of(&d.path("kept")), (1_000_000_000, 0));
    d.unmount();
}

#[test]
fn times_before_1970_keep_their_fraction() {
    let mut d = Drive::new();
    d.mount();
    let f = d.path("old");
    fs::write(&f, b"from before the epoch").unwrap();
    // 1969-12-31 23:59:58.25 and 1969-12-31 23:59:58.999999999: the kernel
    // counts the nanoseconds forward from the (negative) second.
    let (atime, mtime) =
        (libc::timespec { tv_sec: -2, tv_nsec: 250_000_000 }, libc::timespec { tv_sec: -1, tv_nsec: 1 });
    set_times(&f, atime, mtime);
    let times = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        ((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()))
    };
    assert_eq!(times(&f), ((-2, 250_000_000), (-1, 1)));
    // From the store, not the kernel's cache.
    d.unmount();
    d.mount();
    assert_eq!(times(&d.path("old")), ((-2, 250_000_000), (-1, 1)));
    // Whole seconds and times after 1970 are unchanged.
    set_times(&d.path("old"), at(-86_400), libc::timespec { tv_sec: 5, tv_nsec: 7 });
    assert_eq!(times(&d.path("old")), ((-86_400, 0), (5, 7)));
    d.unmount();
}

#[test]
fn holes_are_found_in_whole_blocks() {
    let mut d = Drive::new();
    d.mount();
    let block = BLOCK as u64;
    // One byte past a short gap: the block holding both is data, as on a
    // disk (xfstests finds the allocation unit this way).
    let f = d.path("probe");
    let file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&f).unwrap();
    file.write_all_at(b"a", 2).unwrap();
    assert_eq!(seek(&file, 0, libc::SEEK_DATA).unwrap(), 0);
    assert_eq!(seek(&file, 0, libc::SEEK_HOLE).unwrap(), 3, "the end of the file is the only hole");
    // Far apart (more than a chunk): a hole between, ending where the
    // block of the second write begins.
    let far = 9 * MIB as u64 + 5;
    file.write_all_at(b"b", far).unwrap();
    file.sync_all().unwrap();
    assert_eq!(seek(&file, 0, libc::SEEK_HOLE).unwrap(), block);
    assert_eq!(seek(&file, block as i64, libc::SEEK_DATA).unwrap(), far / block * block);
    drop(file);
    d.unmount();
}

#[test]
fn preallocating_more_than_the_free_space_is_enospc() {
    let mut d = Drive::new();
    d.set_config("storage", "capacity", "\"64MiB\"");
    d.mount();
    let f = d.path("big");
    let data = test_data(802, 100 * KIB);
    write_synced(&f, &data);
    let file = OpenOptions::new().read(true).write(true).open(&f).unwrap();
    match fallocate(&file, 0, 0, 128 * MIB as u64) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}"),
        Ok(()) => panic!("preallocating 128 MiB on a 64 MiB drive succeeded"),
    }
    match fallocate(&file, libc::FALLOC_FL_KEEP_SIZE, 0, 128 * MIB as u64) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}"),
        Ok(()) => panic!("preallocating 128 MiB (keep size) on a 64 MiB drive succeeded"),
    }
    assert_eq!(file.metadata().unwrap().len(), data.len() as u64, "a refused fallocate changed the size");
    fallocate(&file, 0, 0, 16 * MIB as u64).expect("preallocating what fits");
    assert_eq!(file.metadata().unwrap().len(), 16 * MIB as u64);
    drop(file);
    let mut want = data;
    want.resize(16 * MIB, 0);
    assert_file(&f, &want);
    d.unmount();
}
