//! The `ledger` column family as raw bytes: key = seq (u64 big-endian),
//! value = one stored entry. The meaning of the bytes belongs to the
//! ledger layer; the store only keeps them, durably and in order.
//!
//! Reads turn RocksDB's block checksums off: a byte changed on disk then
//! reaches the ledger's own check, which names the entry, rather than
//! failing as a RocksDB error about a block. Where RocksDB still refuses
//! (a block whose layout no longer parses), the error names the seqs it
//! could not read: [`StoreError::LedgerUnreadable`].

use super::{Store, StoreError, records};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

/// How far past unreadable entries a read looks for the next readable
/// one, to name where the damage ends.
const PROBE: u64 = 4096;

impl Store {
    /// The highest seq in the ledger and its bytes.
    pub fn ledger_last(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let iter = self.db.iterator_cf_opt(self.cf("ledger"), unchecked(), IteratorMode::End);
        match iter.into_iter().next() {
            None => Ok(None),
            Some(Ok((k, v))) => Ok(Some((seq_of(&k)?, v.into_vec()))),
            Some(Err(e)) => Err(StoreError::LedgerUnreadable {
                from: 0,
                resume: None,
                detail: format!("reading the last entry: {e}"),
            }),
        }
    }

    /// Writes entries in one synced batch: all of them or none, on disk
    /// when this returns.
    pub fn ledger_put(&self, entries: &[(u64, &[u8])]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for (seq, bytes) in entries {
            batch.put_cf(self.cf("ledger"), seq.to_be_bytes(), bytes);
        }
        self.write(batch, true)
    }

    /// Up to `limit` entries with seq >= `from`, in order.
    pub fn ledger_range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let start = from.to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for item in self.db.iterator_cf_opt(self.cf("ledger"), unchecked(), mode).take(limit) {
            match item {
                Ok((k, v)) => out.push((seq_of(&k)?, v.into_vec())),
                Err(e) => {
                    let from = out.last().map_or(from, |(seq, _)| seq.saturating_add(1));
                    return Err(self.unreadable(from, e));
                }
            }
        }
        Ok(out)
    }

    /// Up to `limit` entries with seq < `before`, newest first.
    pub fn ledger_range_back(&self, before: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let Some(start) = before.checked_sub(1) else { return Ok(Vec::new()) };
        let start = start.to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Reverse);
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for item in self.db.iterator_cf_opt(self.cf("ledger"), unchecked(), mode).take(limit) {
            match item {
                Ok((k, v)) => out.push((seq_of(&k)?, v.into_vec())),
                Err(e) => {
                    let to = out.last().map_or(before, |(seq, _)| *seq);
                    return Err(StoreError::LedgerUnreadable {
                        from: 0,
                        resume: Some(to),
                        detail: format!("reading back from entry {to}: {e}"),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Writes the ledger's memtable to an SST file, so that its bytes are
    /// in one place on disk (not only in the WAL); the node calls it on a
    /// clean stop.
    pub fn flush_ledger(&self) -> Result<(), StoreError> {
        Ok(self.db.flush_cf(self.cf("ledger"))?)
    }

    /// The error for entries unreadable from `from`, with where the
    /// damage ends if a readable entry follows within [`PROBE`] seqs.
    fn unreadable(&self, from: u64, e: rocksdb::Error) -> StoreError {
        let resume = (from.saturating_add(1)..from.saturating_add(PROBE))
            .find(|seq| matches!(self.db.get_cf_opt(self.cf("ledger"), seq.to_be_bytes(), &unchecked()), Ok(Some(_))));
        tracing::warn!(from, ?resume, cause = %e, "ledger entries unreadable");
        StoreError::LedgerUnreadable { from, resume, detail: e.to_string() }
    }
}

/// Read options that leave checking the bytes to the ledger.
fn unchecked() -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.set_verify_checksums(false);
    // Damaged blocks must not linger in (or be served from) the cache
    // after the bytes on disk change back or are repaired.
    ro.fill_cache(false);
    ro
}

fn seq_of(key: &[u8]) -> Result<u64, StoreError> {
    match (key.len(), records::parse_u64(key)) {
        (8, Some(seq)) => Ok(seq),
        _ => Err(StoreError::Corrupt {
            what: "ledger key".into(),
            detail: format!("{} bytes where a seq takes 8", key.len()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(store: &Store, from: u64, limit: usize) -> Vec<u64> {
        store.ledger_range(from, limit).unwrap().into_iter().map(|(seq, _)| seq).collect()
    }

    #[test]
    fn entries_come_back_in_seq_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, 0).unwrap();
        assert_eq!(store.ledger_last().unwrap(), None);
        // Keys sort numerically (big-endian), 255 before 256.
        let values: Vec<(u64, Vec<u8>)> =
            [0u64, 1, 2, 255, 256, 70_000].iter().map(|s| (*s, vec![*s as u8; 3])).collect();
        let refs: Vec<(u64, &[u8])> = values.iter().map(|(s, v)| (*s, v.as_slice())).collect();
        store.ledger_put(&refs).unwrap();
        assert_eq!(store.ledger_last().unwrap(), Some((70_000, vec![70_000u64 as u8; 3])));
        assert_eq!(entries(&store, 0, 100), vec![0, 1, 2, 255, 256, 70_000]);
        assert_eq!(entries(&store, 3, 2), vec![255, 256]);
        assert_eq!(entries(&store, 70_001, 5), Vec::<u64>::new());
        let back: Vec<u64> = store.ledger_range_back(256, 10).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(back, vec![255, 2, 1, 0]);
        assert!(store.ledger_range_back(0, 10).unwrap().is_empty());
        store.flush_ledger().unwrap();
        assert_eq!(store.ledger_range(255, 1).unwrap(), vec![(255, vec![255u8; 3])]);
    }

    /// A store made before the ledger existed (format 1, without the
    /// `ledger` and `blobs` column families) opens, gains them, and is
    /// marked with the new format.
    #[test]
    fn a_store_from_before_the_ledger_gains_its_column_families() {
        let dir = tempfile::tempdir().unwrap();
        let old_cfs = &super::super::CFS[..11];
        assert!(!old_cfs.contains(&"ledger") && !old_cfs.contains(&"blobs"));
        {
            let mut opts = rocksdb::Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let db = rocksdb::DB::open_cf(&opts, dir.path().join("db"), old_cfs).unwrap();
            let meta = db.cf_handle("meta").unwrap();
            db.put_cf(meta, super::super::META_FORMAT, 1u64.to_be_bytes()).unwrap();
        }
        let store = Store::open(dir.path(), 0, 0).unwrap();
        store.ledger_put(&[(0, b"entry")]).unwrap();
        assert_eq!(store.ledger_last().unwrap(), Some((0, b"entry".to_vec())));
        assert!(store.blobs().unwrap().is_empty());
        let format = store.db.get_cf(store.cf("meta"), super::super::META_FORMAT).unwrap().unwrap();
        assert_eq!(records::parse_u64(&format), Some(super::super::FORMAT_VERSION));
        drop(store);
        // And opens again as the new format.
        let store = Store::open(dir.path(), 0, 0).unwrap();
        assert_eq!(store.ledger_range(0, 10).unwrap().len(), 1);
    }
}
