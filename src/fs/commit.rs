//! Committing file contents: sealing cut chunks (on two threads when
//! there is enough work), the one transaction that stores a file's new
//! chunks with its manifest and inode, and the background committer that
//! seals and stores streamed jobs while the writer goes on.

use super::data::{FileState, Job, Sealed};
use super::{FileCell, FsError, JobQueue};
use crate::chunk::{self, ManifestEntry, UserSecret};
use crate::lock;
use crate::store::Store;
use std::sync::{Arc, mpsc};

/// Seals the chunks `cuts` (file offset, start in `window`, length) of
/// `window`, on two threads when there is enough work.
pub(super) fn seal_slices(secret: &UserSecret, window: &[u8], cuts: &[(u64, usize, usize)]) -> Vec<Sealed> {
    let seal_one = |&(off, at, len): &(u64, usize, usize)| {
        let (key, id, sealed) = chunk::seal(secret, &window[at..at + len]);
        (ManifestEntry { offset: off, len: len as u32, id, key }, sealed)
    };
    let total: usize = cuts.iter().map(|c| c.2).sum();
    if cuts.len() < 2 || total < 2 * 1024 * 1024 {
        return cuts.iter().map(seal_one).collect();
    }
    let (a, b) = cuts.split_at(cuts.len() / 2);
    std::thread::scope(|s| {
        let second = s.spawn(|| b.iter().map(seal_one).collect::<Vec<_>>());
        let mut out: Vec<_> = a.iter().map(seal_one).collect();
        match second.join() {
            Ok(rest) => out.extend(rest),
            // Sealing does not panic on any input; if it ever did, do the
            // work again here rather than lose it.
            Err(_) => out.extend(b.iter().map(seal_one)),
        }
        out
    })
}

/// Writes a file's new chunks, its manifest and inode in one transaction.
/// `at` holds, where not empty, the pack location each body was appended
/// at ahead of time ([`Store::pre_append`]).
pub(super) fn write_commit(
    store: &Store,
    st: &FileState,
    sealed: &[Sealed],
    at: &[Option<(u32, u64)>],
    db_size: u64,
) -> Result<(), FsError> {
    let mut txn = store.begin();
    let Some(mut inode) = store.inode(st.ino)? else { return Ok(()) };
    for (k, (e, body)) in sealed.iter().enumerate() {
        txn.add_chunk_at(&e.id, body, at.get(k).copied().flatten())?;
    }
    for e in st.removed() {
        txn.ref_chunk(&e.id, -1);
    }
    let added: Vec<ManifestEntry> = sealed.iter().map(|(e, _)| *e).collect();
    txn.change_manifest(st.ino, st.removed(), &added);
    let added_bytes: u64 = added.iter().map(|e| u64::from(e.len)).sum();
    inode.allocated = (inode.allocated + added_bytes).saturating_sub(st.removed_bytes());
    inode.size = db_size;
    if let Some(m) = st.mtime {
        inode.mtime = m;
    }
    if let Some(c) = st.ctime {
        inode.ctime = c;
    }
    txn.put_inode(&inode);
    // Deleting journal records drops bytes an fsync made durable: the
    // chunks that now hold them must be on disk first.
    for seq in st.journal() {
        txn.delete_journal(st.ino, *seq);
    }
    txn.commit(!st.journal().is_empty())?;
    Ok(())
}

/// Adds `entries` of another file to `ino`'s manifest, one more reference
/// on each chunk, and sets its size: a copy that moves no bytes.
pub(super) fn write_shared(store: &Store, ino: u64, entries: &[ManifestEntry], size: u64) -> Result<(), FsError> {
    let mut txn = store.begin();
    let Some(mut inode) = store.inode(ino)? else { return Err(FsError::NotFound) };
    for e in entries {
        txn.ref_chunk(&e.id, 1);
    }
    txn.change_manifest(ino, &[], entries);
    inode.allocated += entries.iter().map(|e| u64::from(e.len)).sum::<u64>();
    inode.size = size;
    let now = crate::store::Stamp::now();
    inode.mtime = now;
    inode.ctime = now;
    txn.put_inode(&inode);
    txn.commit(false)?;
    Ok(())
}

/// Starts the thread that seals and stores streamed chunks, oldest job
/// first, and wakes the file's waiters after each.
pub(super) fn spawn_committer(
    store: Arc<Store>,
    secret: UserSecret,
) -> Option<(JobQueue, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<(Arc<FileCell>, Arc<Job>)>();
    let spawned = std::thread::Builder::new().name("committer".into()).spawn(move || {
        for (cell, job) in rx {
            let sealed = seal_slices(&secret, &job.bytes, &job.cuts());
            // Copy the bodies into the pack before taking the file's lock,
            // so the writer is not held up by the store's I/O.
            let at: Vec<Option<(u32, u64)>> =
                sealed.iter().map(|(e, body)| store.pre_append(&e.id, body).ok().flatten()).collect();
            lock(&cell.state).finish_job(&store, &job, sealed, &at);
            cell.idle.notify_all();
        }
    });
    match spawned {
        Ok(handle) => Some((tx, handle)),
        Err(e) => {
            tracing::warn!(cause = %e, "no background committer: streaming writes commit in the foreground");
            None
        }
    }
}
