//! The ledger: this node's hash-chained, signed, append-only transaction log.
//!
//! Every promise, upload receipt, audit, broken promise and payment the
//! market handles becomes one [`Entry`]: its position (`seq`), the hash of
//! the entry before it (`prev`), the time, this node's key and the
//! [`Event`], signed by the node's [`Signer`]. Entry `n + 1` holds the
//! BLAKE3 of entry `n`'s stored bytes, entry 0 holds zeros.
//!
//! **Why a hash chain.** A signature alone proves that this node wrote an
//! entry; it does not prove that the log is whole. Chaining each entry to
//! the one before makes the log one object: an entry removed, reordered,
//! replaced or changed on disk breaks the chain at that point, and
//! [`verify`] names the first entry where it breaks. Sealed blobs (below)
//! copy the chain elsewhere, so the tail can later be checked against them.
//!
//! **What `verify` proves, and what it does not.** It proves integrity
//! against this node's key: every stored entry decodes, sits at the seq it
//! names, follows the one before without a gap, names and is signed by
//! `node`, and chains to its predecessor. It does not prove that what the
//! entries say is true (the node signs what its own market code told it),
//! that nothing was appended by someone holding the key, or that the log's
//! tail was not cut off: dropping the last entries leaves a shorter chain
//! that still verifies (RocksDB's own recovery may do exactly that to a
//! torn WAL tail). The sealed blobs placed on other machines are what can
//! show a missing tail.
//!
//! **Storage.** The ledger knows only the [`LogStore`] trait (key: seq,
//! value: the stored bytes); `node` implements it over the RocksDB store's
//! `ledger` column family. Appends are serialised by one lock and each is
//! one synced write, so an `Ok` seq is on disk. `append` blocks on that
//! write: call it from async code through `spawn_blocking`.
//!
//! **Sealing.** [`Ledger::take_unsealed`] copies the entries after the
//! last sealed range into one versioned blob; the caller stores the blob
//! as a chunk like any data and appends [`Event::Sealed`] naming it. Each
//! seal is itself an entry of the next blob, so the blobs chain too.
//!
//! Start reading at [`Ledger`], then [`verify`]. Layers: `promise` (keys,
//! signatures) and `codec` (bytes) only.

mod entry;
mod read;
mod seal;
#[cfg(test)]
mod tests;
mod verify;
pub mod view;

pub use entry::{ENTRY_LIMIT, Entry, Event, LEDGER_V1, decode_stored, encode_stored, hash_stored, hex};
pub use read::{Listed, first_since, list};
pub use seal::{MAX_BLOB_BYTES, decode_blob};
pub use verify::{Bad, BadEntry, VerifyCursor, VerifyPage, VerifyReport, verify, verify_page};

use crate::codec::CodecError;
use crate::promise::{NodeKey, Signer, unix_now};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

/// One entry as stored: its seq and its bytes.
pub type StoredEntry = (u64, Vec<u8>);

/// Where the entries live: a map from seq to stored bytes.
///
/// Implemented by `node` over RocksDB; the ledger never sees the store.
pub trait LogStore: Send + Sync {
    /// The highest stored seq and its bytes; `None` for an empty log.
    fn last(&self) -> Result<Option<StoredEntry>, LedgerError>;
    /// Stores entries in one durable (synced) write: all of them or none.
    fn put_batch(&self, entries: &[(u64, &[u8])]) -> Result<(), LedgerError>;
    /// Up to `limit` entries with seq >= `from`, in seq order. Entries
    /// the store cannot read are `LedgerError::Unreadable`.
    fn range(&self, from: u64, limit: usize) -> Result<Vec<StoredEntry>, LedgerError>;
    /// Up to `limit` entries with seq < `before`, newest first.
    fn range_back(&self, before: u64, limit: usize) -> Result<Vec<StoredEntry>, LedgerError>;

    /// Stores one entry durably.
    fn put(&self, seq: u64, bytes: &[u8]) -> Result<(), LedgerError> {
        self.put_batch(&[(seq, bytes)])
    }
}

/// What can go wrong in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The store failed (I/O, permissions, a full disk). Nothing was
    /// appended by the call that got this; a later append may succeed.
    #[error("ledger store: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
    /// The store reports damage it cannot read past: the entries from
    /// `from` up to `resume` (exclusive; `None`: to the end) are lost to it.
    #[error("ledger entries from {from} {} cannot be read: {detail}", match resume { Some(r) => format!("to {r}"), None => "on".to_string() })]
    Unreadable { from: u64, resume: Option<u64>, detail: String },
    /// An event too large for one entry (its evidence, most likely):
    /// nothing was appended.
    #[error("a ledger entry of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    /// A `Sealed` event that does not cover the entries after the last
    /// sealed range (two sealers, or a blob taken before another seal).
    #[error(
        "seal of entries {first}..={last} out of order: the next seal must start at {expected} and end before {next}"
    )]
    SealOutOfOrder { first: u64, last: u64, expected: u64, next: u64 },
    /// Bytes that should be a sealed blob do not decode as one.
    #[error("not a sealed ledger blob: {0}")]
    BadBlob(CodecError),
}

/// A node's open ledger. Cheap to share behind an `Arc`; appends from
/// many threads are serialised.
pub struct Ledger {
    store: Arc<dyn LogStore>,
    signer: Signer,
    node: NodeKey,
    /// Where the next entry goes. Its lock is held across the store write,
    /// which is what serialises appends.
    tail: Mutex<Tail>,
}

/// The end of the chain, as the next append needs it.
#[derive(Clone, Debug)]
struct Tail {
    next: u64,
    prev: [u8; 32],
    /// `at` of the last entry: time in the log never goes back.
    last_at: u64,
    /// The last seq covered by a `Sealed` event.
    sealed_through: Option<u64>,
    /// The last entry is a `Sealed` event (nothing new to seal but it).
    tail_is_seal: bool,
    /// A write failed: the store may hold more than this says; read the
    /// tail again before the next append.
    stale: bool,
}

impl Ledger {
    /// Opens the log in `store`, continuing its chain. A damaged last
    /// entry does not stop the node: new entries chain onto its stored
    /// bytes, and `verify` names it.
    pub fn open(store: Arc<dyn LogStore>, signer: Signer) -> Result<Ledger, LedgerError> {
        let node = signer.node_key();
        let tail = read_tail(&*store, &node)?;
        tracing::debug!(next = tail.next, sealed_through = ?tail.sealed_through, "ledger open");
        Ok(Ledger { store, signer, node, tail: Mutex::new(tail) })
    }

    /// The key this log is signed with.
    pub fn node(&self) -> NodeKey {
        self.node
    }

    /// The store, for [`verify`] and [`list`].
    pub fn store(&self) -> &dyn LogStore {
        &*self.store
    }

    /// The seq the next entry will get.
    pub fn next_seq(&self) -> u64 {
        self.lock_tail().next
    }

    /// Appends one event; returns its seq once it is on disk.
    pub fn append(&self, event: Event) -> Result<u64, LedgerError> {
        Ok(self.append_many(vec![event])?.start)
    }

    /// Appends events in order, in one durable write (all or none);
    /// returns their seqs. Keep batches small: they are one write batch.
    pub fn append_many(&self, events: Vec<Event>) -> Result<Range<u64>, LedgerError> {
        let mut tail = self.lock_tail();
        if tail.stale {
            *tail = read_tail(&*self.store, &self.node)?;
        }
        let start = tail.next;
        let mut new = tail.clone();
        let mut stored = Vec::with_capacity(events.len());
        let now = unix_now();
        for event in events {
            if let Event::Sealed { first, last, .. } = event {
                let expected = new.sealed_through.map_or(0, |s| s + 1);
                if first != expected || last < first || last >= new.next {
                    return Err(LedgerError::SealOutOfOrder { first, last, expected, next: new.next });
                }
                new.sealed_through = Some(last);
            }
            new.tail_is_seal = matches!(event, Event::Sealed { .. });
            if now < new.last_at {
                tracing::debug!(now, last = new.last_at, "clock behind the ledger: keeping its time");
            }
            let entry = Entry { seq: new.next, prev: new.prev, at: now.max(new.last_at), node: self.node, event };
            new.last_at = entry.at;
            let bytes = encode_stored(&self.signer.sign(entry));
            if bytes.len() > ENTRY_LIMIT {
                return Err(LedgerError::TooLarge { len: bytes.len(), limit: ENTRY_LIMIT });
            }
            new.prev = hash_stored(&bytes);
            stored.push((new.next, bytes));
            new.next += 1;
        }
        let refs: Vec<(u64, &[u8])> = stored.iter().map(|(seq, b)| (*seq, b.as_slice())).collect();
        if let Err(e) = self.store.put_batch(&refs) {
            // The write may or may not have reached the store.
            tail.stale = true;
            return Err(e);
        }
        *tail = new;
        tracing::trace!(first = start, count = stored.len(), "ledger entries appended");
        Ok(start..tail.next)
    }

    /// Entries from `from` on (or, with `since`, from the first one at or
    /// after that unix time), up to `limit`; also returns where the next
    /// page starts (`None`: the end).
    pub fn entries(
        &self,
        since: Option<u64>,
        from: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Listed>, Option<u64>), LedgerError> {
        let from = match (from, since) {
            (Some(f), _) => f,
            (None, Some(t)) => first_since(&*self.store, t)?,
            (None, None) => 0,
        };
        list(&*self.store, from, since, limit)
    }

    fn lock_tail(&self) -> MutexGuard<'_, Tail> {
        // A panic while appending left the tail as it was before that
        // append (it is only replaced after the write).
        crate::lock(&self.tail)
    }
}

/// The tail as the store holds it.
fn read_tail(store: &dyn LogStore, node: &NodeKey) -> Result<Tail, LedgerError> {
    let mut tail = Tail { next: 0, prev: [0; 32], last_at: 0, sealed_through: None, tail_is_seal: false, stale: false };
    let Some((seq, bytes)) = store.last()? else { return Ok(tail) };
    tail.next = seq.saturating_add(1);
    tail.prev = hash_stored(&bytes);
    match decode_stored(&bytes) {
        Ok(signed) if signed.body.seq == seq && signed.verify_by(node).is_ok() => {
            tail.last_at = signed.body.at;
            tail.tail_is_seal = matches!(signed.body.event, Event::Sealed { .. });
        }
        _ => tracing::warn!(seq, "the last ledger entry is damaged; new entries chain onto its bytes"),
    }
    tail.sealed_through = seal::last_sealed(store, node, tail.next)?;
    Ok(tail)
}
