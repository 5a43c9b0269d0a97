//! What one ledger entry says, and its bytes.
//!
//! ```text
//! stored entry = codec::encode(LEDGER_V1, Signed<Entry>)
//!   | version u8 | Entry (seq, prev, at, node, Event) | sig: len 64 + 64 bytes |
//! signature    = ed25519 over codec::encode(promise's statement version, Entry)
//! entry hash   = BLAKE3 of the stored bytes (what the next entry's `prev` holds)
//! ```
//!
//! [`Event`] variants are tagged by position on the wire: append new ones at
//! the end, never reorder or remove one (old entries must keep decoding).

use crate::codec::{self, Bytes, CodecError};
use crate::promise::{NodeKey, Signed, Statement};
use serde::{Deserialize, Serialize};

/// Version byte of a stored entry.
pub const LEDGER_V1: u8 = 1;
/// The largest stored entry: an entry carries at most a few signed
/// statements as evidence, and a lying length prefix must cost no more.
pub const ENTRY_LIMIT: usize = 64 * 1024;

/// One line of the log. Stored as `Signed<Entry>`, signed by `node`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log: 0 for the first entry, then one more each time.
    pub seq: u64,
    /// BLAKE3 of the previous entry's stored bytes; zeros for entry 0.
    pub prev: [u8; 32],
    /// Unix seconds when it was appended; never less than the entry before.
    pub at: u64,
    /// The node whose log this is (and whose key signs it).
    pub node: NodeKey,
    pub event: Event,
}

impl Statement for Entry {
    const DOMAIN: &'static str = "pactfs/ledger-entry/1";
}

/// What happened. Amounts are milli-credits; `signed` and `evidence` hold
/// the encoded signed statement the event rests on, kept as proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// We took a provider's ask (its offer) into consideration for bids.
    AskTaken { provider: NodeKey, ask: [u8; 32], price_per_gib_month: u64, price_per_gib_retrieval: u64 },
    /// We bid for storage with a provider.
    Bid { provider: NodeKey, promise: [u8; 32], chunks: u32, bytes: u64, price_per_gib_month: u64, duration_secs: u64 },
    /// The provider answered a bid with another price.
    Countered { provider: NodeKey, promise: [u8; 32], price_per_gib_month: u64 },
    /// The provider refused a bid.
    BidRefused {
        provider: NodeKey,
        promise: [u8; 32],
        #[serde(with = "codec::string")]
        reason: String,
    },
    /// A promise both sides signed.
    Promise {
        id: [u8; 32],
        client: NodeKey,
        provider: NodeKey,
        chunks: u32,
        bytes: u64,
        price_per_gib_month: u64,
        start: u64,
        expiry: u64,
        signed: Bytes,
    },
    /// A provider's signed receipt for one chunk stored under a promise.
    Receipt { promise: [u8; 32], chunk: [u8; 32], provider: NodeKey, bytes: u64, signed: Bytes },
    /// A payment (cheque): `amount` now, `total` paid to this provider so far.
    Payment { client: NodeKey, provider: NodeKey, amount: u64, total: u64, signed: Bytes },
    /// A payment we owed and did not make, and why.
    PaymentWithheld {
        provider: NodeKey,
        promise: [u8; 32],
        amount: u64,
        #[serde(with = "codec::string")]
        reason: String,
    },
    /// One audit of a chunk held under a promise.
    Audit {
        promise: [u8; 32],
        provider: NodeKey,
        chunk: [u8; 32],
        passed: bool,
        #[serde(with = "codec::string")]
        detail: String,
    },
    /// A promise the provider broke, with the evidence.
    Broken {
        promise: [u8; 32],
        provider: NodeKey,
        #[serde(with = "codec::string")]
        reason: String,
        evidence: Bytes,
    },
    /// A promise ran to its expiry.
    Expired { promise: [u8; 32] },
    /// A promise was renewed as a new one.
    Renewed { old: [u8; 32], new: [u8; 32] },
    /// Entries `first..=last` were sealed into the blob with this chunk id.
    Sealed { first: u64, last: u64, blob: [u8; 32] },
}

impl Event {
    /// A short stable name of the kind, for `log show` and its JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::AskTaken { .. } => "ask_taken",
            Event::Bid { .. } => "bid",
            Event::Countered { .. } => "countered",
            Event::BidRefused { .. } => "bid_refused",
            Event::Promise { .. } => "promise",
            Event::Receipt { .. } => "receipt",
            Event::Payment { .. } => "payment",
            Event::PaymentWithheld { .. } => "payment_withheld",
            Event::Audit { .. } => "audit",
            Event::Broken { .. } => "broken",
            Event::Expired { .. } => "expired",
            Event::Renewed { .. } => "renewed",
            Event::Sealed { .. } => "sealed",
        }
    }

    /// One line for people: ids shortened, amounts in credits.
    pub fn summary(&self) -> String {
        match self {
            Event::AskTaken { provider, ask, price_per_gib_month, price_per_gib_retrieval } => format!(
                "ask {} of {}: {}/GiB-month, {}/GiB retrieved",
                short(ask),
                key(provider),
                credits(*price_per_gib_month),
                credits(*price_per_gib_retrieval)
            ),
            Event::Bid { provider, promise, chunks, bytes, price_per_gib_month, duration_secs } => format!(
                "bid {} to {}: {chunks} chunks, {} for {} at {}/GiB-month",
                short(promise),
                key(provider),
                size(*bytes),
                days(*duration_secs),
                credits(*price_per_gib_month)
            ),
            Event::Countered { provider, promise, price_per_gib_month } => {
                format!(
                    "{} countered bid {} at {}/GiB-month",
                    key(provider),
                    short(promise),
                    credits(*price_per_gib_month)
                )
            }
            Event::BidRefused { provider, promise, reason } => {
                format!("{} refused bid {}: {}", key(provider), short(promise), one_line(reason))
            }
            Event::Promise { id, provider, chunks, bytes, price_per_gib_month, start, expiry, .. } => format!(
                "promise {} with {}: {chunks} chunks, {} for {} at {}/GiB-month",
                short(id),
                key(provider),
                size(*bytes),
                days(expiry.saturating_sub(*start)),
                credits(*price_per_gib_month)
            ),
            Event::Receipt { promise, chunk, provider, bytes, .. } => {
                format!("{} stored chunk {} ({}) under {}", key(provider), short(chunk), size(*bytes), short(promise))
            }
            Event::Payment { provider, amount, total, .. } => {
                format!("paid {} to {} ({} in all)", credits(*amount), key(provider), credits(*total))
            }
            Event::PaymentWithheld { provider, promise, amount, reason } => format!(
                "withheld {} from {} under {}: {}",
                credits(*amount),
                key(provider),
                short(promise),
                one_line(reason)
            ),
            Event::Audit { promise, provider, chunk, passed, detail } => format!(
                "audit of chunk {} on {} under {}: {}{}",
                short(chunk),
                key(provider),
                short(promise),
                if *passed { "passed" } else { "FAILED" },
                if detail.is_empty() { String::new() } else { format!(" ({})", one_line(detail)) }
            ),
            Event::Broken { promise, provider, reason, .. } => {
                format!("{} broke promise {}: {}", key(provider), short(promise), one_line(reason))
            }
            Event::Expired { promise } => format!("promise {} expired", short(promise)),
            Event::Renewed { old, new } => format!("promise {} renewed as {}", short(old), short(new)),
            Event::Sealed { first, last, blob } => format!("entries {first}..={last} sealed into blob {}", short(blob)),
        }
    }
}

/// The stored bytes of a signed entry.
pub fn encode_stored(signed: &Signed<Entry>) -> Vec<u8> {
    codec::encode(LEDGER_V1, signed)
}

/// Decodes stored bytes; never panics, never allocates beyond the input.
pub fn decode_stored(bytes: &[u8]) -> Result<Signed<Entry>, CodecError> {
    codec::decode(LEDGER_V1, bytes, ENTRY_LIMIT)
}

/// The hash the next entry's `prev` must hold.
pub fn hash_stored(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// Lower-case hex (the ledger may not use `chunk::hex`: layers).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The first 8 hex digits of an id.
fn short(id: &[u8; 32]) -> String {
    hex(&id[..4])
}

fn key(k: &NodeKey) -> String {
    format!("node {}", short(&k.0))
}

/// Milli-credits as credits ("1.5 cr").
fn credits(milli: u64) -> String {
    let (whole, frac) = (milli / 1000, milli % 1000);
    if frac == 0 { format!("{whole} cr") } else { format!("{whole}.{} cr", format!("{frac:03}").trim_end_matches('0')) }
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

fn days(secs: u64) -> String {
    if secs.is_multiple_of(86_400) { format!("{}d", secs / 86_400) } else { format!("{}h", secs.div_ceil(3_600)) }
}

/// Text from a peer stays on one line of `log show`.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_and_sizes_for_people() {
        assert_eq!(credits(0), "0 cr");
        assert_eq!(credits(1500), "1.5 cr");
        assert_eq!(credits(2001), "2.001 cr");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(3 << 20), "3.0 MiB");
        assert_eq!(days(30 * 86_400), "30d");
        assert_eq!(days(5_000), "2h");
        assert_eq!(one_line("a\nb\tc"), "a b c");
    }

    /// Pins the encoding of an entry: a serde or bincode change that moves
    /// a byte must fail here, not in the field against old logs.
    #[test]
    fn golden_bytes_of_an_entry() {
        let entry = Entry {
            seq: 300,
            prev: [0xaa; 32],
            at: 5,
            node: NodeKey([0xbb; 32]),
            event: Event::BidRefused { provider: NodeKey([0xcc; 32]), promise: [0xdd; 32], reason: "no".into() },
        };
        let mut want = vec![LEDGER_V1];
        want.extend([0xfb, 0x2c, 0x01]); // seq 300: varint u16 marker, LE
        want.extend([0xaa; 32]); // prev
        want.push(5); // at
        want.extend([0xbb; 32]); // node
        want.push(3); // event tag: BidRefused is the fourth variant
        want.extend([0xcc; 32]); // provider
        want.extend([0xdd; 32]); // promise
        want.extend([2, b'n', b'o']); // reason: length, bytes
        assert_eq!(codec::encode(LEDGER_V1, &entry), want);
        let back: Entry = codec::decode(LEDGER_V1, &want, ENTRY_LIMIT).unwrap();
        assert_eq!(back, entry);
    }
}
