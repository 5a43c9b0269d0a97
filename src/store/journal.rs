//! The write journal: bytes an `fsync` made durable before they were cut
//! into chunks.
//!
//! Re-cutting is what makes written bytes part of a file, and it works in
//! whole chunks (1 MiB on average): an `fsync` after a 4 KiB page write in a
//! large file would re-seal and store a megabyte or more, and a database
//! that syncs every transaction would pay that each time. The drive instead
//! writes the dirty ranges written since the last `fsync` here, as one
//! record in one synced batch, and re-cuts later: at the last close, when
//! the journal has grown past its bound, or when the node folds old
//! journals. The commit that cuts a file's dirty bytes deletes its journal
//! records in the same batch, so a record is never replayed over bytes that
//! a later commit already holds.
//!
//! Key: ino, seq (both big-endian): a file's records come out oldest first.
//! Value: a [`JournalRecord`]. Bytes are stored as written, like every other
//! piece of local metadata that could read them (manifests hold the chunk
//! keys): the local store is as trusted as the user's own memory.

use super::records::{self, JournalRecord};
use super::{Store, StoreError, Txn};
use rocksdb::IteratorMode;
use std::sync::atomic::Ordering;

impl Store {
    /// A journal sequence number never handed out before by this store.
    pub fn next_journal_seq(&self) -> u64 {
        self.journal_seq.fetch_add(1, Ordering::SeqCst)
    }

    /// The highest sequence number in the journal, plus one.
    pub(super) fn journal_seq_after_open(&self) -> Result<u64, StoreError> {
        match self.db.iterator_cf(self.cf("journal"), IteratorMode::End).next() {
            Some(item) => {
                let (k, _) = item?;
                Ok(k.get(8..).and_then(records::parse_u64).unwrap_or(0) + 1)
            }
            None => Ok(1),
        }
    }

    /// The journal records of `ino`, oldest first, with their sequence
    /// numbers.
    pub fn journal(&self, ino: u64) -> Result<Vec<(u64, JournalRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.prefix_iter("journal", &ino.to_be_bytes()) {
            let (k, v) = item?;
            let seq = k.get(8..).and_then(records::parse_u64).ok_or_else(|| StoreError::Corrupt {
                what: "journal key".into(),
                detail: format!("{} bytes", k.len()),
            })?;
            let rec = records::decode_journal(&v).map_err(|e| StoreError::corrupt("journal record", e))?;
            out.push((seq, rec));
        }
        Ok(out)
    }

    /// Inodes with journal records (after a crash: bytes to fold in).
    pub fn journaled_inodes(&self) -> Result<Vec<u64>, StoreError> {
        let mut out: Vec<u64> = Vec::new();
        for item in self.db.iterator_cf(self.cf("journal"), IteratorMode::Start) {
            let (k, _) = item?;
            if let Some(ino) = records::parse_u64(&k)
                && out.last() != Some(&ino)
            {
                out.push(ino);
            }
        }
        Ok(out)
    }
}

impl Store {
    /// Adds to `batch` the deletion of every journal record of `ino`
    /// (point deletes, as `delete_manifest`).
    pub(super) fn delete_journal(&self, batch: &mut rocksdb::WriteBatch, ino: u64) -> Result<(), StoreError> {
        for item in self.prefix_iter("journal", &ino.to_be_bytes()) {
            batch.delete_cf(self.cf("journal"), item?.0);
        }
        Ok(())
    }

    /// Deletes the journal of `ino` (a file that no longer exists).
    pub fn drop_journal(&self, ino: u64) -> Result<(), StoreError> {
        let mut txn = self.begin();
        self.delete_journal(txn.batch_mut(), ino)?;
        txn.commit(true)
    }
}

impl Txn<'_> {
    pub fn put_journal(&mut self, ino: u64, seq: u64, record: &JournalRecord) {
        let cf = self.store().cf("journal");
        self.batch_mut().put_cf(cf, records::journal_key(ino, seq), records::encode(record));
    }

    pub fn delete_journal(&mut self, ino: u64, seq: u64) {
        let cf = self.store().cf("journal");
        self.batch_mut().delete_cf(cf, records::journal_key(ino, seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::JournalRange;

    #[test]
    fn records_round_trip_and_fsck_drops_what_cannot_be_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 0).unwrap();
        let rec = JournalRecord {
            size: 10,
            mtime: None,
            ctime: None,
            ranges: vec![JournalRange { offset: 2, bytes: b"abc".to_vec() }],
        };
        // Inode 1 is the root, a directory: a journal there belongs to no file.
        let (a, b) = (store.next_journal_seq(), store.next_journal_seq());
        assert!(b > a);
        let mut txn = store.begin();
        txn.put_journal(1, a, &rec);
        txn.commit(true).unwrap();
        assert_eq!(store.journal(1).unwrap(), vec![(a, rec.clone())]);
        assert_eq!(store.journaled_inodes().unwrap(), vec![1]);
        // A torn or foreign value: replay refuses it by name.
        store.db.put_cf(store.cf("journal"), records::journal_key(7, b), b"\x01garbage").unwrap();
        assert!(matches!(store.journal(7), Err(StoreError::Corrupt { .. })));
        let report = store.fsck(false).unwrap();
        assert_eq!(report.findings.len(), 2, "{:?}", report.findings);
        assert!(store.fsck(true).unwrap().findings.iter().all(|f| f.repaired));
        assert!(store.fsck(false).unwrap().clean());
        assert!(store.journaled_inodes().unwrap().is_empty());
        // A reopened store numbers past every record it holds.
        let mut txn = store.begin();
        txn.put_journal(1, 100, &rec);
        txn.commit(true).unwrap();
        drop(store);
        let store = Store::open(dir.path(), 0, 0).unwrap();
        assert_eq!(store.next_journal_seq(), 101);
    }
}
