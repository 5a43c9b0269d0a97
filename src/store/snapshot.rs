//! The store's side of a metadata snapshot: every entry a restored drive
//! needs, read from one consistent RocksDB snapshot, and loading them into
//! a fresh store.
//!
//! Carried: the namespace (`inodes`, `dirents`, `xattrs`, `manifests`),
//! `chunks` with their `replicas` (receipts), the market's `promises` and
//! `market` records, the `ledger` and the kept `blobs`, and `meta` (but its
//! format). Not carried: anything about local bodies (`packs`,
//! `pack_index`, `bodies`) and the placement queue (`pending`): a restored
//! chunk record names [`REMOTE_PACK`], so every read fetches from a holder.
//! Entries travel raw (the bytes as stored, each with its own version
//! byte), so the snapshot format need not change with every record.

use super::local::REMOTE_PACK;
use super::records;
use super::{META_FORMAT, Store, StoreError};
use rocksdb::{IteratorMode, WriteBatch};
use std::collections::HashSet;

/// The column families a snapshot carries; an entry names one by its
/// index here, so the order is part of the snapshot format (append only).
pub const SNAPSHOT_CFS: [&str; 11] =
    ["meta", "inodes", "dirents", "xattrs", "manifests", "chunks", "replicas", "promises", "market", "ledger", "blobs"];
/// Bytes written per batch while loading.
const LOAD_BATCH: usize = 4 << 20;

impl Store {
    /// Calls `f(cf, key, value)` (`cf` an index into [`SNAPSHOT_CFS`]) for
    /// every entry a snapshot carries, all from one point in time. Kept
    /// blobs labelled `skip_label...` (earlier snapshots' own parts) are
    /// left out with their chunk and replica records: a snapshot of an
    /// unchanged drive is then the same bytes as the last one.
    pub fn snapshot_scan(
        &self,
        skip_label: &str,
        mut f: impl FnMut(u8, &[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let snap = self.db.snapshot();
        let mut skip: HashSet<Vec<u8>> = HashSet::new();
        for item in snap.iterator_cf(self.cf("blobs"), IteratorMode::Start) {
            let (k, v) = item?;
            if records::decode_blob(&v).is_ok_and(|b| b.what.starts_with(skip_label)) {
                skip.insert(k.to_vec());
            }
        }
        for (i, name) in SNAPSHOT_CFS.iter().enumerate() {
            for item in snap.iterator_cf(self.cf(name), IteratorMode::Start) {
                let (k, v) = item?;
                if *name == "meta" && &*k == META_FORMAT {
                    continue;
                }
                let skipped = match *name {
                    "blobs" | "chunks" => skip.contains(&*k),
                    "replicas" => k.len() >= 32 && skip.contains(&k[..32]),
                    _ => false,
                };
                if !skipped {
                    f(i as u8, &k, &v)?;
                }
            }
        }
        Ok(())
    }

    /// RocksDB's sequence number: it moves with every write, so an
    /// unchanged number means an unchanged store.
    pub fn write_seq(&self) -> u64 {
        self.db.latest_sequence_number()
    }

    /// Whether no chunk and no file was ever stored here (only the root
    /// directory): a snapshot is loaded only into such a store.
    pub fn is_fresh(&self) -> Result<bool, StoreError> {
        let no_chunk = self.db.iterator_cf(self.cf("chunks"), IteratorMode::Start).next().is_none();
        let no_entry = self.db.iterator_cf(self.cf("dirents"), IteratorMode::Start).next().is_none();
        Ok(no_chunk && no_entry)
    }

    /// Loads snapshot entries into this fresh store; chunk records become
    /// remote (no local body) and nothing is queued for placement. Synced
    /// when this returns.
    pub fn load_snapshot(&self, entries: impl IntoIterator<Item = (u8, Vec<u8>, Vec<u8>)>) -> Result<u64, StoreError> {
        let _guard = crate::lock(&self.writer);
        if !self.is_fresh()? {
            return Err(StoreError::Corrupt {
                what: "restore".into(),
                detail: "the store already holds files or chunks; a snapshot loads only into a new home".into(),
            });
        }
        let mut batch = WriteBatch::default();
        let mut loaded = 0u64;
        for (cf, key, value) in entries {
            let Some(name) = SNAPSHOT_CFS.get(usize::from(cf)) else {
                return Err(StoreError::Corrupt {
                    what: "snapshot".into(),
                    detail: format!("unknown column family {cf}"),
                });
            };
            if *name == "meta" && key == META_FORMAT {
                continue;
            }
            if *name == "chunks" {
                let mut rec =
                    records::decode_chunk(&value).map_err(|e| StoreError::corrupt("snapshot chunk record", e))?;
                rec.pack = REMOTE_PACK;
                rec.offset = 0;
                batch.put_cf(self.cf(name), &key, records::encode(&rec));
            } else {
                batch.put_cf(self.cf(name), &key, &value);
            }
            loaded += 1;
            if batch.size_in_bytes() >= LOAD_BATCH {
                self.write(std::mem::take(&mut batch), false)?;
            }
        }
        self.write(batch, true)?;
        self.load_counters()?;
        Ok(loaded)
    }
}

#[cfg(test)]
impl Store {
    /// Every chunk record (tests).
    pub fn chunks_all(&self) -> Vec<(crate::chunk::ChunkId, super::ChunkRecord)> {
        self.db
            .iterator_cf(self.cf("chunks"), IteratorMode::Start)
            .map(|item| {
                let (k, v) = item.unwrap();
                (records::decode_chunk_id(&k).unwrap(), records::decode_chunk(&v).unwrap())
            })
            .collect()
    }
}
