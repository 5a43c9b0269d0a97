//! Sealing: the entries after the last sealed range, copied into one blob.
//!
//! ```text
//! blob = codec::encode(BLOB_V1, Blob { node, entries: [ { seq, stored bytes } .. ] })
//! ```
//!
//! The blob holds the stored bytes exactly as they are (good or damaged),
//! so whoever holds it can run the same checks as `verify` on that range.

use super::entry::{ENTRY_LIMIT, Event, decode_stored};
use super::{Ledger, LedgerError, LogStore, StoredEntry};
use crate::codec::{self, Bytes};
use crate::promise::NodeKey;
use serde::{Deserialize, Serialize};

/// The largest blob: one default-sized chunk, well inside what a chunk
/// upload may carry.
pub const MAX_BLOB_BYTES: usize = 4 * 1024 * 1024;
/// Version byte of a blob.
const BLOB_V1: u8 = 1;
/// Most entries one blob may hold (an entry is never under ~100 bytes).
const MAX_BLOB_ENTRIES: usize = 64 * 1024;
/// Encoding overhead of one entry in a blob: its seq and length prefix.
const PER_ENTRY: usize = 16;
/// Entries read from the store per trip while sealing or searching.
const PAGE: usize = 256;

#[derive(Serialize, Deserialize)]
struct Blob {
    node: NodeKey,
    #[serde(deserialize_with = "codec::bounded_seq::<_, _, MAX_BLOB_ENTRIES>")]
    entries: Vec<BlobEntry>,
}

#[derive(Serialize, Deserialize)]
struct BlobEntry {
    seq: u64,
    bytes: Bytes,
}

impl Ledger {
    /// The entries after the last sealed range (at most `max_entries`, and
    /// no more than [`MAX_BLOB_BYTES`]) as one blob: `(first, last, blob)`.
    /// `None` when there is nothing new to seal (no entry, or only the
    /// last `Sealed` event: sealing that alone would seal forever).
    ///
    /// Store the blob, then `append(Event::Sealed { first, last, blob: id })`.
    /// One sealer at a time: a second seal of the same range is refused.
    pub fn take_unsealed(&self, max_entries: usize) -> Result<Option<(u64, u64, Vec<u8>)>, LedgerError> {
        let (start, end) = {
            let tail = self.lock_tail();
            let start = tail.sealed_through.map_or(0, |s| s + 1);
            let only_the_seal = tail.tail_is_seal && tail.next == start + 1;
            if start >= tail.next || only_the_seal {
                return Ok(None);
            }
            (start, tail.next)
        };
        let max_entries = max_entries.clamp(1, MAX_BLOB_ENTRIES);
        let mut entries: Vec<BlobEntry> = Vec::new();
        let mut bytes_in = 0usize;
        let mut from = start;
        'read: while from < end && entries.len() < max_entries {
            let page = self.store.range(from, PAGE.min(max_entries - entries.len()))?;
            if page.is_empty() {
                break;
            }
            for (seq, mut bytes) in page {
                if seq >= end {
                    break 'read;
                }
                if bytes.len() > ENTRY_LIMIT {
                    // Appends never store such an entry: this is damage.
                    // Keep enough of it to show what it was.
                    tracing::warn!(seq, len = bytes.len(), "oversized ledger entry sealed cut short");
                    bytes.truncate(ENTRY_LIMIT + 1);
                }
                if !entries.is_empty() && bytes_in + bytes.len() + PER_ENTRY > MAX_BLOB_BYTES {
                    break 'read;
                }
                bytes_in += bytes.len() + PER_ENTRY;
                from = seq + 1;
                entries.push(BlobEntry { seq, bytes: Bytes(bytes) });
            }
        }
        let (Some(first), Some(last)) = (entries.first().map(|e| e.seq), entries.last().map(|e| e.seq)) else {
            return Ok(None);
        };
        let blob = codec::encode(BLOB_V1, &Blob { node: self.node, entries });
        tracing::debug!(first, last, bytes = blob.len(), "ledger entries taken for sealing");
        Ok(Some((first, last, blob)))
    }
}

/// The node and the `(seq, stored bytes)` of a blob from
/// [`Ledger::take_unsealed`]; never panics on other bytes.
pub fn decode_blob(bytes: &[u8]) -> Result<(NodeKey, Vec<StoredEntry>), LedgerError> {
    let limit = MAX_BLOB_BYTES + ENTRY_LIMIT + 1024;
    let blob: Blob = codec::decode(BLOB_V1, bytes, limit).map_err(LedgerError::BadBlob)?;
    Ok((blob.node, blob.entries.into_iter().map(|e| (e.seq, e.bytes.0)).collect()))
}

/// The `last` of the newest good `Sealed` entry before `before`, searching
/// back from the tail (a seal is normally among the last few entries).
pub(super) fn last_sealed(store: &dyn LogStore, node: &NodeKey, before: u64) -> Result<Option<u64>, LedgerError> {
    let mut before = before;
    loop {
        let page = store.range_back(before, PAGE)?;
        let Some((oldest, _)) = page.last() else { return Ok(None) };
        let oldest = *oldest;
        for (seq, bytes) in &page {
            let Ok(signed) = decode_stored(bytes) else { continue };
            if let Event::Sealed { last, .. } = signed.body.event
                && signed.body.seq == *seq
                && last < *seq
                && signed.verify_by(node).is_ok()
            {
                return Ok(Some(last));
            }
        }
        if oldest == 0 {
            return Ok(None);
        }
        before = oldest;
    }
}
