//! `pactfs fsck`: the index checked against itself and against the packs.

use super::records::{self, Dirent, Inode, Kind};
use super::scan::{Finding, FsckReport};
use super::{ROOT_INO, Store, StoreError};
use crate::chunk::ChunkId;
use rocksdb::{IteratorMode, WriteBatch};
use std::collections::{HashMap, HashSet};

pub(super) fn run(store: &Store, repair: bool, progress: &mut dyn FnMut(u64, u64)) -> Result<FsckReport, StoreError> {
    let _guard = crate::lock(&store.writer);
    let mut report = FsckReport::default();
    let mut batch = WriteBatch::default();
    let note = |report: &mut FsckReport, what: String| {
        report.findings.push(Finding { what, repaired: repair });
    };

    // Inodes.
    let mut inodes: HashMap<u64, Inode> = HashMap::new();
    for item in store.db.iterator_cf(store.cf("inodes"), IteratorMode::Start) {
        let (k, v) = item?;
        match records::decode_inode(&v) {
            Ok(inode) => {
                inodes.insert(inode.ino, inode);
            }
            Err(e) => {
                note(&mut report, format!("inode key {}: undecodable record: {e}", crate::chunk::hex(&k)));
                batch.delete_cf(store.cf("inodes"), &k);
            }
        }
    }
    report.inodes = inodes.len() as u64;

    // Directory entries: each must name a live inode of the right kind
    // inside a directory.
    let mut links: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    for item in store.db.iterator_cf(store.cf("dirents"), IteratorMode::Start) {
        let (k, v) = item?;
        report.dirents += 1;
        let parent = records::parse_u64(&k).unwrap_or(0);
        let name = String::from_utf8_lossy(k.get(8..).unwrap_or_default()).into_owned();
        let dirent: Option<Dirent> = records::decode_dirent(&v).ok();
        let target = dirent.and_then(|d| inodes.get(&d.ino).map(|i| (d, i)));
        let parent_ok = inodes.get(&parent).is_some_and(|p| p.kind == Kind::Dir);
        match target {
            Some((d, inode)) if parent_ok && d.kind == inode.kind => {
                *links.entry(d.ino).or_default() += 1;
                if inode.kind == Kind::Dir {
                    *subdirs.entry(parent).or_default() += 1;
                }
            }
            _ => {
                note(&mut report, format!("dangling entry {name:?} in directory {parent}"));
                batch.delete_cf(store.cf("dirents"), &k);
            }
        }
    }

    // Link counts, and inodes no entry names.
    let mut expected_refs: HashMap<ChunkId, u64> = HashMap::new();
    for (ino, inode) in &inodes {
        let named = links.get(ino).copied().unwrap_or(0);
        let orphan = *ino != ROOT_INO && named == 0;
        if orphan && inode.nlink == 0 {
            // Unlinked while open when the node stopped: not damage. The
            // node reclaims these when it starts; --repair does it now.
            report.orphans += 1;
            for e in store.manifest(*ino)? {
                *expected_refs.entry(e.id).or_default() += 1;
            }
            continue;
        }
        if orphan {
            note(&mut report, format!("inode {ino} is not in any directory"));
            batch.delete_cf(store.cf("inodes"), records::ino_key(*ino));
            store.delete_manifest(&mut batch, *ino)?;
            store.delete_journal(&mut batch, *ino)?;
            continue;
        }
        let want = match inode.kind {
            Kind::Dir => 2 + subdirs.get(ino).copied().unwrap_or(0),
            _ => named,
        };
        if inode.nlink != want {
            note(&mut report, format!("inode {ino}: link count {} should be {want}", inode.nlink));
            let mut fixed = inode.clone();
            fixed.nlink = want;
            batch.put_cf(store.cf("inodes"), records::ino_key(*ino), records::encode(&fixed));
        }
        let manifest = store.manifest(*ino)?;
        let covered: u64 = manifest.iter().map(|e| u64::from(e.len)).sum();
        for e in &manifest {
            *expected_refs.entry(e.id).or_default() += 1;
        }
        if inode.kind == Kind::File && inode.allocated != covered {
            note(
                &mut report,
                format!("inode {ino}: {} bytes counted as stored, chunks cover {covered}", inode.allocated),
            );
            let mut fixed = inode.clone();
            fixed.nlink = want;
            fixed.allocated = covered;
            batch.put_cf(store.cf("inodes"), records::ino_key(*ino), records::encode(&fixed));
        }
    }

    // Journal records: bytes an fsync made durable, cut into chunks when
    // the node next starts. Each must decode and belong to a file; one
    // that does not would stop the node from starting.
    let mut journaled: HashSet<u64> = HashSet::new();
    for item in store.db.iterator_cf(store.cf("journal"), IteratorMode::Start) {
        let (k, v) = item?;
        let ino = records::parse_u64(&k).filter(|_| k.len() == 16);
        let of_file = ino.and_then(|i| inodes.get(&i)).is_some_and(|i| i.kind == Kind::File);
        match (ino, records::decode_journal(&v)) {
            (Some(ino), Ok(_)) if of_file => {
                journaled.insert(ino);
            }
            (_, Err(e)) => {
                note(&mut report, format!("journal record {}: undecodable: {e}", crate::chunk::hex(&k)));
                batch.delete_cf(store.cf("journal"), &k);
            }
            _ => {
                note(&mut report, format!("journal record {} belongs to no file", crate::chunk::hex(&k)));
                batch.delete_cf(store.cf("journal"), &k);
            }
        }
    }
    report.journaled = journaled.len() as u64;

    // Kept blobs hold one reference each, as a manifest entry does.
    for item in store.db.iterator_cf(store.cf("blobs"), IteratorMode::Start) {
        let (k, _) = item?;
        match records::decode_chunk_id(&k) {
            Some(id) => *expected_refs.entry(id).or_default() += 1,
            None => {
                note(&mut report, format!("blob key {} is malformed", crate::chunk::hex(&k)));
                batch.delete_cf(store.cf("blobs"), &k);
            }
        }
    }

    // Chunk records: reference counts, and every body against its id.
    let mut seen: HashSet<ChunkId> = HashSet::new();
    // Reading every body is the long part: report it against the index's
    // own estimate of how many chunks there are.
    let estimate =
        store.db.property_int_value_cf(store.cf("chunks"), "rocksdb.estimate-num-keys").ok().flatten().unwrap_or(0);
    for item in store.db.iterator_cf(store.cf("chunks"), IteratorMode::Start) {
        let (k, v) = item?;
        report.chunks += 1;
        if report.chunks % 64 == 0 {
            progress(report.chunks, estimate.max(report.chunks));
        }
        let Some(id) = records::decode_chunk_id(&k) else {
            note(&mut report, format!("chunk key {} is malformed", crate::chunk::hex(&k)));
            batch.delete_cf(store.cf("chunks"), &k);
            continue;
        };
        seen.insert(id);
        let Ok(mut rec) = records::decode_chunk(&v) else {
            note(&mut report, format!("chunk {id}: undecodable record"));
            continue;
        };
        let want = expected_refs.get(&id).copied().unwrap_or(0);
        if want == 0 {
            note(&mut report, format!("chunk {id} is referenced by no file or kept blob"));
            batch.delete_cf(store.cf("chunks"), id.0);
            if rec.is_local() {
                batch.delete_cf(store.cf("pack_index"), records::pack_index_key(rec.pack, rec.offset));
            }
            batch.delete_cf(store.cf("pending"), id.0);
            batch.delete_cf(store.cf("bodies"), id.0);
            continue;
        }
        if rec.refs != want {
            note(&mut report, format!("chunk {id}: reference count {} should be {want}", rec.refs));
            rec.refs = want;
            batch.put_cf(store.cf("chunks"), id.0, records::encode(&rec));
        }
        if !rec.is_local() {
            // Evicted: the network holds it (scrub checks those copies).
            report.chunks_remote += 1;
            continue;
        }
        match store.read_body(&id, &rec) {
            Ok(body) if id.verifies(&body) => report.chunks_verified += 1,
            // A bad body is never deleted here: it is the only local copy,
            // and the network may still hold a good one.
            Ok(_) => report.findings.push(Finding {
                what: format!("chunk {id}: stored bytes do not match the id (pack {})", rec.pack),
                repaired: false,
            }),
            Err(e) => report.findings.push(Finding { what: format!("chunk {id}: unreadable: {e}"), repaired: false }),
        }
    }
    for id in expected_refs.keys() {
        if !seen.contains(id) {
            report.findings.push(Finding {
                what: format!("chunk {id} is named by a file or kept blob but missing"),
                repaired: false,
            });
        }
    }

    if repair && !report.clean() {
        store.write(batch, true)?;
        recount_packs(store)?;
    }
    Ok(report)
}

/// Rebuilds the per-pack live byte counts from the chunk records.
fn recount_packs(store: &Store) -> Result<(), StoreError> {
    let mut live: HashMap<u32, u64> = HashMap::new();
    for item in store.db.iterator_cf(store.cf("chunks"), IteratorMode::Start) {
        let (_, v) = item?;
        if let Ok(rec) = records::decode_chunk(&v)
            && rec.is_local()
        {
            *live.entry(rec.pack).or_default() += u64::from(rec.len);
        }
    }
    let mut batch = WriteBatch::default();
    let mut used = 0;
    for item in store.db.iterator_cf(store.cf("packs"), IteratorMode::Start) {
        let (k, v) = item?;
        let Some(no) = records::parse_u32(&k) else { continue };
        let mut pr = records::decode_pack(&v).unwrap_or_default();
        pr.live = live.get(&no).copied().unwrap_or(0);
        used += pr.live;
        batch.put_cf(store.cf("packs"), &k, records::encode(&pr));
    }
    store.write(batch, true)?;
    store.used_bytes.store(used, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}
