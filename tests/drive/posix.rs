//! POSIX semantics and edge errnos through std::fs and libc on a real mount:
//! each error is checked by its errno, each success by the bytes it left.

use std::ffi::CString;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use crate::common::*;

fn meta(path: &Path) -> fs::Metadata {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()))
}

/// Asserts `result` failed with errno `want`.
#[track_caller]
fn assert_errno<T: Debug>(result: io::Result<T>, want: i32, what: &str) {
    let want_text = io::Error::from_raw_os_error(want);
    match result {
        Ok(value) => panic!("{what}: expected {want_text}, got Ok({value:?})"),
        Err(err) => assert_eq!(err.raw_os_error(), Some(want), "{what}: expected {want_text}, got {err}"),
    }
}

fn renameat2(old: &Path, new: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (old, new) =
        (CString::new(old.as_os_str().as_bytes()).unwrap(), CString::new(new.as_os_str().as_bytes()).unwrap());
    // SAFETY: two valid NUL-terminated paths, relative to the cwd fd.
    let rc = unsafe {
        libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, old.as_ptr(), libc::AT_FDCWD, new.as_ptr(), flags)
    };
    if rc == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

#[test]
fn missing_names_are_enoent() {
    let mut d = Drive::new();
    d.mount();
    let missing = d.path("missing");
    assert_errno(File::open(&missing), libc::ENOENT, "open");
    assert_errno(fs::metadata(&missing), libc::ENOENT, "stat");
    assert_errno(fs::remove_file(&missing), libc::ENOENT, "unlink");
    assert_errno(fs::remove_dir(&missing), libc::ENOENT, "rmdir");
    assert_errno(fs::rename(&missing, d.path("x")), libc::ENOENT, "rename of a missing source");
    assert_errno(fs::read_link(&missing), libc::ENOENT, "readlink");
    assert_errno(File::create(d.path("missing/f")), libc::ENOENT, "create in a missing dir");
    assert_errno(fs::hard_link(&missing, d.path("y")), libc::ENOENT, "link of a missing source");
    assert_errno(fs::create_dir(d.path("missing/sub")), libc::ENOENT, "mkdir in a missing dir");
    assert_eq!(walk(&d.mnt), Vec::<String>::new(), "failed calls created nothing");
    d.unmount();
}

#[test]
fn existing_names_are_eexist() {
    let mut d = Drive::new();
    d.mount();
    fs::create_dir(d.path("dir")).unwrap();
    fs::write(d.path("file"), b"keep").unwrap();
    assert_errno(fs::create_dir(d.path("dir")), libc::EEXIST, "mkdir of an existing dir");
    assert_errno(fs::create_dir(d.path("file")), libc::EEXIST, "mkdir over a file");
    assert_errno(OpenOptions::new().write(true).create_new(true).open(d.path("file")), libc::EEXIST, "O_CREAT|O_EXCL");
    assert_errno(fs::hard_link(d.path("file"), d.path("dir")), libc::EEXIST, "link onto an existing name");
    assert_errno(symlink("x", d.path("file")), libc::EEXIST, "symlink onto an existing name");
    assert_file(&d.path("file"), b"keep");
    d.unmount();
}

#[test]
fn rmdir_of_a_non_empty_dir_is_enotempty() {
    let mut d = Drive::new();
    d.mount();
    fs::create_dir_all(d.path("with_file")).unwrap();
    fs::write(d.path("with_file/f"), b"f").unwrap();
    fs::create_dir_all(d.path("with_dir/sub")).unwrap();
    assert_errno(fs::remove_dir(d.path("with_file")), libc::ENOTEMPTY, "rmdir of a dir holding a file");
    assert_errno(fs::remove_dir(d.path("with_dir")), libc::ENOTEMPTY, "rmdir of a dir holding a dir");
    assert_file(&d.path("with_file/f"), b"f");
    fs::remove_file(d.path("with_file/f")).unwrap();
    fs::remove_dir(d.path("with_file")).expect("rmdir once empty");
    d.unmount();
}

#[test]
fn file_used_as_dir_is_enotdir() {
    let mut d = Drive::new();
    d.mount();
    fs::write(d.path("f"), b"f").unwrap();
    fs::create_dir(d.path("dir")).unwrap();
    assert_errno(File::open(d.path("f/x")), libc::ENOTDIR, "open below a file");
    assert_errno(fs::create_dir(d.path("f/sub")), libc::ENOTDIR, "mkdir below a file");
    assert_errno(fs::remove_dir(d.path("f")), libc::ENOTDIR, "rmdir of a file");
    assert_errno(fs::read_dir(d.path("f")), libc::ENOTDIR, "opendir of a file");
    assert_errno(fs::rename(d.path("dir"), d.path("f")), libc::ENOTDIR, "rename of a dir over a file");
    d.unmount();
}

#[test]
fn dir_used_as_file_is_eisdir() {
    let mut d = Drive::new();
    d.mount();
    fs::create_dir(d.path("dir")).unwrap();
    fs::write(d.path("f"), b"f").unwrap();
    assert_errno(fs::remove_file(d.path("dir")), libc::EISDIR, "unlink of a dir");
    assert_errno(OpenOptions::new().write(true).open(d.path("dir")), libc::EISDIR, "open of a dir for writing");
    assert_errno(fs::rename(d.path("f"), d.path("dir")), libc::EISDIR, "rename of a file over a dir");
    assert!(meta(&d.path("dir")).is_dir());
    d.unmount();
}

#[test]
fn rename_replaces_a_file() {
    let mut d = Drive::new();
    d.mount();
    let (a, b, c) = (d.path("a"), d.path("b"), d.path("c"));
    let (data_a, data_b) = (test_data(1, 300_000), test_data(2, 5000));
    fs::write(&a, &data_a).unwrap();
    fs::write(&b, &data_b).unwrap();
    fs::hard_link(&b, &c).unwrap();
    let ino_a = meta(&a).ino();
    fs::rename(&a, &b).unwrap();
    assert!(!a.exists(), "the old name is gone after rename");
    assert_file(&b, &data_a);
    assert_eq!((meta(&b).ino(), meta(&b).nlink()), (ino_a, 1), "b is now a's inode");
    assert_file(&c, &data_b);
    assert_eq!(meta(&c).nlink(), 1, "the replaced inode lost one link");
    fs::rename(&b, &b).expect("rename onto itself is a no-op");
    assert_file(&b, &data_a);
    d.unmount();
}

#[test]
fn rename_of_dirs_over_dirs() {
    let mut d = Drive::new();
    d.mount();
    fs::create_dir_all(d.path("src/inner")).unwrap();
    fs::write(d.path("src/f"), b"moved").unwrap();
    fs::create_dir_all(d.path("full")).unwrap();
    fs::write(d.path("full/x"), b"x").unwrap();
    fs::create_dir(d.path("empty")).unwrap();
    assert_errno(fs::rename(d.path("src"), d.path("full")), libc::ENOTEMPTY, "rename of a dir over a non-empty dir");
    assert_file(&d.path("full/x"), b"x");
    assert_errno(fs::rename(d.path("src"), d.path("src/inner/own")), libc::EINVAL, "rename of a dir into itself");
    fs::rename(d.path("src"), d.path("empty")).expect("rename of a dir over an empty dir");
    assert!(!d.path("src").exists());
    assert_file(&d.path("empty/f"), b"moved");
    assert!(meta(&d.path("empty/inner")).is_dir());
    assert_eq!(meta(&d.mnt).nlink(), 4, "root holds full and empty: nlink 2 + 2");
    d.unmount();
}

#[test]
fn renameat2_noreplace() {
    let mut d = Drive::new();
    d.mount();
    fs::write(d.path("a"), b"A").unwrap();
    fs::write(d.path("b"), b"B").unwrap();
    assert_errno(
        renameat2(&d.path("a"), &d.path("b"), libc::RENAME_NOREPLACE),
        libc::EEXIST,
        "RENAME_NOREPLACE onto b",
    );
    assert_file(&d.path("a"), b"A");
    assert_file(&d.path("b"), b"B");
    renameat2(&d.path("a"), &d.path("c"), libc::RENAME_NOREPLACE).expect("RENAME_NOREPLACE onto a free name");
    assert!(!d.path("a").exists());
    assert_file(&d.path("c"), b"A");
    d.unmount();
}

#[test]
fn renameat2_exchange() {
    let mut d = Drive::new();
    d.mount();
    fs::create_dir_all(d.path("one/dir")).unwrap();
    fs::write(d.path("one/dir/child"), b"child").unwrap();
    fs::create_dir(d.path("two")).unwrap();
    fs::write(d.path("two/file"), test_data(3, 70_000)).unwrap();
    let (dir_ino, file_ino) = (meta(&d.path("one/dir")).ino(), meta(&d.path("two/file")).ino());
    renameat2(&d.path("one/dir"), &d.path("two/file"), libc::RENAME_EXCHANGE).expect("RENAME_EXCHANGE");
    assert!(meta(&d.path("two/file")).is_dir(), "two/file is now the dir");
    assert_file(&d.path("two/file/child"), b"child");
    assert_file(&d.path("one/dir"), &test_data(3, 70_000));
    assert_eq!((meta(&d.path("two/file")).ino(), meta(&d.path("one/dir")).ino()), (dir_ino, file_ino));
    assert_eq!(
        (meta(&d.path("one")).nlink(), meta(&d.path("two")).nlink()),
        (2, 3),
        "the subdir moved from one to two"
    );
    assert_errno(
        renameat2(&d.path("one/dir"), &d.path("nope"), libc::RENAME_EXCHANGE),
        libc::ENOENT,
        "exchange with a missing name",
    );
    d.unmount();
}

#[test]
fn dir_nlink_counts_subdirs() {
    let mut d = Drive::new();
    d.mount();
    let dir = d.path("dir");
    fs::create_dir(&dir).unwrap();
    assert_eq!(meta(&dir).nlink(), 2, "a new dir");
    fs::create_dir(dir.join("a")).unwrap();
    fs::create_dir(dir.join("b")).unwrap();
    fs::write(dir.join("file"), b"files do not count").unwrap();
    assert_eq!(meta(&dir).nlink(), 4, "2 + two subdirs");
    fs::remove_dir(dir.join("a")).unwrap();
    assert_eq!(meta(&dir).nlink(), 3, "2 + one subdir");
    d.unmount();
}

#[test]
fn parent_times_change_on_create_and_unlink() {
    let mut d = Drive::new();
    d.mount();
    let dir = d.path("dir");
    fs::create_dir(&dir).unwrap();
    let stamp = |m: &fs::Metadata| ((m.mtime(), m.mtime_nsec()), (m.ctime(), m.ctime_nsec()));
    for (step, change) in [("create", 0), ("mkdir", 1), ("unlink", 2), ("rename in", 3)] {
        set_times(&dir, 946_684_800, 0); // 2000-01-01: any change moves mtime forward
        let before = meta(&dir);
        wait_clock_past(before.ctime());
        match change {
            0 => drop(File::create(dir.join("f")).unwrap()),
            1 => fs::create_dir(dir.join("sub")).unwrap(),
            2 => fs::remove_file(dir.join("f")).unwrap(),
            _ => {
                fs::write(d.path("outside"), b"o").unwrap();
                fs::rename(d.path("outside"), dir.join("moved")).unwrap();
            }
        }
        let (mtime, ctime) = stamp(&meta(&dir));
        assert!(mtime > (946_684_800, 0), "{step} must move the parent's mtime");
        assert!(ctime > stamp(&before).1, "{step} must move the parent's ctime");
    }
    d.unmount();
}

#[test]
fn concurrent_writers_on_different_files() {
    let mut d = Drive::new();
    d.mount();
    thread::scope(|scope| {
        for idx in 0..4u64 {
            let path = d.path(&format!("t{idx}"));
            scope.spawn(move || {
                let mut file = File::create(&path).unwrap();
                let data = test_data(10 + idx, 6 * MIB + idx as usize * 1000);
                for piece in data.chunks(64 * KIB + 3) {
                    file.write_all(piece).unwrap();
                }
                file.sync_all().unwrap();
            });
        }
    });
    for idx in 0..4u64 {
        assert_file(&d.path(&format!("t{idx}")), &test_data(10 + idx, 6 * MIB + idx as usize * 1000));
    }
    d.unmount();
}

#[test]
fn reader_sees_a_consistent_prefix_while_writer_appends() {
    let mut d = Drive::new();
    d.mount();
    let path = d.path("growing");
    let data = test_data(20, 10 * MIB);
    File::create(&path).unwrap();
    let done = AtomicBool::new(false);
    thread::scope(|scope| {
        scope.spawn(|| {
            let mut file = OpenOptions::new().append(true).open(&path).unwrap();
            for piece in data.chunks(64 * KIB) {
                file.write_all(piece).unwrap();
            }
            done.store(true, Ordering::SeqCst);
        });
        let mut seen = 0;
        let mut reads = 0;
        loop {
            let finished = done.load(Ordering::SeqCst);
            let mut got = Vec::new();
            File::open(&path).unwrap().read_to_end(&mut got).unwrap();
            assert!(got.len() >= seen, "the file shrank from {seen} to {} bytes while appending", got.len());
            assert!(got.len() <= data.len(), "read {} bytes of a {}-byte file", got.len(), data.len());
            assert_bytes_eq(&format!("read #{reads} during appends"), &got, &data[..got.len()]);
            seen = got.len();
            reads += 1;
            if finished {
                break;
            }
        }
        assert_eq!(seen, data.len(), "the last read, after the writer finished, sees everything");
    });
    d.unmount();
}

#[test]
fn o_append_writes_go_to_the_end() {
    let mut d = Drive::new();
    d.mount();
    let path = d.path("log");
    fs::write(&path, b"start").unwrap();
    let mut first = OpenOptions::new().append(true).open(&path).unwrap();
    let mut second = OpenOptions::new().append(true).open(&path).unwrap();
    first.write_all(b"A1").unwrap();
    second.write_all(b"B1").unwrap();
    first.write_all(b"A2").unwrap();
    assert_file(&path, b"startA1B1A2");
    let mut want = b"startA1B1A2".to_vec();
    let tail = test_data(21, 5 * MIB + 1);
    second.write_all(&tail).unwrap();
    want.extend_from_slice(&tail);
    first.write_all(b"end").unwrap();
    want.extend_from_slice(b"end");
    drop((first, second));
    assert_file(&path, &want);
    d.unmount();
}

#[test]
fn zero_byte_files() {
    let mut d = Drive::new();
    d.mount();
    drop(File::create(d.path("empty")).unwrap());
    assert_eq!(meta(&d.path("empty")).len(), 0);
    assert_file(&d.path("empty"), b"");
    fs::write(d.path("truncated"), test_data(22, 100_000)).unwrap();
    drop(File::create(d.path("truncated")).unwrap()); // O_TRUNC
    assert_eq!(meta(&d.path("truncated")).len(), 0, "O_TRUNC empties the file");
    let mut buf = [0; 16];
    assert_eq!(File::open(d.path("truncated")).unwrap().read(&mut buf).unwrap(), 0);
    d.unmount();
    d.mount();
    assert_file(&d.path("empty"), b"");
    assert_file(&d.path("truncated"), b"");
    d.unmount();
}

#[test]
fn sparse_file_reads_zeros() {
    let mut d = Drive::new();
    d.mount();
    let path = d.path("sparse");
    let offset = 100 * MIB as u64;
    let file = File::create(&path).unwrap();
    file.write_all_at(b"end", offset).unwrap();
    file.sync_all().unwrap();
    drop(file);
    assert_eq!(meta(&path).len(), offset + 3);
    // The hole takes no space: du counts what chunks cover.
    assert!(meta(&path).blocks() * 512 < MIB as u64, "a 100 MiB hole must not count: {} blocks", meta(&path).blocks());
    let got = fs::read(&path).unwrap();
    assert_eq!(got.len() as u64, offset + 3);
    assert_eq!(&got[got.len() - 3..], b"end");
    assert!(
        got[..got.len() - 3].iter().all(|&b| b == 0),
        "the hole reads back as zeros (first non-zero at {:?})",
        got[..got.len() - 3].iter().position(|&b| b != 0)
    );
    d.unmount();
}

#[test]
fn reads_past_eof_return_nothing() {
    let mut d = Drive::new();
    d.mount();
    let path = d.path("f");
    let data = test_data(23, 5000);
    fs::write(&path, &data).unwrap();
    let file = File::open(&path).unwrap();
    let mut buf = vec![0; 100];
    assert_eq!(file.read_at(&mut buf, 5000).unwrap(), 0, "read at EOF");
    assert_eq!(file.read_at(&mut buf, 1 << 30).unwrap(), 0, "read far past EOF");
    assert_eq!(file.read_at(&mut buf, 4990).unwrap(), 10, "a read across EOF is short");
    assert_eq!(&buf[..10], &data[4990..]);
    drop(file);
    d.unmount();
}

#[test]
fn overwrites_inside_a_file_keep_the_rest() {
    let mut d = Drive::new();
    d.mount();
    let path = d.path("f");
    let mut model = test_data(24, 9 * MIB);
    fs::write(&path, &model).unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    // Patches at block and chunk-size edges, plus one that extends the file.
    let patches: [(usize, usize); 7] = [
        (0, 1),
        (4095, 2),
        (256 * KIB - 1, 3),
        (MIB, 64 * KIB),
        (4 * MIB - 10, 20),
        (9 * MIB - 1, 1),
        (9 * MIB - 5, 10),
    ];
    for (idx, (at, len)) in patches.iter().enumerate() {
        let bytes = test_data(100 + idx as u64, *len);
        file.write_all_at(&bytes, *at as u64).unwrap();
        if model.len() < at + len {
            model.resize(at + len, 0);
        }
        model[*at..at + len].copy_from_slice(&bytes);
    }
    file.sync_all().unwrap();
    drop(file);
    assert_file(&path, &model);
    d.unmount();
    d.mount();
    assert_file(&path, &model);
    d.unmount();
}

#[test]
fn nobody_cannot_read_a_root_0600_file() {
    let mut d = Drive::new();
    // The temp home is 0700: open it so `nobody` can reach the mount point.
    fs::set_permissions(&d.home, fs::Permissions::from_mode(0o755)).unwrap();
    d.mount_with(&["--allow-other"]);
    fs::set_permissions(&d.mnt, fs::Permissions::from_mode(0o755)).unwrap();
    let (secret, public, shared) = (d.path("secret"), d.path("public"), d.path("shared"));
    fs::write(&secret, b"root only").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&public, b"everyone").unwrap();
    fs::set_permissions(&public, fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let as_nobody = |args: &[&str]| output_of(Command::new("runuser").args(["-u", "nobody", "--"]).args(args));
    let denied = |args: &[&str], what: &str| {
        let out = as_nobody(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{what}: nobody succeeded");
        assert!(stderr.contains("Permission denied") || stderr.contains("Operation not permitted"), "{what}: {stderr}");
    };
    let read = as_nobody(&["cat", s(&public)]);
    assert!(read.status.success(), "nobody must read a 0644 file: {}", String::from_utf8_lossy(&read.stderr));
    assert_eq!(read.stdout, b"everyone");
    let out = as_nobody(&["cat", s(&secret)]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "nobody reading a root 0600 file must get EACCES: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    denied(&["sh", "-c", "echo x >> \"$0\"", s(&public)], "append to a root 0644 file");
    denied(&["touch", s(&d.path("new"))], "create in a root 0755 dir");
    denied(&["chmod", "0666", s(&public)], "chmod of root's file");
    let made = as_nobody(&["touch", s(&shared.join("mine"))]);
    assert!(made.status.success(), "nobody may create in a 0777 dir: {}", String::from_utf8_lossy(&made.stderr));
    let owner = meta(&shared.join("mine"));
    assert_eq!((owner.uid(), owner.gid()), (65534, 65534), "a file belongs to the user who created it");
    assert_file(&secret, b"root only");
    assert_file(&public, b"everyone");
    d.unmount();
}

#[test]
fn shared_mmap_writes_reach_the_file() {
    let mut d = Drive::new();
    d.mount();
    let path = d.path("mapped");
    let len = 3 * MIB + 123;
    let mut want = test_data(900, len);
    fs::write(&path, &want).unwrap();
    {
        let file = fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        // SAFETY: a fresh shared mapping of a file this test owns, unmapped below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED, "mmap: {}", io::Error::last_os_error());
        // SAFETY: the mapping is `len` bytes long.
        let bytes = unsafe { std::slice::from_raw_parts_mut(map as *mut u8, len) };
        assert_eq!(&bytes[..4096], &want[..4096], "a mapping reads the file");
        for at in [0, 4095, MIB, 2 * MIB + 17, len - 1] {
            bytes[at] ^= 0xff;
            want[at] ^= 0xff;
        }
        // SAFETY: same mapping as above.
        unsafe {
            assert_eq!(libc::msync(map, len, libc::MS_SYNC), 0, "msync: {}", io::Error::last_os_error());
            libc::munmap(map, len);
        }
        file.sync_all().unwrap();
    }
    assert_file(&path, &want);
    d.unmount();
    d.mount();
    assert_file(&path, &want);
    d.unmount();
}

#[test]
fn seek_data_and_seek_hole_find_what_was_written() {
    let mut d = Drive::new();
    d.mount();
    let f = d.path("sparse");
    let (size, at, len) = (64 * MIB as u64, 40 * MIB as u64, MIB);
    let data = test_data(31, len);
    {
        let file = OpenOptions::new().create(true).truncate(true).write(true).open(&f).unwrap();
        file.set_len(size).unwrap();
        file.write_all_at(&data, at).unwrap();
        // Dirty bytes count as data before any commit.
        let rd = File::open(&f).unwrap();
        assert_eq!(seek(&rd, 0, libc::SEEK_DATA).unwrap(), at);
        assert_eq!(seek(&rd, 0, libc::SEEK_HOLE).unwrap(), 0);
        file.sync_all().unwrap();
    }
    let check = |f: &Path| {
        let file = File::open(f).unwrap();
        let data_at = seek(&file, 0, libc::SEEK_DATA).unwrap();
        assert!(data_at <= at, "data found at {data_at}, written at {at}");
        let hole_at = seek(&file, data_at as i64, libc::SEEK_HOLE).unwrap();
        assert!(hole_at >= at + len as u64 && hole_at <= size, "hole after the data at {hole_at}");
        assert_errno(seek(&file, hole_at as i64, libc::SEEK_DATA), libc::ENXIO, "no data after the last hole");
        assert_eq!(seek(&file, size as i64 - 1, libc::SEEK_HOLE).unwrap(), size - 1);
        assert_errno(seek(&file, size as i64, libc::SEEK_HOLE), libc::ENXIO, "SEEK_HOLE at the end");
        assert_errno(seek(&file, size as i64, libc::SEEK_DATA), libc::ENXIO, "SEEK_DATA at the end");
        // What lies before the data and after it reads as zeros.
        let mut bytes = vec![0u8; (hole_at - data_at) as usize];
        file.read_exact_at(&mut bytes, data_at).unwrap();
        assert_eq!(&bytes[(at - data_at) as usize..][..len], &data[..]);
        let mut head = vec![1u8; MIB];
        file.read_exact_at(&mut head, data_at.saturating_sub(MIB as u64)).unwrap();
        assert!(head[..(data_at.min(MIB as u64)) as usize].iter().all(|&b| b == 0));
    };
    check(&f);
    // A sparse-aware copy out of the mount keeps the bytes (coreutils
    // finds the data with SEEK_DATA).
    let out = tempfile::tempdir().unwrap();
    run("cp", &["--sparse=always", s(&f), s(&out.path().join("copy"))], None);
    let mut want = vec![0u8; size as usize];
    want[at as usize..at as usize + len].copy_from_slice(&data);
    assert_file(&out.path().join("copy"), &want);
    d.unmount();
    d.mount();
    check(&d.path("sparse"));
    d.unmount();
}

/// A small deterministic generator (xorshift64*), so a failing sequence
/// replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Random writes, truncates, punches, zeroings, fsyncs and reopens through
/// the kernel, each followed by a read compared with an in-memory model
/// (an fsx-style check of the whole write path: overlay, re-cutting,
/// streamed jobs, holes).
#[test]
fn random_operations_match_a_model() {
    let mut d = Drive::new();
    d.mount();
    const MAX: u64 = 12 * MIB as u64;
    let mut models = Vec::new();
    for seed in [0x9e37_79b9_7f4a_7c15_u64, 42] {
        let name = format!("fsx-{seed}");
        let path = d.path(&name);
        let mut rng = Rng(seed);
        let mut model: Vec<u8> = Vec::new();
        let open = || OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).unwrap();
        let mut file = open();
        for step in 0..300 {
            let size = model.len() as u64;
            let what = rng.below(10);
            match what {
                0..=3 => {
                    let off = rng.below(size.min(MAX) + MIB as u64);
                    let len = match rng.below(4) {
                        0 => 1,
                        1 => 4096,
                        _ => 1 + rng.below(2 * MIB as u64),
                    } as usize;
                    let data = test_data(rng.next(), len);
                    file.write_all_at(&data, off).unwrap();
                    let end = off as usize + len;
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[off as usize..end].copy_from_slice(&data);
                }
                4 => {
                    let to = rng.below(MAX);
                    file.set_len(to).unwrap();
                    model.resize(to as usize, 0);
                }
                5 | 6 if size > 0 => {
                    let (off, len) = (rng.below(size), 1 + rng.below(2 * MIB as u64));
                    let keep = what == 5 || rng.below(2) == 0;
                    let mode = if what == 5 {
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
                    } else if keep {
                        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
                    } else {
                        libc::FALLOC_FL_ZERO_RANGE
                    };
                    fallocate(&file, mode, off, len)
                        .unwrap_or_else(|e| panic!("fallocate mode {mode:#x} at {off}+{len}: {e}"));
                    let end = if keep { (off + len).min(size) } else { off + len } as usize;
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[off as usize..end].fill(0);
                }
                7 => file.sync_all().unwrap(),
                8 => file = open(),
                _ => {}
            }
            let got = file.metadata().unwrap().len();
            assert_eq!(got, model.len() as u64, "seed {seed} step {step} (op {what}): size");
            let off = rng.below(model.len() as u64) as usize;
            let len = (1 + rng.below(3 * MIB as u64) as usize).min(model.len() - off);
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, off as u64).unwrap();
            assert_bytes_eq(&format!("seed {seed} step {step} (op {what}) at {off}"), &buf, &model[off..off + len]);
        }
        drop(file);
        assert_file(&path, &model);
        models.push((name, model));
    }
    d.unmount();
    d.mount();
    for (name, model) in &models {
        assert_file(&d.path(name), model);
    }
    d.unmount();
}

fn copy_file_range(from: &File, off_in: u64, to: &File, off_out: u64, len: usize) -> io::Result<usize> {
    let (mut a, mut b) = (off_in as libc::loff_t, off_out as libc::loff_t);
    // SAFETY: two open descriptors and two offsets we own for the call.
    let n = unsafe { libc::copy_file_range(from.as_raw_fd(), &mut a, to.as_raw_fd(), &mut b, len, 0) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

#[test]
fn copy_file_range_copies_inside_the_drive() {
    let mut d = Drive::new();
    d.mount();
    let src = test_data(51, 5 * MIB + 123);
    fs::write(d.path("src"), &src).unwrap();
    let old = test_data(52, MIB);
    fs::write(d.path("dst"), &old).unwrap();
    let from = File::open(d.path("src")).unwrap();
    let to = OpenOptions::new().read(true).write(true).open(d.path("dst")).unwrap();
    // Into the middle of the destination and past its end.
    let mut want = old.clone();
    assert_eq!(copy_file_range(&from, 1000, &to, 4096, 3 * MIB).unwrap(), 3 * MIB);
    want.resize(4096 + 3 * MIB, 0);
    want[4096..].copy_from_slice(&src[1000..1000 + 3 * MIB]);
    // Past the end of the source: a short copy, then nothing.
    let tail = src.len() - 5 * MIB;
    let at = want.len() + 10_000;
    assert_eq!(copy_file_range(&from, 5 * MIB as u64, &to, at as u64, MIB).unwrap(), tail);
    want.resize(at + tail, 0);
    want[at..].copy_from_slice(&src[5 * MIB..]);
    assert_eq!(copy_file_range(&from, src.len() as u64, &to, 0, MIB).unwrap(), 0);
    // Within one file, ranges apart.
    let both = OpenOptions::new().read(true).write(true).open(d.path("src")).unwrap();
    assert_eq!(copy_file_range(&both, 0, &both, 4 * MIB as u64, 100_000).unwrap(), 100_000);
    let mut src_want = src.clone();
    src_want.copy_within(0..100_000, 4 * MIB);
    drop((from, to, both));
    assert_file(&d.path("dst"), &want);
    assert_file(&d.path("src"), &src_want);
    // A whole-file copy as cp makes it.
    run("cp", &[s(&d.path("src")), s(&d.path("copy"))], None);
    assert_file(&d.path("copy"), &src_want);
    d.unmount();
    d.mount();
    assert_file(&d.path("dst"), &want);
    d.unmount();
    let log = fs::read_to_string(d.home.join("pactfs.log")).unwrap();
    assert!(!log.contains("Not Implemented]"), "a call reached fuser's default handler:\n{log}");
}

#[test]
fn punching_a_hole_drops_whole_chunks() {
    let mut d = Drive::new();
    d.mount();
    let f = d.path("image");
    let mut model = test_data(71, 16 * MIB);
    fs::write(&f, &model).unwrap();
    let file = OpenOptions::new().read(true).write(true).open(&f).unwrap();
    let blocks_before = file.metadata().unwrap().blocks();
    let (off, len) = (2 * MIB as u64 + 12_345, 12 * MIB as u64);
    // A write still dirty inside the range goes with it.
    file.write_all_at(&test_data(72, 5000), off + 100).unwrap();
    fallocate(&file, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, len).expect("punch");
    model[off as usize..(off + len) as usize].fill(0);
    let check = |file: &File| {
        assert_eq!(file.metadata().unwrap().len(), 16 * MIB as u64, "a punch keeps the size");
        // Holes are whole blocks: the block the punch starts in and the
        // one it ends in still hold data.
        let block = BLOCK as u64;
        assert_eq!(
            seek(file, 0, libc::SEEK_HOLE).unwrap(),
            off.next_multiple_of(block),
            "the hole starts at the punch"
        );
        let hole = off.next_multiple_of(block) as i64;
        assert_eq!(seek(file, hole, libc::SEEK_DATA).unwrap(), (off + len) / block * block, "data again at its end");
    };
    check(&file);
    let blocks_after = file.metadata().unwrap().blocks();
    assert!(
        blocks_after * 512 + 11 * MIB as u64 <= blocks_before * 512,
        "st_blocks went from {blocks_before} to {blocks_after}: the punched chunks still count"
    );
    drop(file);
    assert_file(&f, &model);
    d.unmount();
    d.mount();
    assert_file(&d.path("image"), &model);
    check(&File::open(d.path("image")).unwrap());
    d.unmount();
}
