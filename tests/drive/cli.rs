//! The command line itself: init, config check/show, the foreground node.

use crate::common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

#[test]
fn init_writes_owner_only_keys_and_refuses_to_overwrite() {
    let mut d = Drive::new();
    for key in ["identity.key", "user.secret"] {
        let meta = fs::metadata(d.home.join(key)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{key} must be owner-only");
        assert_eq!(meta.len(), 32, "{key} holds 32 bytes");
    }
    let before = fs::read(d.home.join("user.secret")).unwrap();
    let again = d.pactfs(&["init"]);
    assert_eq!(again.status.code(), Some(2), "a second init must fail:\n{}", d.last_command());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"), "{}", d.last_command());
    assert_eq!(fs::read(d.home.join("user.secret")).unwrap(), before, "the secret must be untouched");
}

#[test]
fn config_check_names_file_line_and_key() {
    let mut d = Drive::new();
    d.pactfs_ok(&["config", "check"]);
    let bad = d.home.join("bad.toml");
    fs::write(&bad, "[storage]\nreplication = 3\nchunk_min = \"lots\"\n").unwrap();
    let out = d.pactfs(&["config", "check", s(&bad)]);
    assert_eq!(out.status.code(), Some(2), "{}", d.last_command());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:", bad.display())), "no file:line in: {err}");
    assert!(err.contains("storage.chunk_min"), "no key in: {err}");
    fs::write(&bad, "[storage]\nreplicaton = 3\n").unwrap();
    let out = d.pactfs(&["config", "check", s(&bad)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":2:") && err.contains("replicaton"), "unknown key not named: {err}");
    // A bad home config stops a mount before anything is mounted.
    fs::write(&d.config, "[network]\nmode = \"mesh\"\n").unwrap();
    let out = d.try_mount_at(&d.mnt.clone());
    assert_eq!(out.status.code(), Some(2), "{}", d.last_command());
    assert!(!is_mounted(&d.mnt), "a refused config must not mount");
}

#[test]
fn config_show_prints_the_effective_config() {
    let mut d = Drive::new();
    d.set_config("storage", "capacity", "\"10GiB\"");
    let toml = stdout_of(&d.pactfs_ok(&["config", "show"]));
    assert!(toml.contains("capacity = \"10GiB\""), "{toml}");
    assert!(toml.contains("[network]") && toml.contains("mode = \"hybrid\""), "{toml}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout_of(&d.pactfs_ok(&["config", "show", "--json"]))).unwrap();
    assert_eq!(json["storage"]["replication"], 3);
}

#[test]
fn foreground_node_unmounts_and_flushes_on_sigterm() {
    let d = Drive::new();
    let mut child = Command::new(PACTFS)
        .args(["--home", s(&d.home), "mount", "--foreground", s(&d.mnt)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the foreground mount to appear", WAIT_TIMEOUT, || is_mounted(&d.mnt));
    let data = test_data(77, 3 * MIB + 5);
    // Written without fsync: the clean stop must flush it.
    fs::write(d.path("kept"), &data).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "the node must exit cleanly on SIGTERM: {status}");
    assert!(!is_mounted(&d.mnt), "SIGTERM must unmount");
    let mut d = d;
    d.mount();
    assert_file(&d.path("kept"), &data);
    d.unmount();
}

#[test]
fn control_socket_is_owner_only_and_survives_garbage() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let mut d = Drive::new();
    d.mount();
    let socket = d.home.join("control.sock");
    let mode = fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the control socket must be owner-only");
    // Garbage, an unknown command, and a line far over the limit: each gets
    // an error or a closed connection, never a dead node.
    let big = vec![b'x'; 4 * MIB];
    for payload in [&b"\x00\xff garbage\n"[..], &b"{\"cmd\":\"format_disk\"}\n"[..], &big[..]] {
        let mut conn = UnixStream::connect(&socket).unwrap();
        let _ = conn.write_all(payload);
        let _ = conn.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        let _ = BufReader::new(&conn).read_line(&mut answer);
        if !answer.is_empty() {
            let reply: serde_json::Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(reply["ok"], false, "garbage must not succeed: {answer}");
        }
    }
    let stats = d.stats();
    assert_eq!(stats["files"], 0, "the node still answers: {stats}");
    fs::write(d.path("still-works"), b"yes").unwrap();
    assert_file(&d.path("still-works"), b"yes");
    // `unmount` is an alias of `umount` (the word people type).
    d.unmount_as("unmount");
}

#[test]
fn mount_helper_mounts_and_plain_umount_stops_the_node_cleanly() {
    let d = Drive::new();
    let helper = concat!(env!("CARGO_MANIFEST_DIR"), "/mount-helpers/mount.fuse.pactfs");
    // What mount(8) runs for `mount -t fuse.pactfs HOME MNT -o allow_other`.
    let out = output_of(
        Command::new("sh").args([helper, s(&d.home), s(&d.mnt), "-o", "rw,allow_other"]).env("PACTFS_BIN", PACTFS),
    );
    assert!(out.status.success(), "helper failed: {}", String::from_utf8_lossy(&out.stderr));
    let pid: i32 = key_value(&String::from_utf8_lossy(&out.stdout), "Pid").and_then(|p| p.parse().ok()).unwrap();
    assert!(is_mounted(&d.mnt));
    let data = test_data(78, MIB + 3);
    fs::write(d.path("via-helper"), &data).unwrap();
    // A plain umount(8), not `pactfs umount`: the node must notice, flush
    // and exit by itself.
    run("umount", &[s(&d.mnt)], None);
    wait_for("the node to exit after umount(8)", WAIT_TIMEOUT, || process_gone(pid));
    let mut d = d;
    let fsck = d.pactfs(&["fsck"]);
    assert_eq!(fsck.status.code(), Some(0), "{}", d.last_command());
    d.mount();
    assert_file(&d.path("via-helper"), &data);
    d.unmount();
}

#[test]
fn umount_of_a_busy_drive_refuses_and_lazy_detaches_it() {
    use std::io::Read;
    let mut d = Drive::new();
    d.mount();
    let pid = d.pid().unwrap();
    let mnt = s(&d.mnt).to_owned();
    fs::write(d.path("held"), b"held open").unwrap();
    let mut held = fs::File::open(d.path("held")).unwrap();

    // In use: refused like umount(8), and the drive goes on serving.
    let out = d.pactfs(&["umount", &mnt]);
    assert_eq!(out.status.code(), Some(1), "a busy drive must not unmount:\n{}", d.last_command());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("is busy") && said.contains("--lazy"), "the refusal must say why and what to do:\n{said}");
    assert!(is_mounted(&d.mnt), "a refused unmount must leave the drive mounted");
    assert!(!process_gone(pid), "a refused unmount must leave the node running");
    fs::write(d.path("after"), b"written after the refusal").unwrap();
    assert_file(&d.path("held"), b"held open");

    // --lazy: out of the mount table at once; the open file still reads,
    // and the node exits only once it is closed.
    let out = d.pactfs_ok(&["umount", "--lazy", &mnt]);
    assert!(stdout_of(&out).contains("Detached"), "{}", d.last_command());
    assert!(!is_mounted(&d.mnt), "--lazy must take the drive out of the mount table");
    let mut text = String::new();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(text, "held open", "a file open on the detached drive must still read");
    assert!(!process_gone(pid), "the node must serve the detached drive while it is in use");
    drop(held);
    d.node_died();

    // Nothing written before, between or after was lost.
    assert_eq!(d.pactfs(&["fsck"]).status.code(), Some(0), "{}", d.last_command());
    d.mount();
    assert_file(&d.path("held"), b"held open");
    assert_file(&d.path("after"), b"written after the refusal");
    d.unmount();
}
