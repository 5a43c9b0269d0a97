//! Drive logic without a mount: contents against a model, re-cut locality,
//! dedup, truncation and link bookkeeping over a real store.

use super::namespace::SetAttr;
use super::*;
use crate::store::ROOT_INO;
use crate::test_data::{Rng, data};

pub(super) const ME: Caller = Caller { uid: 0, gid: 0, pid: 0 };

pub(super) fn drive_with(dir: &std::path::Path, sizes: ChunkSizes) -> Drive {
    let store = Arc::new(Store::open(dir, 0, 0).expect("open store"));
    Drive::new(store, UserSecret::from_bytes([5; 32]), sizes, 1 << 40)
}

pub(super) fn small_sizes() -> ChunkSizes {
    ChunkSizes { min: 256, avg: 1024, max: 4096 }
}

/// Opens the file afresh (manifest from the store), compares it with the
/// model, and checks the whole store.
pub(super) fn assert_reopened_matches_and_clean(d: &Drive, ino: u64, model: &[u8]) {
    let fh = d.open(ino).unwrap();
    assert_eq!(read_all(d, fh, model.len() as u64), model);
    d.release(fh).unwrap();
    let report = d.store().fsck(false).unwrap();
    assert!(report.clean(), "{:?}", report.findings);
}

pub(super) fn read_all(d: &Drive, fh: u64, size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let chunk = d.read(fh, out.len() as u64, 1 << 20).unwrap().as_slice().to_vec();
        assert!(!chunk.is_empty(), "short read at {}", out.len());
        out.extend_from_slice(&chunk);
    }
    out
}

#[test]
fn random_writes_and_truncates_match_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), small_sizes());
    let (inode, fh) = d.create(ME, ROOT_INO, b"f", 0o644).unwrap();
    let mut model: Vec<u8> = Vec::new();
    let mut rng = Rng(12345u64);
    let mut next = |m: u64| rng.below(m);
    for step in 0..400 {
        match next(10) {
            0 => {
                let size = next(60_000);
                d.setattr(inode.ino, SetAttr { size: Some(size), ..SetAttr::default() }).unwrap();
                model.resize(size as usize, 0);
            }
            1 | 2 => d.flush(fh).unwrap(),
            _ => {
                let off = next(50_000);
                let len = 1 + next(9_000) as usize;
                let bytes = data(len, step);
                d.write(fh, off, &bytes).unwrap();
                if model.len() < off as usize + len {
                    model.resize(off as usize + len, 0);
                }
                model[off as usize..off as usize + len].copy_from_slice(&bytes);
            }
        }
        assert_eq!(d.getattr(inode.ino).unwrap().size, model.len() as u64, "size after step {step}");
        if step % 25 == 0 {
            assert_eq!(read_all(&d, fh, model.len() as u64), model, "contents after step {step}");
        }
    }
    d.release(fh).unwrap();
    assert_reopened_matches_and_clean(&d, inode.ino, &model);
}

#[test]
fn one_byte_write_recuts_a_handful_of_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), ChunkSizes::default());
    let (_, fh) = d.create(ME, ROOT_INO, b"big", 0o644).unwrap();
    let size = 64usize << 20;
    let bytes = data(size, 7);
    for (i, part) in bytes.chunks(1 << 20).enumerate() {
        d.write(fh, (i << 20) as u64, part).unwrap();
    }
    d.fsync(fh).unwrap();
    let before = d.store().chunks_written();
    assert!(before > 16, "a 64 MiB file is many chunks, got {before}");
    d.write(fh, (size / 2) as u64, b"X").unwrap();
    d.fsync(fh).unwrap();
    assert_eq!(d.store().chunks_written(), before, "the fsync of a 1-byte write journals it");
    d.sync_all().unwrap();
    let written = d.store().chunks_written() - before;
    assert!((1..=4).contains(&written), "a 1-byte write wrote {written} chunks");
    let mut expect = bytes;
    expect[size / 2] = b'X';
    assert_eq!(read_all(&d, fh, size as u64), expect);
    d.release(fh).unwrap();
}

#[test]
fn same_content_dedups_and_delete_gives_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), ChunkSizes::default());
    let bytes = data(3 << 20, 9);
    for name in [&b"a"[..], &b"b"[..]] {
        let (_, fh) = d.create(ME, ROOT_INO, name, 0o644).unwrap();
        d.write(fh, 0, &bytes).unwrap();
        d.release(fh).unwrap();
    }
    let s = d.store().stats().unwrap();
    assert!(s.dedup_saved_bytes >= 3 << 20, "{s:?}");
    assert_eq!(s.chunk_refs, 2 * s.chunks);
    let used = d.store().used_bytes();
    d.unlink(ROOT_INO, b"a").unwrap();
    assert_eq!(d.store().used_bytes(), used, "b still holds every chunk");
    d.unlink(ROOT_INO, b"b").unwrap();
    assert_eq!(d.store().used_bytes(), 0);
    assert_eq!(d.store().stats().unwrap().chunks, 0);
}

#[test]
fn unlinked_open_file_lives_until_last_close() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), small_sizes());
    let (inode, fh) = d.create(ME, ROOT_INO, b"tmp", 0o600).unwrap();
    d.write(fh, 0, b"still here").unwrap();
    d.unlink(ROOT_INO, b"tmp").unwrap();
    assert!(matches!(d.lookup(ROOT_INO, b"tmp"), Err(FsError::NotFound)));
    assert_eq!(d.read(fh, 0, 100).unwrap().as_slice(), b"still here");
    d.release(fh).unwrap();
    assert!(matches!(d.getattr(inode.ino), Err(FsError::NotFound)));
    assert_eq!(d.store().used_bytes(), 0);
}

#[test]
fn links_renames_and_dirs_keep_counts() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), small_sizes());
    let a = d.mkdir(ME, ROOT_INO, b"a", 0o755).unwrap();
    let b = d.mkdir(ME, ROOT_INO, b"b", 0o755).unwrap();
    assert_eq!(d.getattr(ROOT_INO).unwrap().nlink, 4);
    let (f, fh) = d.create(ME, a.ino, b"f", 0o644).unwrap();
    d.release(fh).unwrap();
    d.link(f.ino, b.ino, b"g").unwrap();
    assert_eq!(d.getattr(f.ino).unwrap().nlink, 2);
    assert!(matches!(d.rename(a.ino, b"f", b.ino, b"g", libc::RENAME_NOREPLACE), Err(FsError::Exists)));
    // Renaming one name of a file onto another name of it does nothing.
    d.rename(a.ino, b"f", b.ino, b"g", 0).unwrap();
    assert_eq!(d.getattr(f.ino).unwrap().nlink, 2);
    let sub = d.mkdir(ME, a.ino, b"sub", 0o755).unwrap();
    assert!(matches!(d.rmdir(ROOT_INO, b"a"), Err(FsError::NotEmpty)));
    d.rename(a.ino, b"sub", b.ino, b"sub", 0).unwrap();
    assert_eq!(d.getattr(a.ino).unwrap().nlink, 2);
    assert_eq!(d.getattr(b.ino).unwrap().nlink, 3);
    assert_eq!(d.getattr(sub.ino).unwrap().parent, b.ino);
    d.rename(b.ino, b"sub", ROOT_INO, b"a", libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(d.lookup(ROOT_INO, b"a").unwrap().ino, sub.ino);
    assert_eq!(d.lookup(b.ino, b"sub").unwrap().ino, a.ino);
    assert_eq!(d.getattr(b.ino).unwrap().nlink, 3);
    assert_eq!(d.getattr(ROOT_INO).unwrap().nlink, 4);
    let report = d.store().fsck(false).unwrap();
    assert!(report.clean(), "{:?}", report.findings);
}

#[test]
fn xattrs_follow_create_and_replace_flags() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), small_sizes());
    let (f, fh) = d.create(ME, ROOT_INO, b"x", 0o644).unwrap();
    d.release(fh).unwrap();
    assert!(matches!(d.setxattr(f.ino, b"user.k", b"v", 2), Err(FsError::NoAttr)));
    d.setxattr(f.ino, b"user.k", b"v", 1).unwrap();
    assert!(matches!(d.setxattr(f.ino, b"user.k", b"w", 1), Err(FsError::Exists)));
    d.setxattr(f.ino, b"user.k", b"w", 2).unwrap();
    assert_eq!(d.getxattr(f.ino, b"user.k").unwrap(), b"w");
    assert_eq!(d.listxattr(f.ino).unwrap(), b"user.k\0");
    d.removexattr(f.ino, b"user.k").unwrap();
    assert!(matches!(d.getxattr(f.ino, b"user.k"), Err(FsError::NoAttr)));
}

#[test]
fn xattr_names_stay_within_what_listxattr_can_return() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), small_sizes());
    let (f, fh) = d.create(ME, ROOT_INO, b"x", 0o644).unwrap();
    d.release(fh).unwrap();
    // 250-byte names (251 listed with their NUL): 261 fit in 64 KiB.
    let name = |i: usize| format!("user.{i:03}{}", "n".repeat(242)).into_bytes();
    let mut set = 0;
    loop {
        match d.setxattr(f.ino, &name(set), b"v", 0) {
            Ok(()) => set += 1,
            Err(FsError::NoSpace) => break,
            Err(e) => panic!("setxattr {set}: {e}"),
        }
        assert!(set < 1000, "no limit on the name list");
    }
    assert_eq!(set, 65536 / 251);
    let listed = d.listxattr(f.ino).unwrap();
    assert!(listed.len() <= 65536, "a list of {} bytes", listed.len());
    assert_eq!(listed.iter().filter(|&&b| b == 0).count(), set);
    // A full list still takes new values for its names; a removal makes room.
    d.setxattr(f.ino, &name(0), b"changed", 2).unwrap();
    d.removexattr(f.ino, &name(1)).unwrap();
    d.setxattr(f.ino, &name(set), b"v", 0).unwrap();
}

#[test]
fn privileges_drop_by_the_kernels_rules() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), small_sizes());
    // pid 0: no supplementary groups known.
    let nobody = Caller { uid: 65534, gid: 65534, pid: 0 };
    let in_group = Caller { uid: 1000, gid: 0, pid: 0 };
    let perm = |ino: u64| d.getattr(ino).unwrap().perm;
    let file = |name: &[u8], perm: u16| {
        let (f, fh) = d.create(ME, ROOT_INO, name, 0o644).unwrap();
        d.release(fh).unwrap();
        d.setattr(f.ino, SetAttr { mode: Some(u32::from(perm)), ..SetAttr::default() }).unwrap();
        f.ino
    };
    let cases: [(&[u8], u16, Caller, u16); 6] = [
        (b"both", 0o6755, nobody, 0o755),
        (b"suid-only", 0o4644, in_group, 0o644),
        // Without group execute set-group-ID is mandatory locking: kept for
        // a member of the group, dropped for anyone else.
        (b"lock-member", 0o2644, in_group, 0o2644),
        (b"lock-stranger", 0o2644, nobody, 0o644),
        (b"sgid-exec-member", 0o2754, in_group, 0o754),
        (b"plain", 0o777, nobody, 0o777),
    ];
    for (name, before, by, after) in cases {
        let ino = file(name, before);
        let ctime = d.getattr(ino).unwrap().ctime;
        std::thread::sleep(std::time::Duration::from_millis(2));
        d.drop_privs(ino, by).unwrap();
        assert_eq!(perm(ino), after, "{}", String::from_utf8_lossy(name));
        let changed = d.getattr(ino).unwrap().ctime != ctime;
        assert_eq!(changed, before != after, "{}: ctime moves only with a change", String::from_utf8_lossy(name));
    }

    // Capabilities go for anyone; other attributes stay.
    let capable = file(b"capable", 0o755);
    d.setxattr(capable, b"security.capability", &[1; 20], 0).unwrap();
    d.setxattr(capable, b"user.keep", b"v", 0).unwrap();
    d.drop_privs(capable, ME).unwrap();
    assert!(matches!(d.getxattr(capable, b"security.capability"), Err(FsError::NoAttr)));
    assert_eq!(d.getxattr(capable, b"user.keep").unwrap(), b"v");

    // Through setattr: a chown drops them (judged as root's when nobody is
    // named); a truncate only when asked; a directory keeps set-group-ID.
    let given = file(b"given", 0o6755);
    d.setattr(given, SetAttr { uid: Some(65534), ..SetAttr::default() }).unwrap();
    assert_eq!(perm(given), 0o755);
    let cut = file(b"cut", 0o6755);
    d.setattr(cut, SetAttr { size: Some(0), ..SetAttr::default() }).unwrap();
    assert_eq!(perm(cut), 0o6755, "root's truncate keeps the bits");
    d.setattr(cut, SetAttr { size: Some(0), drop_privs: Some(nobody), ..SetAttr::default() }).unwrap();
    assert_eq!(perm(cut), 0o755);
    let dir_ino = d.mkdir(ME, ROOT_INO, b"dir", 0o2777).unwrap().ino;
    d.setattr(dir_ino, SetAttr { uid: Some(65534), ..SetAttr::default() }).unwrap();
    assert_eq!(perm(dir_ino), 0o2777);
}

/// A durability handle over the store's replica records, as the node's is,
/// with one fixed promise per holder key.
struct Recorded {
    store: Arc<Store>,
    target: u32,
}

impl Durability for Recorded {
    fn target(&self) -> u32 {
        self.target
    }
    fn min_replicas(&self, chunks: &[crate::chunk::ChunkId]) -> Result<u32, StoreError> {
        let mut min = u32::MAX;
        for c in chunks {
            min = min.min(self.store.replica_holders(c)?.len() as u32);
        }
        Ok(min)
    }
    fn promises(&self, chunks: &[crate::chunk::ChunkId]) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut out = std::collections::BTreeSet::new();
        for c in chunks {
            out.extend(self.store.replica_holders(c)?);
        }
        Ok(out.into_iter().collect())
    }
}

#[test]
fn durability_xattrs_are_virtual_read_only_and_unlisted() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), small_sizes());
    let (f, fh) = d.create(ME, ROOT_INO, b"f", 0o644).unwrap();
    let replicas = |ino| String::from_utf8(d.getxattr(ino, b"user.pactfs.replicas").unwrap()).unwrap();
    // No network yet: the offline answer. An empty file has nothing to lose.
    d.set_durability(Arc::new(Offline { target: 3 }));
    assert_eq!(replicas(f.ino), "3/3");
    d.write(fh, 0, &data(10_000, 7)).unwrap();
    // Written, not yet cut into chunks: on this machine only.
    assert_eq!(replicas(f.ino), "0/3");
    d.release(fh).unwrap();
    assert_eq!(replicas(f.ino), "0/3");
    assert_eq!(d.getxattr(f.ino, b"user.pactfs.promises").unwrap(), b"");

    // Not listed, not settable, not removable; other names stay usable.
    d.setxattr(f.ino, b"user.k", b"v", 0).unwrap();
    assert_eq!(d.listxattr(f.ino).unwrap(), b"user.k\0");
    for flags in [0, 1, 2] {
        assert!(matches!(d.setxattr(f.ino, b"user.pactfs.replicas", b"3/3", flags), Err(FsError::NotPermitted)));
    }
    assert!(matches!(d.setxattr(f.ino, b"user.pactfs.other", b"x", 0), Err(FsError::NotPermitted)));
    assert!(matches!(d.removexattr(f.ino, b"user.pactfs.promises"), Err(FsError::NotPermitted)));
    assert_eq!(FsError::NotPermitted.errno(), libc::EPERM);
    assert!(matches!(d.getxattr(f.ino, b"user.pactfs.other"), Err(FsError::NoAttr)));
    // Only files have them.
    let sub = d.mkdir(ME, ROOT_INO, b"sub", 0o755).unwrap();
    assert!(matches!(d.getxattr(sub.ino, b"user.pactfs.replicas"), Err(FsError::NoAttr)));

    // With a handle over recorded replicas: the least-replicated chunk counts.
    d.set_durability(Arc::new(Recorded { store: d.store().clone(), target: 3 }));
    let chunks: Vec<_> = d.store().manifest(f.ino).unwrap().iter().map(|e| e.id).collect();
    assert!(chunks.len() >= 2, "10 kB in chunks of at most 4 KiB: {}", chunks.len());
    for c in &chunks {
        for h in [[1u8; 32], [2; 32]] {
            d.store().record_replica(c, &h, b"r", 3).unwrap();
        }
    }
    assert_eq!(replicas(f.ino), "2/3");
    for c in &chunks[1..] {
        d.store().record_replica(c, &[3; 32], b"r", 3).unwrap();
    }
    assert_eq!(replicas(f.ino), "2/3", "one chunk is still short of the target");
    d.store().record_replica(&chunks[0], &[4; 32], b"r", 3).unwrap();
    assert_eq!(replicas(f.ino), "3/3");
    let ids = String::from_utf8(d.getxattr(f.ino, b"user.pactfs.promises").unwrap()).unwrap();
    let want: Vec<String> = (1u8..=4).map(|b| crate::chunk::hex(&[b; 32])).collect();
    assert_eq!(ids, want.join(","), "sorted, each once");
}

#[test]
fn fsck_counts_crash_orphans_as_clean_and_repair_reclaims_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let d = drive_with(dir.path(), small_sizes());
        let (_, fh) = d.create(ME, ROOT_INO, b"tmp", 0o600).unwrap();
        d.write(fh, 0, &data(10_000, 3)).unwrap();
        d.fsync(fh).unwrap();
        d.unlink(ROOT_INO, b"tmp").unwrap();
        // The node dies here: no release ever comes.
    }
    let store = Store::open(dir.path(), 0, 0).unwrap();
    let report = store.fsck(false).unwrap();
    assert!(report.clean(), "{:?}", report.findings);
    assert_eq!(report.orphans, 1);
    let repaired = store.fsck(true).unwrap();
    assert!(repaired.clean(), "{:?}", repaired.findings);
    assert_eq!(repaired.orphans, 1);
    assert_eq!(store.fsck(false).unwrap().orphans, 0);
    assert_eq!(store.used_bytes(), 0);
    assert_eq!(store.stats().unwrap().chunks, 0);
}

#[test]
fn streaming_writes_with_reads_and_overwrites_in_flight_match_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), ChunkSizes { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 });
    let (inode, fh) = d.create(ME, ROOT_INO, b"stream", 0o644).unwrap();
    let total = 40usize << 20;
    let bytes = data(total, 11);
    let mut model = vec![0u8; 0];
    let mut rng = Rng(99u64);
    let mut next = |m: u64| rng.below(m);
    let step = 64 * 1024;
    for (i, part) in bytes.chunks(step).enumerate() {
        d.write(fh, (i * step) as u64, part).unwrap();
        model.extend_from_slice(part);
        if i % 7 == 0 {
            // Read somewhere already written: manifest, in flight or dirty.
            let off = next(model.len() as u64) as usize;
            let got = d.read(fh, off as u64, 100_000).unwrap();
            let want = &model[off..model.len().min(off + 100_000)];
            assert_eq!(got.as_slice(), want, "read at {off} after write {i}");
        }
        if i % 50 == 49 {
            // Overwrite a recent region, likely still in flight.
            let off = model.len().saturating_sub(3 << 20) + next(1 << 20) as usize;
            let patch = data(5000, i as u64);
            d.write(fh, off as u64, &patch).unwrap();
            model[off..off + patch.len()].copy_from_slice(&patch);
        }
        assert_eq!(d.getattr(inode.ino).unwrap().size, model.len() as u64);
    }
    d.fsync(fh).unwrap();
    assert_eq!(read_all(&d, fh, model.len() as u64), model);
    d.release(fh).unwrap();
    assert_reopened_matches_and_clean(&d, inode.ino, &model);
}

#[test]
fn many_writers_at_once_stay_within_the_dirty_bound() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), ChunkSizes::default());
    let files: Vec<(Inode, u64)> =
        (0..40).map(|i| d.create(ME, ROOT_INO, format!("f{i}").as_bytes(), 0o644).unwrap()).collect();
    let part = data(1 << 20, 5);
    let mut peak = 0;
    // 40 files x 7 MiB, each below its own threshold, interleaved.
    for round in 0..7u64 {
        for (_, fh) in &files {
            d.write(*fh, round << 20, &part).unwrap();
            peak = peak.max(d.dirty_bytes());
        }
    }
    assert!(peak <= DIRTY_TOTAL_MAX + 2 * FLUSH_BYTES, "dirty bytes peaked at {peak}");
    for (inode, fh) in &files {
        d.release(*fh).unwrap();
        assert_eq!(d.getattr(inode.ino).unwrap().size, 7 << 20);
    }
    assert_eq!(d.dirty_bytes(), 0, "everything is in the store after the last close");
}

#[test]
fn allocated_bytes_follow_the_chunks_not_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), small_sizes());
    let (inode, fh) = d.create(ME, ROOT_INO, b"sparse", 0o644).unwrap();
    d.write(fh, 100 << 20, b"end").unwrap();
    assert_eq!(d.getattr(inode.ino).unwrap().allocated, 3, "dirty bytes count before the commit");
    d.fsync(fh).unwrap();
    let attr = d.getattr(inode.ino).unwrap();
    assert_eq!((attr.size, attr.allocated), ((100 << 20) + 3, 3));
    d.write(fh, 0, &data(10_000, 1)).unwrap();
    d.setattr(inode.ino, SetAttr { size: Some(5000), ..SetAttr::default() }).unwrap();
    assert_eq!(d.getattr(inode.ino).unwrap().allocated, 5000);
    d.release(fh).unwrap();
    assert_eq!(d.getattr(inode.ino).unwrap().allocated, 5000);
    let report = d.store().fsck(false).unwrap();
    assert!(report.clean(), "{:?}", report.findings);
}

#[test]
fn compaction_returns_dead_space_and_keeps_live_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let keep = data(3 << 20, 21);
    {
        let d = drive_with(dir.path(), ChunkSizes::default());
        for (name, seed) in [(&b"gone"[..], 20), (&b"kept"[..], 21)] {
            let (_, fh) = d.create(ME, ROOT_INO, name, 0o644).unwrap();
            d.write(fh, 0, &data(3 << 20, seed)).unwrap();
            d.fsync(fh).unwrap();
            d.release(fh).unwrap();
        }
        d.unlink(ROOT_INO, b"gone").unwrap();
    }
    // Reopened, the old pack is no longer the one appends go to.
    let d = drive_with(dir.path(), ChunkSizes::default());
    let before = d.store().stats().unwrap().pack_bytes;
    let freed = d.store().compact_packs().unwrap();
    assert!(freed > 5 << 20, "the half-dead pack goes: freed {freed}");
    assert!(d.store().stats().unwrap().pack_bytes < before - (2 << 20));
    let ino = d.lookup(ROOT_INO, b"kept").unwrap().ino;
    assert_reopened_matches_and_clean(&d, ino, &keep);
}

#[test]
fn copy_range_shares_whole_chunks_and_copies_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), small_sizes());
    let bytes = data(200_000, 17);
    let (src, fh) = d.create(ME, ROOT_INO, b"src", 0o644).unwrap();
    d.write(fh, 0, &bytes).unwrap();
    d.release(fh).unwrap();
    let src_fh = d.open(src.ino).unwrap();
    let (dst, dst_fh) = d.create(ME, ROOT_INO, b"dst", 0o644).unwrap();
    // A whole-file copy into an empty file shares every chunk: it reads none.
    assert_eq!(d.copy_range(src_fh, 0, dst_fh, 0, 1 << 30).unwrap(), bytes.len() as u64);
    let ids: Vec<crate::chunk::ChunkId> =
        lock(&d.file_of(src_fh).unwrap().state).manifest().iter().map(|e| e.id).collect();
    assert!(ids.iter().all(|id| !d.cache.contains(id)), "a shared copy decrypted a chunk");
    assert_eq!(lock(&d.file_of(dst_fh).unwrap().state).manifest(), lock(&d.file_of(src_fh).unwrap().state).manifest());
    let s = d.store().stats().unwrap();
    assert_eq!(s.chunk_refs, 2 * s.chunks, "{s:?}");
    // From inside a chunk, or onto a destination that does not end there:
    // the bytes are copied.
    let (_, part_fh) = d.create(ME, ROOT_INO, b"part", 0o644).unwrap();
    assert_eq!(d.copy_range(src_fh, 1001, part_fh, 7, 50_000).unwrap(), 50_000);
    d.release(part_fh).unwrap();
    let mut part = vec![0u8; 7];
    part.extend_from_slice(&bytes[1001..51_001]);
    d.release(src_fh).unwrap();
    d.release(dst_fh).unwrap();
    assert_reopened_matches_and_clean(&d, dst.ino, &bytes);
    let part_ino = d.lookup(ROOT_INO, b"part").unwrap().ino;
    assert_reopened_matches_and_clean(&d, part_ino, &part);
    // The copy keeps every chunk it shares after the source goes, and
    // gives them back when it goes too.
    d.unlink(ROOT_INO, b"src").unwrap();
    assert_reopened_matches_and_clean(&d, dst.ino, &bytes);
    d.unlink(ROOT_INO, b"dst").unwrap();
    d.unlink(ROOT_INO, b"part").unwrap();
    assert_eq!(d.store().stats().unwrap().chunks, 0);
    assert!(d.store().fsck(false).unwrap().clean());
}

#[test]
fn a_run_of_punches_through_a_chunk_recuts_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), ChunkSizes { min: 64 << 10, avg: 256 << 10, max: 1 << 20 });
    let (inode, fh) = d.create(ME, ROOT_INO, b"image", 0o644).unwrap();
    let mut model = data(4 << 20, 9);
    d.write(fh, 0, &model).unwrap();
    d.fsync(fh).unwrap();
    let allocated = d.getattr(inode.ino).unwrap().allocated;
    let written = d.store().chunks_written();
    // Every other 4 KiB block of the first MiB, then a whole chunk's worth.
    for k in 0..128u64 {
        let off = k * 8192;
        d.punch(fh, off, off + 4096).unwrap();
        model[off as usize..off as usize + 4096].fill(0);
    }
    // A hole wider than the largest chunk: its edges are never cut together.
    let (hole, hole_end) = (2 << 20, (7 << 20) / 2);
    d.punch(fh, hole, hole_end).unwrap();
    model[hole as usize..hole_end as usize].fill(0);
    let gone = |now: u64| allocated.saturating_sub(now) >= hole_end - hole;
    let now = d.getattr(inode.ino).unwrap().allocated;
    assert!(gone(now), "chunks inside the hole leave st_blocks at once: {allocated} -> {now}");
    assert_eq!(read_all(&d, fh, model.len() as u64), model, "holes read as zeros before the commit");
    assert_eq!(d.seek(fh, 0, true).unwrap(), Some(0), "the first punch is a hole before the commit");
    d.flush(fh).unwrap();
    let recut = d.store().chunks_written() - written;
    assert!(recut <= 16, "the punched span was re-cut {recut} times over, not once");
    let now = d.getattr(inode.ino).unwrap().allocated;
    assert!(gone(now), "and stay out after it: {allocated} -> {now}");
    d.release(fh).unwrap();
    assert_reopened_matches_and_clean(&d, inode.ino, &model);
}
