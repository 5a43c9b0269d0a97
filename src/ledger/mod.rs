//! The ledger's events (the full hash-chained log lands with the ledger
//! layer; until then entries are only traced).

use crate::codec::Bytes;
use crate::promise::NodeKey;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    AskTaken {
        provider: NodeKey,
        ask: [u8; 32],
        price_per_gib_month: u64,
        price_per_gib_retrieval: u64,
    },
    Bid {
        provider: NodeKey,
        promise: [u8; 32],
        chunks: u32,
        bytes: u64,
        price_per_gib_month: u64,
        duration_secs: u64,
    },
    Countered {
        provider: NodeKey,
        promise: [u8; 32],
        price_per_gib_month: u64,
    },
    BidRefused {
        provider: NodeKey,
        promise: [u8; 32],
        reason: String,
    },
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
    Receipt {
        promise: [u8; 32],
        chunk: [u8; 32],
        provider: NodeKey,
        bytes: u64,
        signed: Bytes,
    },
    Payment {
        client: NodeKey,
        provider: NodeKey,
        amount: u64,
        total: u64,
        signed: Bytes,
    },
    PaymentWithheld {
        provider: NodeKey,
        promise: [u8; 32],
        amount: u64,
        reason: String,
    },
    Audit {
        promise: [u8; 32],
        provider: NodeKey,
        chunk: [u8; 32],
        passed: bool,
        detail: String,
    },
    Broken {
        promise: [u8; 32],
        provider: NodeKey,
        reason: String,
        evidence: Bytes,
    },
    Expired {
        promise: [u8; 32],
    },
    Renewed {
        old: [u8; 32],
        new: [u8; 32],
    },
    Sealed {
        first: u64,
        last: u64,
        blob: [u8; 32],
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger: {0}")]
    Store(String),
}

/// Placeholder until the ledger layer lands: traces every entry.
#[derive(Default)]
pub struct Ledger;

impl Ledger {
    pub fn append(&self, event: Event) -> Result<u64, LedgerError> {
        tracing::debug!(?event, "ledger entry");
        Ok(0)
    }
}
