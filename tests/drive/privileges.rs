//! Set-user-ID, set-group-ID and file capabilities are dropped when another
//! user changes a file, as on a local disk. The mount takes this over from
//! the kernel (FUSE_HANDLE_KILLPRIV_V2), so the rules live in pactfs: each
//! case here is what ext4 does with the same calls (checked by hand on a
//! plain directory when this was written).

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::common::*;

const CAPS: &str = "security.capability";

/// A version-2 capability set granting CAP_NET_RAW (bit 13), permitted and
/// effective: what `setcap cap_net_raw+ep` writes.
fn caps_blob() -> Vec<u8> {
    let magic: u32 = 0x0200_0000 | 1; // VFS_CAP_REVISION_2 | effective
    let permitted: u32 = 1 << 13;
    [magic, permitted, 0, 0, 0].iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn set_caps(path: &Path) {
    let (p, n) = (CString::new(path.as_os_str().as_bytes()).unwrap(), CString::new(CAPS).unwrap());
    let blob = caps_blob();
    // SAFETY: valid NUL-terminated strings and a live buffer of blob.len() bytes.
    let rc = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), blob.as_ptr().cast(), blob.len(), 0) };
    assert_eq!(rc, 0, "setxattr {CAPS} on {}: {}", path.display(), std::io::Error::last_os_error());
}

fn has_caps(path: &Path) -> bool {
    let (p, n) = (CString::new(path.as_os_str().as_bytes()).unwrap(), CString::new(CAPS).unwrap());
    // SAFETY: valid NUL-terminated strings; a size query with no buffer.
    let rc = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        assert_eq!(err.raw_os_error(), Some(libc::ENODATA), "getxattr {CAPS} on {}: {err}", path.display());
    }
    rc > 0
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).mode() & 0o7777
}

/// A root-owned file holding `hi\n` with exactly `perm`.
fn file_with(path: &Path, perm: u32) {
    fs::write(path, b"hi\n").unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(perm)).unwrap();
    assert_eq!(mode(path), perm, "{} set up", path.display());
}

#[test]
fn another_users_changes_drop_setuid_setgid_and_capabilities() {
    let mut d = Drive::new();
    // The temp home is 0700: open it so `nobody` can reach the mount point.
    fs::set_permissions(&d.home, fs::Permissions::from_mode(0o755)).unwrap();
    d.mount_with(&["--allow-other"]);
    fs::set_permissions(&d.mnt, fs::Permissions::from_mode(0o777)).unwrap();
    let path = |name: &str| d.path(name);

    let appended = path("appended");
    file_with(&appended, 0o6777);
    let no_group_exec = path("no-group-exec");
    file_with(&no_group_exec, 0o2666);
    let truncated = path("truncated");
    file_with(&truncated, 0o6777);
    let preallocated = path("preallocated");
    file_with(&preallocated, 0o6777);
    let capable = path("capable");
    file_with(&capable, 0o4777);
    set_caps(&capable);
    assert!(has_caps(&capable), "the capability is stored");

    let script = format!(
        "set -e; echo x >> '{}'; echo y >> '{}'; truncate -s 1 '{}'; fallocate -l 100000 '{}'; echo z >> '{}'",
        s(&appended),
        s(&no_group_exec),
        s(&truncated),
        s(&preallocated),
        s(&capable)
    );
    let out = output_of(Command::new("runuser").args(["-u", "nobody", "--", "sh", "-c", &script]));
    assert!(out.status.success(), "nobody's writes: {}", String::from_utf8_lossy(&out.stderr));

    assert_eq!(mode(&appended), 0o777, "a write by another user drops set-user-ID and set-group-ID");
    // nobody is not in root's group: even without group execute the bit goes.
    assert_eq!(mode(&no_group_exec), 0o666, "set-group-ID, writer outside the group");
    assert_eq!(mode(&truncated), 0o777, "a truncate by another user drops both");
    assert_eq!(mode(&preallocated), 0o777, "fallocate by another user drops both");
    assert_eq!(mode(&capable), 0o777, "set-user-ID goes with the capability");
    assert!(!has_caps(&capable), "a write by another user drops file capabilities");
    assert_eq!(fs::read(&appended).unwrap(), b"hi\nx\n", "the write itself landed");
    assert_eq!(fs::metadata(&truncated).unwrap().len(), 1);
    assert_eq!(fs::metadata(&preallocated).unwrap().len(), 100_000);

    // Root has CAP_FSETID: its writes keep the bits; a chown drops them
    // whoever asks; a directory keeps set-group-ID (it means inheritance).
    let by_root = path("by-root");
    file_with(&by_root, 0o6777);
    fs::OpenOptions::new()
        .append(true)
        .open(&by_root)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"r\n"))
        .unwrap();
    assert_eq!(mode(&by_root), 0o6777, "root's write keeps the bits");
    let root_capable = path("root-capable");
    file_with(&root_capable, 0o4755);
    set_caps(&root_capable);
    fs::OpenOptions::new()
        .append(true)
        .open(&root_capable)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"r\n"))
        .unwrap();
    assert!(!has_caps(&root_capable), "any write drops file capabilities, root's too");
    assert_eq!(mode(&root_capable), 0o4755, "root's write keeps set-user-ID while capabilities go");
    let given = path("given-away");
    file_with(&given, 0o6777);
    std::os::unix::fs::chown(&given, Some(65534), None).unwrap();
    assert_eq!(mode(&given), 0o777, "chown drops both (group execute is set)");
    let locking = path("mandatory-locking");
    file_with(&locking, 0o2666);
    std::os::unix::fs::chown(&locking, Some(65534), None).unwrap();
    assert_eq!(mode(&locking), 0o2666, "root's chown keeps set-group-ID without group execute");
    let dir = path("inheriting");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o2777)).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
    assert_eq!(mode(&dir), 0o2777, "a directory keeps set-group-ID through chown");

    // All of it is stored, not only in the kernel's attribute cache.
    d.unmount();
    d.mount_with(&["--allow-other"]);
    assert_eq!(mode(&appended), 0o777);
    assert_eq!(mode(&by_root), 0o6777);
    assert!(!has_caps(&capable));
    d.unmount();
}
