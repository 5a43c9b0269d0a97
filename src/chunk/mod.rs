//! Content-defined chunks: cutting, keys, sealing, ids and manifests.
//!
//! * [`Chunker`] cuts plaintext with fastcdc (v2020) at content-defined
//!   points, so an edit re-cuts only the chunks around it.
//! * [`UserSecret::chunk_key`] derives the convergent key of a chunk (keyed
//!   BLAKE3 of the plaintext), [`seal`] encrypts with AES-256-GCM under that
//!   key, and the [`ChunkId`] is the BLAKE3 of the sealed bytes: anyone can
//!   verify a chunk against its id without a key; only the user can read it.
//! * [`ManifestEntry`] places a chunk in a file.
//!
//! Invariant: this module never does I/O and never touches RocksDB.

mod cut;
pub mod proof;
mod seal;

pub use cut::{ChunkSizes, Chunker};
pub use seal::{ChunkError, UserSecret, open, open_local, open_verified, open_with, seal, seal_with};

use serde::{Deserialize, Serialize};
use std::fmt;

/// Sealed bytes checked against their chunk id where they entered (a fetch
/// from a holder): the store keeps them and [`open_verified`] opens them
/// without hashing the same bytes again.
#[derive(Debug)]
pub struct Verified {
    id: ChunkId,
    sealed: Vec<u8>,
}

impl Verified {
    /// `sealed` if it hashes to `id`; the bytes back otherwise.
    pub fn check(id: ChunkId, sealed: Vec<u8>) -> Result<Verified, Vec<u8>> {
        if id.verifies(&sealed) { Ok(Verified { id, sealed }) } else { Err(sealed) }
    }
    pub fn id(&self) -> ChunkId {
        self.id
    }
    pub fn bytes(&self) -> &[u8] {
        &self.sealed
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.sealed
    }
}

/// The BLAKE3 hash of a chunk's sealed (stored) bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id of these sealed bytes.
    pub fn of(sealed: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(sealed).as_bytes())
    }

    /// True when `sealed` hashes to this id.
    pub fn verifies(&self, sealed: &[u8]) -> bool {
        // blake3::Hash compares in constant time.
        blake3::hash(sealed) == blake3::Hash::from_bytes(self.0)
    }

    /// The first 8 hex digits, for logs.
    pub fn fmt_short(&self) -> String {
        hex(&self.0[..4])
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.fmt_short())
    }
}

/// The convergent key a chunk is sealed under. Never logged.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkKey(pub [u8; 32]);

impl fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkKey(..)")
    }
}

/// One chunk of a file: plaintext bytes `[offset, offset + len)` are the
/// chunk `id`, readable with `key`. Gaps between entries read as zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub offset: u64,
    pub len: u32,
    pub id: ChunkId,
    pub key: ChunkKey,
}

impl ManifestEntry {
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
