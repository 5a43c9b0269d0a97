//! A file's side of the write journal (`store::journal`): which of its
//! dirty bytes the store's journal holds, the fsync that adds a record,
//! and the replay of records a crash left.

use super::FileState;
use crate::fs::overlay::{Overlay, Ranges};
use crate::fs::{Drive, FsError};
use crate::store::records::JOURNAL_RANGES;
use crate::store::{JournalRange, JournalRecord};
use std::time::{Duration, Instant};

/// Journal bytes one file may hold: past this an fsync commits (and so
/// empties the journal) instead of adding to it.
pub const JOURNAL_MAX: usize = 8 * 1024 * 1024;
/// An fsync journals instead of committing only when the re-cut would
/// store at least twice the journal's bytes and this much more: a new
/// small file commits at once, as it always did.
const JOURNAL_MIN_SAVING: u64 = 64 * 1024;

/// What of one file's dirty bytes the store's journal holds.
#[derive(Default)]
pub struct Journal {
    /// Dirty ranges written since the last record or commit.
    unjournaled: Ranges,
    /// The file's records in the store (sequence numbers), whose bytes are
    /// all still in the overlay: the next commit deletes them.
    seqs: Vec<u64>,
    bytes: usize,
    /// When the oldest of them was written or replayed.
    since: Option<Instant>,
}

impl Journal {
    /// Notes a write of `[off, end)`.
    pub fn written(&mut self, off: u64, end: u64) {
        self.unjournaled.insert(off, end);
    }

    /// After a commit: no record is left, and what stays dirty (a
    /// streaming writer's last chunk) is in none.
    pub fn committed(&mut self, overlay: &Overlay) {
        *self = Journal { unjournaled: Ranges::from_ranges(&overlay.clusters(0)), ..Journal::default() };
    }
}

impl FileState {
    /// This file's journal records (see [`FileState::journal_sync`]).
    pub fn journal(&self) -> &[u64] {
        &self.journal.seqs
    }

    /// How long the oldest journal record has waited for a commit.
    pub fn journal_age(&self) -> Option<Duration> {
        self.journal.since.map(|t| t.elapsed())
    }

    /// Puts the bytes of the records a crash left over the manifest (they
    /// stay journaled until the next commit cuts them).
    pub(super) fn replay_journal(&mut self, drive: &Drive) -> Result<(), FsError> {
        let records = drive.store.journal(self.ino)?;
        if records.is_empty() {
            return Ok(());
        }
        for (seq, rec) in records {
            for r in &rec.ranges {
                self.overlay.insert(r.offset, &r.bytes);
                self.journal.bytes += r.bytes.len();
            }
            self.size = rec.size;
            self.mtime = rec.mtime.or(self.mtime);
            self.ctime = rec.ctime.or(self.ctime);
            self.journal.seqs.push(seq);
        }
        tracing::info!(
            ino = self.ino,
            records = self.journal.seqs.len(),
            bytes = self.journal.bytes,
            "replayed journal"
        );
        self.journal.since = Some(Instant::now());
        Ok(())
    }

    /// Makes the bytes written since the last journal record or commit
    /// durable as one journal record (`store::journal`), when that is much
    /// cheaper than re-cutting them now. Returns false when the caller
    /// should commit instead: structural changes are pending, the journal
    /// is full, or the re-cut would store little more than the bytes.
    pub fn journal_sync(&mut self, drive: &Drive) -> Result<bool, FsError> {
        if self.meta_dirty || !self.removed.is_empty() || !self.inflight.is_empty() {
            return Ok(false);
        }
        let ranges = self.journal.unjournaled.intersect(&self.overlay.clusters(0));
        let new: usize = ranges.iter().map(|(a, b)| (b - a) as usize).sum();
        if new == 0 {
            // Every dirty byte is in a record that was synced when written.
            return Ok(!self.journal.seqs.is_empty());
        }
        if self.journal.bytes + new > JOURNAL_MAX || ranges.len() > JOURNAL_RANGES {
            return Ok(false);
        }
        if self.recut_estimate(drive) < 2 * new as u64 + JOURNAL_MIN_SAVING {
            return Ok(false);
        }
        let ranges = ranges
            .into_iter()
            .map(|(a, b)| {
                let mut bytes = vec![0u8; (b - a) as usize];
                self.overlay.read_into(a, &mut bytes);
                JournalRange { offset: a, bytes }
            })
            .collect();
        let record = JournalRecord { size: self.size, mtime: self.mtime, ctime: self.ctime, ranges };
        let seq = drive.store.next_journal_seq();
        let mut txn = drive.store.begin();
        txn.put_journal(self.ino, seq, &record);
        txn.commit(false)?;
        // Outside the store's writer lock, shared with concurrent fsyncs.
        drive.store.sync()?;
        self.journal.seqs.push(seq);
        self.journal.bytes += new;
        self.journal.since.get_or_insert_with(Instant::now);
        self.journal.unjournaled.clear();
        Ok(true)
    }

    /// Bytes a commit now would re-cut: each cluster of dirty bytes from
    /// the start of its first chunk to the end of its last.
    fn recut_estimate(&self, drive: &Drive) -> u64 {
        let max = u64::from(drive.chunker.sizes().max);
        self.overlay
            .clusters(max)
            .iter()
            .map(|&(ds, de)| {
                let start = self.recut_start(ds);
                let i = self.manifest.partition_point(|e| e.end() < de);
                let end = self.manifest.get(i).filter(|e| e.offset < de).map_or(de, |e| e.end().max(de));
                end - start
            })
            .sum()
    }
}
