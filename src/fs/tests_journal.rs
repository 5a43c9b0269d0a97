//! The write journal: an fsync of a few pages in a large file writes a
//! journal record instead of re-cutting chunks; a crash replays the
//! records; a commit (last close, fold, truncate, unlink) deletes them.

use super::namespace::{SetAttr, SetTime};
use super::tests::{ME, drive_with, read_all};
use super::*;
use crate::store::ROOT_INO;
use crate::test_data::{Rng, data};
use std::path::Path;
use std::time::Duration;

const PAGE: usize = 4096;

/// A committed file of `size` bytes, open again: (ino, fh, its bytes).
fn big_file(d: &Drive, name: &[u8], size: usize, seed: u64) -> (u64, u64, Vec<u8>) {
    let (inode, fh) = d.create(ME, ROOT_INO, name, 0o644).unwrap();
    let bytes = data(size, seed);
    for (i, part) in bytes.chunks(1 << 20).enumerate() {
        d.write(fh, (i << 20) as u64, part).unwrap();
    }
    d.release(fh).unwrap();
    (inode.ino, d.open(inode.ino).unwrap(), bytes)
}

/// Writes a page of fresh bytes at a random page of the file, in both.
fn write_page(d: &Drive, fh: u64, model: &mut [u8], rng: &mut Rng, seed: u64) {
    let page = rng.below((model.len() / PAGE) as u64) as usize;
    let bytes = data(PAGE, seed);
    d.write(fh, (page * PAGE) as u64, &bytes).unwrap();
    model[page * PAGE..(page + 1) * PAGE].copy_from_slice(&bytes);
}

/// What a crash leaves: a new drive over the same store, journals recovered.
fn crash_and_recover(d: Drive, dir: &Path) -> (Drive, usize) {
    drop(d);
    let d = drive_with(dir, ChunkSizes::default());
    let recovered = d.recover_journals().unwrap();
    (d, recovered)
}

fn assert_file(d: &Drive, ino: u64, want: &[u8]) {
    assert_eq!(d.getattr(ino).unwrap().size, want.len() as u64);
    let fh = d.open(ino).unwrap();
    let got = read_all(d, fh, want.len() as u64);
    assert!(got == want, "file {ino} differs from its model");
    d.release(fh).unwrap();
}

fn assert_fsck_clean(d: &Drive) {
    let report = d.store().fsck(false).unwrap();
    assert!(report.clean(), "{:?}", report.findings);
}

#[test]
fn fsync_of_scattered_pages_journals_and_a_crash_replays_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), ChunkSizes::default());
    let (ino, fh, mut model) = big_file(&d, b"db", 16 << 20, 1);
    let before = d.store().chunks_written();
    let mut rng = Rng(99);
    for round in 0..5 {
        for k in 0..10 {
            write_page(&d, fh, &mut model, &mut rng, 100 + round * 10 + k);
        }
        d.fsync(fh).unwrap();
    }
    assert_eq!(d.store().chunks_written(), before, "the fsyncs re-cut chunks instead of journaling");
    assert_eq!(d.store().journal(ino).unwrap().len(), 5, "one record per fsync");
    assert_eq!(read_all(&d, fh, model.len() as u64), model, "reads see the journaled bytes");
    // Never synced: lost with the process.
    let synced = model.clone();
    write_page(&d, fh, &mut model, &mut rng, 999);

    let (d, recovered) = crash_and_recover(d, dir.path());
    assert_eq!(recovered, 1);
    assert!(d.store().journal(ino).unwrap().is_empty(), "recovery cuts and deletes the records");
    assert_file(&d, ino, &synced);
    assert_fsck_clean(&d);
}

#[test]
fn appends_to_a_log_with_fsync_each_journal_and_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), ChunkSizes::default());
    let (ino, fh, mut model) = big_file(&d, b"log", 700_000, 2);
    let before = d.store().chunks_written();
    for n in 0..40u64 {
        let line = data(1000 + n as usize, 200 + n);
        d.write(fh, model.len() as u64, &line).unwrap();
        model.extend_from_slice(&line);
        d.fsync(fh).unwrap();
    }
    assert_eq!(d.store().chunks_written(), before, "appends after a large last chunk journal");
    let (d, _) = crash_and_recover(d, dir.path());
    assert_file(&d, ino, &model);
}

#[test]
fn last_close_and_fold_cut_the_journal_into_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), ChunkSizes::default());
    let (ino, fh, mut model) = big_file(&d, b"db", 8 << 20, 3);
    let mut rng = Rng(7);
    write_page(&d, fh, &mut model, &mut rng, 300);
    d.fsync(fh).unwrap();
    assert_eq!(d.fold_journals(Duration::from_secs(3600)), 0, "a young journal waits");
    let before = d.store().chunks_written();
    assert_eq!(d.fold_journals(Duration::ZERO), 1);
    assert!(d.store().chunks_written() > before, "the fold re-cut the page's chunk");
    assert!(d.store().journal(ino).unwrap().is_empty());
    write_page(&d, fh, &mut model, &mut rng, 301);
    d.fsync(fh).unwrap();
    assert_eq!(d.store().journal(ino).unwrap().len(), 1);
    d.release(fh).unwrap();
    assert!(d.store().journal(ino).unwrap().is_empty(), "the last close commits");
    let (d, recovered) = crash_and_recover(d, dir.path());
    assert_eq!(recovered, 0);
    assert_file(&d, ino, &model);
    assert_fsck_clean(&d);
}

#[test]
fn truncate_and_unlink_take_the_journal_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), ChunkSizes::default());
    let (ino, fh, mut model) = big_file(&d, b"cut", 8 << 20, 4);
    let mut rng = Rng(8);
    for k in 0..8 {
        write_page(&d, fh, &mut model, &mut rng, 400 + k);
    }
    d.fsync(fh).unwrap();
    assert_eq!(d.store().journal(ino).unwrap().len(), 1);
    d.setattr(ino, SetAttr { size: Some(3 << 20), ..SetAttr::default() }).unwrap();
    model.truncate(3 << 20);
    assert!(d.store().journal(ino).unwrap().is_empty(), "a truncate commits the journaled bytes");

    let (gone, gone_fh, mut gone_model) = big_file(&d, b"gone", 4 << 20, 5);
    write_page(&d, gone_fh, &mut gone_model, &mut rng, 500);
    d.fsync(gone_fh).unwrap();
    d.unlink(ROOT_INO, b"gone").unwrap();
    d.release(gone_fh).unwrap();
    assert!(d.store().journal(gone).unwrap().is_empty(), "a deleted file leaves no journal");

    // Unlinked while open and journaled, then a crash: nothing comes back.
    let (orphan, orphan_fh, mut orphan_model) = big_file(&d, b"orphan", 4 << 20, 6);
    write_page(&d, orphan_fh, &mut orphan_model, &mut rng, 600);
    d.fsync(orphan_fh).unwrap();
    d.unlink(ROOT_INO, b"orphan").unwrap();
    drop(d);
    let store = Arc::new(Store::open(dir.path(), 0, 0).unwrap());
    assert_eq!(store.sweep_orphans().unwrap(), 1);
    assert!(store.journal(orphan).unwrap().is_empty(), "the orphan sweep deletes its journal");
    let d = Drive::new(store, UserSecret::from_bytes([5; 32]), ChunkSizes::default(), 1 << 40);
    assert_eq!(d.recover_journals().unwrap(), 0);
    let _ = fh;
    assert_file(&d, ino, &model);
    assert!(matches!(d.getattr(gone), Err(FsError::NotFound)));
    assert_fsck_clean(&d);
}

/// `touch -d` (or tar, rsync) setting an older mtime on an open file whose
/// writes are journaled: after a crash the set time stands.
#[test]
fn an_explicit_mtime_outlives_the_journal_of_earlier_writes() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), ChunkSizes::default());
    let (ino, fh, mut model) = big_file(&d, b"t", 4 << 20, 10);
    write_page(&d, fh, &mut model, &mut Rng(3), 700);
    d.fsync(fh).unwrap();
    assert_eq!(d.store().journal(ino).unwrap().len(), 1);
    let past = std::time::UNIX_EPOCH + Duration::from_secs(981_173_106);
    d.setattr(ino, SetAttr { mtime: Some(SetTime::At(past)), ..SetAttr::default() }).unwrap();
    d.store().sync().unwrap();
    let (d, _) = crash_and_recover(d, dir.path());
    assert_eq!(std::time::SystemTime::from(d.getattr(ino).unwrap().mtime), past);
    assert_file(&d, ino, &model);
}

/// Writes, fsyncs, flushes, truncates and crashes at random: after each
/// crash the file is exactly what the last fsync, flush or truncate left.
#[test]
fn random_writes_fsyncs_and_crashes_match_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = drive_with(dir.path(), ChunkSizes::default());
    let (ino, mut fh, mut model) = big_file(&d, b"f", 6 << 20, 9);
    let mut durable = model.clone();
    let mut rng = Rng(2026);
    let mut journaled = 0;
    // Since the last durable point: the whole model as of each punch (the
    // state a crash finds if that punch committed the file).
    let mut durable_if_committed: Vec<Vec<u8>> = Vec::new();
    let mut punches_lost = 0;
    for step in 0..300u64 {
        match rng.below(22) {
            0..=11 => {
                let len = 1 + rng.below(20_000) as usize;
                let off = rng.below(model.len() as u64 + 10_000) as usize;
                let bytes = data(len, 1000 + step);
                d.write(fh, off as u64, &bytes).unwrap();
                if model.len() < off + len {
                    model.resize(off + len, 0);
                }
                model[off..off + len].copy_from_slice(&bytes);
            }
            12..=15 => {
                d.fsync(fh).unwrap();
                journaled += usize::from(!d.store().journal(ino).unwrap().is_empty());
                durable = model.clone();
                durable_if_committed.clear();
            }
            16 => {
                d.flush(fh).unwrap();
                durable = model.clone();
                durable_if_committed.clear();
            }
            17 => {
                let size = rng.below(model.len() as u64 + 100_000) as usize;
                d.setattr(ino, SetAttr { size: Some(size as u64), ..SetAttr::default() }).unwrap();
                model.resize(size, 0);
                durable = model.clone();
                durable_if_committed.clear();
            }
            18 | 19 => {
                // A punch is durable with the next fsync or close, or at
                // once if it commits the file (its dirty bytes grew past
                // the bound): a crash finds one state or the other, whole.
                let off = rng.below(model.len() as u64 + 1) as usize;
                let end = (off + 1 + rng.below(3 << 20) as usize).min(model.len());
                d.punch(fh, off as u64, end as u64).unwrap();
                if off < end {
                    model[off..end].fill(0);
                }
                durable_if_committed.push(model.clone());
            }
            _ => {
                let (again, _) = crash_and_recover(d, dir.path());
                d = again;
                let size = d.getattr(ino).unwrap().size;
                let rd = d.open(ino).unwrap();
                let got = read_all(&d, rd, size);
                d.release(rd).unwrap();
                if durable_if_committed.contains(&got) {
                    durable = got;
                } else {
                    assert!(got == durable, "file {ino} differs from its model after a crash");
                    punches_lost += usize::from(!durable_if_committed.is_empty() && got != model);
                }
                model = durable.clone();
                durable_if_committed.clear();
                fh = d.open(ino).unwrap();
            }
        }
    }
    assert!(journaled > 5, "the run must take the journal path often, took it {journaled} times");
    assert!(punches_lost > 0, "the run must crash with a punch not yet durable");
    d.release(fh).unwrap();
    assert_file(&d, ino, &model);
    assert_fsck_clean(&d);
}

/// Recovery that cannot re-cut (a chunk it needs is unreadable: evicted
/// with no provider up, say) keeps the records instead of failing the
/// start or dropping fsynced bytes.
#[test]
fn recovery_that_cannot_cut_keeps_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let d = drive_with(dir.path(), ChunkSizes::default());
    let (ino, fh, mut model) = big_file(&d, b"db", 4 << 20, 11);
    write_page(&d, fh, &mut model, &mut Rng(5), 800);
    d.fsync(fh).unwrap();
    drop(d);
    for pack in std::fs::read_dir(dir.path().join("packs")).unwrap() {
        std::fs::remove_file(pack.unwrap().path()).unwrap();
    }
    let d = drive_with(dir.path(), ChunkSizes::default());
    assert_eq!(d.recover_journals().unwrap(), 0);
    assert_eq!(d.store().journal(ino).unwrap().len(), 1, "the fsynced page is still journaled");
}
