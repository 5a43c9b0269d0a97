//! Reading the log for people (`pactfs log show`): pages of entries,
//! damaged ones included as what they are.

use super::entry::{Entry, decode_stored, hash_stored};
use super::{LedgerError, LogStore};
use crate::promise::Signed;

/// One entry as listed. `log show` does not verify signatures (that is
/// `log verify`'s job); it shows what decodes, and what does not.
#[derive(Clone, Debug)]
pub struct Listed {
    pub seq: u64,
    /// BLAKE3 of the stored bytes; `None` when the store cannot read them.
    pub hash: Option<[u8; 32]>,
    /// The entry, or why it cannot be shown.
    pub entry: Result<Signed<Entry>, String>,
}

/// Up to `limit` entries from seq `from` on, skipping those before the
/// unix time `since`; returns them and where the next page starts
/// (`None`: the end of the log).
pub fn list(
    store: &dyn LogStore,
    from: u64,
    since: Option<u64>,
    limit: usize,
) -> Result<(Vec<Listed>, Option<u64>), LedgerError> {
    let limit = limit.max(1);
    let mut out = Vec::new();
    let mut next = from;
    while out.len() < limit {
        let want = limit - out.len();
        // Cut short to read up to damage: not the end of the log.
        let mut cut_short = false;
        let page = match store.range(next, want) {
            Ok(page) => page,
            // Show what can be read before the damage, then the damage.
            Err(LedgerError::Unreadable { from, .. }) if from > next && want > 1 => {
                cut_short = true;
                store.range(next, want.min(usize::try_from(from - next).unwrap_or(usize::MAX)))?
            }
            Err(LedgerError::Unreadable { from, resume, detail }) => {
                out.push(Listed { seq: from, hash: None, entry: Err(format!("unreadable in the store: {detail}")) });
                match resume {
                    Some(r) if r > next => {
                        next = r;
                        continue;
                    }
                    _ => return Ok((out, None)),
                }
            }
            Err(e) => return Err(e),
        };
        let Some((last, _)) = page.last() else { return Ok((out, None)) };
        let (last, end) = (*last, page.len() < want && !cut_short);
        for (seq, bytes) in page {
            let entry = decode_stored(&bytes).map_err(|e| format!("does not decode: {e}"));
            if let (Ok(e), Some(t)) = (&entry, since)
                && e.body.at < t
            {
                continue;
            }
            out.push(Listed { seq, hash: Some(hash_stored(&bytes)), entry });
        }
        next = last.saturating_add(1);
        if end {
            return Ok((out, None));
        }
    }
    Ok((out, Some(next)))
}

/// The first seq whose entry is at or after unix time `since` (binary
/// search: appends keep `at` from going back). An entry that does not
/// decode counts as late, so the search may start early, never late.
pub fn first_since(store: &dyn LogStore, since: u64) -> Result<u64, LedgerError> {
    let Some((last, _)) = store.last()? else { return Ok(0) };
    let (mut lo, mut hi) = (0u64, last.saturating_add(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let early = match store.range(mid, 1) {
            Ok(page) => match page.first() {
                Some((seq, bytes)) => match decode_stored(bytes) {
                    Ok(e) if e.body.at < since => Some(*seq),
                    _ => None,
                },
                None => None,
            },
            Err(LedgerError::Unreadable { .. }) => None,
            Err(e) => return Err(e),
        };
        match early {
            Some(seq) => lo = seq + 1,
            None => hi = mid,
        }
    }
    Ok(lo)
}
