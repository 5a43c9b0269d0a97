//! `pactfs log verify`: the chain checked entry by entry, in pages.
//!
//! An entry is good when its bytes decode, it is stored at the seq it
//! names, right after the previous one (no gap), it names this node, this
//! node's key signed it, and its `prev` is the hash of the previous
//! entry's stored bytes. The first entry that is not good is the answer;
//! past it the pages only count.

use super::entry::{decode_stored, hash_stored};
use super::{LedgerError, LogStore};
use crate::promise::NodeKey;
use std::fmt;

/// Entries read per page of [`verify`]: enough to amortise a store trip,
/// small enough that progress moves.
const PAGE: usize = 4096;

/// Why an entry is not good. Each names what a person would check first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bad {
    /// Nothing is stored at this seq, but `next_stored` is (entries
    /// removed, or never written).
    Missing { next_stored: u64 },
    /// The stored bytes do not decode as an entry (truncated, garbage).
    Undecodable(String),
    /// The entry names another position than the one it is stored at
    /// (entries moved or swapped).
    WrongSeq { found: u64 },
    /// The entry names another node (a log copied from elsewhere).
    WrongNode { found: NodeKey },
    /// The node's key did not sign these bytes (changed after signing).
    BadSignature,
    /// Signed by the node, but `prev` is not the hash of the entry before
    /// (the entry before was changed, or the node wrote two chains).
    BrokenChain,
    /// The store cannot read it (RocksDB reports corruption); entries from
    /// here up to `resume` (exclusive; `None`: to the end) are unreadable.
    Unreadable { resume: Option<u64>, detail: String },
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bad::Missing { next_stored } => write!(f, "missing (the next stored entry is {next_stored})"),
            Bad::Undecodable(e) => write!(f, "does not decode: {e}"),
            Bad::WrongSeq { found } => write!(f, "stored at this position but names position {found}"),
            Bad::WrongNode { found } => write!(f, "names another node ({})", super::entry::hex(&found.0)),
            Bad::BadSignature => f.write_str("signature does not verify under this node's key"),
            Bad::BrokenChain => f.write_str("prev is not the hash of the entry before it"),
            Bad::Unreadable { resume: Some(r), detail } => {
                write!(f, "unreadable in the store up to entry {r}: {detail}")
            }
            Bad::Unreadable { resume: None, detail } => write!(f, "unreadable in the store to the end: {detail}"),
        }
    }
}

/// The first entry that is not good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadEntry {
    pub seq: u64,
    pub why: Bad,
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries read from the store (good or not).
    pub entries: u64,
    /// The first entry that is not good; `None`: the log is intact.
    pub first_bad: Option<BadEntry>,
}

/// Where a paged verification stands: enough to resume it in another
/// process (the CLI pages through the node's control socket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyCursor {
    /// The next seq to read (and, until a bad entry, the one expected).
    pub next: u64,
    /// Hash of the entry before `next`.
    pub prev: [u8; 32],
    /// A bad entry was found: the rest is only counted.
    pub counting: bool,
}

impl VerifyCursor {
    pub fn start() -> VerifyCursor {
        VerifyCursor { next: 0, prev: [0; 32], counting: false }
    }
}

/// One page's findings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyPage {
    pub entries: u64,
    /// Found in this page (at most one per verification: later pages count).
    pub first_bad: Option<BadEntry>,
    /// The end of the log was reached.
    pub done: bool,
}

/// Checks the whole log of `store` against `node`, calling `progress`
/// with the next seq after each page. Store failures other than
/// unreadable entries (I/O, permissions) are errors, not findings.
pub fn verify(
    store: &dyn LogStore,
    node: &NodeKey,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, LedgerError> {
    let mut cursor = VerifyCursor::start();
    let mut report = VerifyReport { entries: 0, first_bad: None };
    loop {
        let page = verify_page(store, node, &mut cursor, PAGE)?;
        report.entries += page.entries;
        if report.first_bad.is_none() {
            report.first_bad = page.first_bad;
        }
        progress(cursor.next);
        if page.done {
            return Ok(report);
        }
    }
}

/// Checks up to `max_entries` entries from `cursor`, and moves it on.
pub fn verify_page(
    store: &dyn LogStore,
    node: &NodeKey,
    cursor: &mut VerifyCursor,
    max_entries: usize,
) -> Result<VerifyPage, LedgerError> {
    let mut limit = max_entries.max(1);
    let mut page = VerifyPage { entries: 0, first_bad: None, done: false };
    let stored = loop {
        match store.range(cursor.next, limit) {
            Ok(stored) => {
                // A page cut short before damage is not the end of the log.
                page.done = stored.len() < limit && limit == max_entries.max(1);
                break stored;
            }
            // Damage further on: check what can be read before it first,
            // since an earlier bad entry is the answer.
            Err(LedgerError::Unreadable { from, .. }) if from > cursor.next && limit > 1 => {
                limit = (limit - 1).min(usize::try_from(from - cursor.next).unwrap_or(usize::MAX));
            }
            Err(LedgerError::Unreadable { from, resume, detail }) => {
                // RocksDB refused a block: name it, then count on past it.
                if !cursor.counting {
                    page.first_bad = Some(BadEntry { seq: from, why: Bad::Unreadable { resume, detail } });
                    cursor.counting = true;
                }
                match resume {
                    Some(r) if r > cursor.next => cursor.next = r,
                    _ => page.done = true,
                }
                return Ok(page);
            }
            Err(e) => return Err(e),
        }
    };
    for (seq, bytes) in stored {
        page.entries += 1;
        if !cursor.counting {
            let checked = if seq != cursor.next {
                Err(BadEntry { seq: cursor.next, why: Bad::Missing { next_stored: seq } })
            } else {
                check(seq, &bytes, node, &cursor.prev).map_err(|why| BadEntry { seq, why })
            };
            match checked {
                Ok(hash) => cursor.prev = hash,
                Err(bad) => {
                    tracing::debug!(seq = bad.seq, why = %bad.why, "first bad ledger entry");
                    page.first_bad = Some(bad);
                    cursor.counting = true;
                }
            }
        }
        cursor.next = seq.saturating_add(1);
    }
    Ok(page)
}

/// Checks one entry stored at `seq`; returns its hash.
fn check(seq: u64, bytes: &[u8], node: &NodeKey, prev: &[u8; 32]) -> Result<[u8; 32], Bad> {
    let signed = decode_stored(bytes).map_err(|e| Bad::Undecodable(e.to_string()))?;
    let entry = &signed.body;
    if entry.seq != seq {
        return Err(Bad::WrongSeq { found: entry.seq });
    }
    if entry.node != *node {
        return Err(Bad::WrongNode { found: entry.node });
    }
    signed.verify_by(node).map_err(|_| Bad::BadSignature)?;
    if entry.prev != *prev {
        return Err(Bad::BrokenChain);
    }
    Ok(hash_stored(bytes))
}
