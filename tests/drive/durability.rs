//! Durability with real processes: what was fsynced survives `kill -9`
//! (journaled page writes and appends included), the offline commands
//! refuse a mounted home, umount/remount keeps everything, identical
//! content is stored once, and a one-byte write costs a few chunks.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use crate::common::*;

#[test]
fn fsynced_data_survives_kill9() {
    let src = tempfile::tempdir().unwrap();
    let mut d = Drive::new();
    d.mount();
    // dd with conv=fsync, from files outside the mount.
    let dd_files = [("dd_small", 4097), ("dd_multi", 5 * MIB + 3)];
    for (idx, (name, size)) in dd_files.iter().enumerate() {
        let input = src.path().join(name);
        fs::write(&input, test_data(100 + idx as u64, *size)).unwrap();
        let (input_arg, output_arg) = (format!("if={}", s(&input)), format!("of={}", s(&d.path(name))));
        run("dd", &[&input_arg, &output_arg, "bs=64k", "conv=fsync", "status=none"], None);
    }
    sync_dir(&d.mnt);
    // A new dir (fsynced into its parent) holding File::sync_all'ed files.
    fs::create_dir(d.path("dir")).unwrap();
    sync_dir(&d.mnt);
    fs::create_dir(d.path("dir/empty_sub")).unwrap();
    sync_dir(&d.path("dir"));
    let synced =
        [("dir/zero", 0), ("dir/one", 1), ("dir/page_plus", 4097), ("dir/avg_plus", MIB + 1), ("dir/big", 9 * MIB)];
    for (idx, (rel, size)) in synced.iter().enumerate() {
        write_synced(&d.path(rel), &test_data(200 + idx as u64, *size));
    }
    // An in-place overwrite of a synced file, fsynced.
    let patch = test_data(250, 10_000);
    let patched = OpenOptions::new().write(true).open(d.path("dir/big")).unwrap();
    patched.write_all_at(&patch, 3 * MIB as u64 - 17).unwrap();
    patched.sync_all().unwrap();
    drop(patched);
    // An atomic replace, fsynced: the new version is what must survive.
    write_synced(&d.path("doc"), b"version 1");
    write_synced(&d.path("doc.tmp"), b"version 2");
    fs::rename(d.path("doc.tmp"), d.path("doc")).unwrap();
    sync_dir(&d.mnt);
    // Never synced: may be lost, must not damage anything.
    fs::write(d.path("unsynced"), test_data(300, 2 * MIB)).unwrap();

    d.kill9();
    let fsck = d.pactfs(&["fsck"]);
    assert_eq!(fsck.status.code(), Some(0), "fsck after kill -9 must find a clean drive:\n{}", d.last_command());
    d.mount();
    for (idx, (name, size)) in dd_files.iter().enumerate() {
        assert_file(&d.path(name), &test_data(100 + idx as u64, *size));
    }
    for (idx, (rel, size)) in synced.iter().enumerate() {
        let mut want = test_data(200 + idx as u64, *size);
        if *rel == "dir/big" {
            want[3 * MIB - 17..3 * MIB - 17 + patch.len()].copy_from_slice(&patch);
        }
        assert_file(&d.path(rel), &want);
    }
    assert!(d.path("dir/empty_sub").is_dir(), "fsynced mkdir lost by kill -9");
    assert_file(&d.path("doc"), b"version 2");
    assert!(!d.path("doc.tmp").exists(), "fsynced rename lost by kill -9: doc.tmp is back");
    if d.path("unsynced").exists() {
        let got = fs::read(d.path("unsynced")).expect("a file that survived kill -9 must be readable");
        assert!(got.len() <= 2 * MIB, "unsynced file grew to {} bytes", got.len());
    }
    // The drive is writable again.
    write_synced(&d.path("after"), &test_data(301, 70_000));
    assert_file(&d.path("after"), &test_data(301, 70_000));
    d.unmount();
}

/// A database's pattern: pages written in place in a large file and an
/// append-only log, each fsynced while the files stay open. The fsyncs
/// go to the journal (no chunk is written), and kill -9 loses none of it.
#[test]
fn journaled_page_writes_and_appends_survive_kill9() {
    const PAGE: usize = 4096;
    let mut d = Drive::new();
    d.mount();
    let mut db_model = test_data(700, 24 * MIB);
    write_synced(&d.path("db"), &db_model);
    let mut log_model = test_data(701, 600_000);
    write_synced(&d.path("log"), &log_model);
    let before = d.stat("chunks_written");
    let db = OpenOptions::new().read(true).write(true).open(d.path("db")).unwrap();
    let mut log = OpenOptions::new().append(true).open(d.path("log")).unwrap();
    let mut x = 12345u64;
    for round in 0..20u64 {
        for k in 0..8u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let page = (x >> 33) as usize % (db_model.len() / PAGE);
            let bytes = test_data(800 + round * 8 + k, PAGE);
            db.write_all_at(&bytes, (page * PAGE) as u64).unwrap();
            db_model[page * PAGE..(page + 1) * PAGE].copy_from_slice(&bytes);
        }
        db.sync_data().unwrap();
        let line = test_data(900 + round, 3000);
        log.write_all(&line).unwrap();
        log_model.extend_from_slice(&line);
        log.sync_all().unwrap();
    }
    assert_eq!(d.stat("chunks_written"), before, "the fsyncs re-cut chunks instead of journaling");
    // Written, never synced: may be lost, must not damage anything.
    db.write_all_at(&[0xAA; PAGE], 0).unwrap();

    d.kill9();
    drop((db, log));
    let fsck = d.pactfs(&["fsck", "--json"]);
    assert_eq!(fsck.status.code(), Some(0), "fsck with journal records pending:\n{}", d.last_command());
    let report: serde_json::Value = serde_json::from_slice(&fsck.stdout).unwrap();
    assert_eq!(report["journaled"], 2, "db and log have journal records:\n{report}");
    d.mount();
    let got = fs::read(d.path("db")).unwrap();
    assert_eq!(got.len(), db_model.len());
    if got[..PAGE] == [0xAA; PAGE] {
        db_model[..PAGE].copy_from_slice(&[0xAA; PAGE]);
    }
    assert_bytes_eq("db after kill -9", &got, &db_model);
    assert_file(&d.path("log"), &log_model);
    d.unmount();
    let fsck = d.pactfs(&["fsck", "--json"]);
    assert_eq!(fsck.status.code(), Some(0), "fsck after the journal was cut:\n{}", d.last_command());
    let report: serde_json::Value = serde_json::from_slice(&fsck.stdout).unwrap();
    assert_eq!(report["journaled"], 0, "the mount cut every journal:\n{report}");
}

#[test]
fn kill9_during_unsynced_writes_leaves_a_consistent_drive() {
    let mut d = Drive::new();
    d.mount();
    let safe = test_data(400, 3 * MIB);
    write_synced(&d.path("safe"), &safe);
    let stream = d.path("stream");
    let mut writer = Command::new("dd")
        .args(["if=/dev/urandom", &format!("of={}", s(&stream)), "bs=1M", "count=512", "status=none"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dd");
    wait_for("dd to write 16 MiB into the mount", COMMAND_TIMEOUT, || {
        fs::metadata(&stream).map(|m| m.len() >= 16 * MIB as u64).unwrap_or(false)
    });
    d.kill9();
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(writer.wait());
    });
    let _exit = done_rx.recv_timeout(WAIT_TIMEOUT).expect("dd never exited after the daemon was killed under it");
    let fsck = d.pactfs(&["fsck"]);
    assert_eq!(fsck.status.code(), Some(0), "fsck after kill -9 mid-write:\n{}", d.last_command());
    d.mount();
    assert_file(&d.path("safe"), &safe);
    if stream.exists() {
        fs::read(&stream).expect("a partly written file that survived kill -9 must be readable");
    }
    write_synced(&d.path("after"), &test_data(401, MIB));
    assert_file(&d.path("after"), &test_data(401, MIB));
    d.unmount();
    let fsck = d.pactfs(&["fsck"]);
    assert_eq!(fsck.status.code(), Some(0), "fsck after a clean umount:\n{}", d.last_command());
}

#[test]
fn fsck_refused_while_mounted() {
    let mut d = Drive::new();
    d.mount();
    fs::write(d.path("f"), b"still here").unwrap();
    let fsck = d.pactfs(&["fsck"]);
    assert_eq!(fsck.status.code(), Some(2), "fsck on a mounted home must refuse with exit 2:\n{}", d.last_command());
    assert!(is_mounted(&d.mnt), "a refused fsck must leave the mount alone");
    assert_file(&d.path("f"), b"still here");
    d.unmount();
    let fsck = d.pactfs(&["fsck"]);
    assert_eq!(fsck.status.code(), Some(0), "fsck after umount:\n{}", d.last_command());
}

#[test]
fn second_mount_of_a_home_is_refused() {
    let mut d = Drive::new();
    d.mount();
    fs::write(d.path("f"), b"first mount").unwrap();
    let second_mnt = d.home.join("mnt2");
    let second = d.try_mount_at(&second_mnt);
    let message = d.last_command().to_owned();
    assert_eq!(second.status.code(), Some(2), "a second mount of the same home must exit 2:\n{message}");
    assert!(!second.stderr.is_empty(), "a refused mount must say why on stderr:\n{message}");
    assert!(!is_mounted(&second_mnt), "the refused mount left {} mounted", second_mnt.display());
    assert!(!d.pid().is_some_and(process_gone), "the refusal must not stop the running daemon");
    assert_file(&d.path("f"), b"first mount");
    fs::write(d.path("g"), b"still writable").unwrap();
    d.unmount();
    d.mount();
    assert_file(&d.path("g"), b"still writable");
    d.unmount();
}

#[test]
fn umount_and_remount_keep_everything() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    make_tree(&tree, true);
    let mut d = Drive::new();
    d.mount();
    run("cp", &["-a", s(&tree), s(&d.path("tree"))], None);
    run("setfattr", &["-n", "user.kept", "-v", "across-remount", s(&d.path("tree/one"))], None);
    let full = Compare { mtimes: true, nlink: true };
    compare_trees(&tree, &d.path("tree"), full);
    let inode = fs::symlink_metadata(d.path("tree/page_plus")).unwrap().ino();
    for cycle in 0..2 {
        d.unmount();
        let fsck = d.pactfs(&["fsck"]);
        assert_eq!(fsck.status.code(), Some(0), "fsck after umount (cycle {cycle}):\n{}", d.last_command());
        d.mount();
        compare_trees(&tree, &d.path("tree"), full);
        let xattr = run("getfattr", &["-n", "user.kept", "--only-values", s(&d.path("tree/one"))], None);
        assert_eq!(xattr.stdout, b"across-remount", "xattr after remount (cycle {cycle})");
        let (a, b) = (
            fs::symlink_metadata(d.path("tree/page_plus")).unwrap(),
            fs::symlink_metadata(d.path("tree/a/hard")).unwrap(),
        );
        assert_eq!((a.ino(), b.ino(), a.nlink()), (inode, inode, 2), "hard link and inode number after remount");
    }
    d.unmount();
}

#[test]
fn identical_content_is_stored_once() {
    let mut d = Drive::new();
    d.mount();
    let data = test_data(500, 8 * MIB);
    write_synced(&d.path("first"), &data);
    let (chunks_before, saved_before) = (d.stat("chunks"), d.stat("dedup_saved_bytes"));
    assert!(
        chunks_before >= 2,
        "8 MiB is more than one chunk at chunk_max 4 MiB, yet stats shows {chunks_before} chunks"
    );
    fs::create_dir(d.path("elsewhere")).unwrap();
    write_synced(&d.path("elsewhere/second"), &data);
    let stats = d.stats();
    let field =
        |name: &str| stats[name].as_u64().unwrap_or_else(|| panic!("stats --json has no integer `{name}`: {stats}"));
    assert_eq!(field("chunks"), chunks_before, "a second copy of the same bytes must add no chunk: {stats}");
    assert!(
        field("dedup_saved_bytes") >= saved_before + 8 * MIB as u64,
        "dedup_saved_bytes grew by less than 8 MiB: {stats}"
    );
    assert_file(&d.path("first"), &data);
    assert_file(&d.path("elsewhere/second"), &data);
    d.unmount();
}

#[test]
fn one_byte_write_rewrites_a_handful_of_chunks() {
    const SIZE: u64 = 256 * MIB as u64;
    const SEED: u64 = 600;
    let mut d = Drive::new();
    d.mount();
    let path = d.path("huge");
    let file = OpenOptions::new().create_new(true).read(true).write(true).open(&path).unwrap();
    let mut buf = vec![0; 4 * MIB];
    let mut writer = &file;
    for offset in (0..SIZE).step_by(buf.len()) {
        fill(SEED, offset, &mut buf);
        writer.write_all(&buf).unwrap_or_else(|e| panic!("write at {offset}: {e}"));
    }
    file.sync_all().unwrap();
    let written_before = d.stat("chunks_written");
    let middle = SIZE / 2 + 12_345;
    let mut old = [0];
    fill(SEED, middle, &mut old);
    let new = [!old[0]];
    file.write_all_at(&new, middle).unwrap();
    file.sync_all().unwrap();
    assert_eq!(d.stat("chunks_written"), written_before, "the fsync of a 1-byte write journals it");
    // `pactfs sync` (as a last close would) cuts it into chunks.
    d.pactfs_ok(&["sync"]);
    let rewritten = d.stat("chunks_written") - written_before;
    assert!((1..=8).contains(&rewritten), "a 1-byte write in a 256 MiB file wrote {rewritten} chunks (want 1..=8)");

    // Read the whole file back in pieces: the changed byte, its neighbours, everything else.
    drop(file);
    let reader = File::open(&path).unwrap();
    assert_eq!(reader.metadata().unwrap().len(), SIZE);
    let (mut got, mut want) = (vec![0; 4 * MIB], vec![0; 4 * MIB]);
    for offset in (0..SIZE).step_by(got.len()) {
        reader.read_exact_at(&mut got, offset).unwrap_or_else(|e| panic!("read at {offset}: {e}"));
        fill(SEED, offset, &mut want);
        if (offset..offset + want.len() as u64).contains(&middle) {
            let at = (middle - offset) as usize;
            want[at] = new[0];
            assert_eq!(got[at - 3..=at + 3], want[at - 3..=at + 3], "the written byte and its neighbours");
        }
        assert_bytes_eq(&format!("huge at offset {offset}"), &got, &want);
    }
    drop(reader);
    d.unmount();
}

/// A size-limited tmpfs, unmounted on drop (after the drive inside it).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(size: &str) -> SmallDisk {
        let dir = tempfile::Builder::new().prefix("pactfs-disk-").tempdir().unwrap();
        run("mount", &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", s(dir.path())], None);
        SmallDisk { dir }
    }

    fn resize(&self, size: &str) {
        run("mount", &["-o", &format!("remount,size={size}"), s(self.dir.path())], None);
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[test]
fn full_disk_fails_writes_cleanly_and_loses_nothing_synced() {
    let disk = SmallDisk::new("48m");
    let mut d = Drive::new_in(disk.dir.path());
    d.mount();
    let kept = test_data(500, 5 * MIB + 7);
    write_synced(&d.path("kept"), &kept);
    // Far more than the disk holds: the write must fail with ENOSPC, not
    // take the node down.
    let input = tempfile::NamedTempFile::new().unwrap();
    fs::write(input.path(), test_data(501, 96 * MIB)).unwrap();
    let out = output_of(Command::new("dd").args([
        &format!("if={}", s(input.path())),
        &format!("of={}", s(&d.path("too_big"))),
        "bs=1M",
        "conv=fsync",
    ]));
    assert!(!out.status.success(), "writing 96 MiB to a 48 MiB disk must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("No space left"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(is_mounted(&d.mnt), "the node must survive a full disk");
    assert_file(&d.path("kept"), &kept);
    d.unmount();
    // Space comes back: the drive mounts, is consistent, and kept its data.
    disk.resize("512m");
    let fsck = d.pactfs(&["fsck"]);
    assert_eq!(fsck.status.code(), Some(0), "fsck after a full disk:\n{}", d.last_command());
    d.mount();
    assert_file(&d.path("kept"), &kept);
    write_synced(&d.path("after"), &test_data(502, MIB));
    assert_file(&d.path("after"), &test_data(502, MIB));
    d.unmount();
}

#[test]
fn a_corrupt_chunk_is_reported_and_never_served() {
    let mut d = Drive::new();
    d.mount();
    let data = test_data(600, 3 * MIB);
    write_synced(&d.path("victim"), &data);
    d.unmount();
    // Flip a byte every 64 KiB of the pack: every body of the file is hit.
    // (Not just one byte in the middle: a flush from any process that
    // forked while the file was open commits early, and the pack may hold
    // dead bodies from that.)
    let packs: Vec<_> = fs::read_dir(d.home.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| fs::metadata(p).unwrap().len() > MIB as u64)
        .collect();
    assert_eq!(packs.len(), 1, "one pack holds the file: {packs:?}");
    let pack = OpenOptions::new().read(true).write(true).open(&packs[0]).unwrap();
    let len = pack.metadata().unwrap().len();
    for at in (4096..len).step_by(64 * 1024) {
        let mut byte = [0u8; 1];
        pack.read_exact_at(&mut byte, at).unwrap();
        pack.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
    }
    drop(pack);

    let fsck = d.pactfs(&["fsck", "--json"]);
    assert_eq!(fsck.status.code(), Some(1), "fsck must report the bad chunks:\n{}", d.last_command());
    let report: serde_json::Value = serde_json::from_slice(&fsck.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["what"].as_str().unwrap().contains("do not match the id")),
        "no id mismatch among {findings:?}"
    );
    // --repair cannot mend it and must not delete the only copy.
    let repair = d.pactfs(&["fsck", "--repair"]);
    assert_eq!(repair.status.code(), Some(1), "{}", d.last_command());
    assert_eq!(d.pactfs(&["fsck"]).status.code(), Some(1), "the bad chunk must still be there and reported");

    d.mount();
    let mut file = File::open(d.path("victim")).unwrap();
    let mut got = Vec::new();
    let err = std::io::Read::read_to_end(&mut file, &mut got).expect_err("reading a corrupt chunk must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // Whatever was returned before the error is the file's true bytes.
    assert_eq!(&got[..], &data[..got.len()], "bytes served before the bad chunk must be right");
    drop(file);
    d.unmount();
}

/// A node that panics (fault injected through a magic xattr) leaves no dead
/// mount behind and loses nothing that was synced.
#[cfg(feature = "fault-injection")]
#[test]
fn a_panicking_node_detaches_its_mount_and_loses_nothing_synced() {
    let mut d = Drive::new();
    d.mount();
    let kept = test_data(700, 2 * MIB + 5);
    write_synced(&d.path("kept"), &kept);
    let out =
        output_of(Command::new("setfattr").args(["-n", "user.pactfs.fault.panic", "-v", "1", s(&d.path("kept"))]));
    assert!(!out.status.success(), "the faulting call cannot succeed");
    d.node_died();
    assert!(!is_mounted(&d.mnt), "the panicking node must detach its mount, not leave it dead");
    let fsck = d.pactfs(&["fsck"]);
    assert_eq!(fsck.status.code(), Some(0), "fsck after a panic:\n{}", d.last_command());
    d.mount();
    assert_file(&d.path("kept"), &kept);
    d.unmount();
}
