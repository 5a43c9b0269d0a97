//! How far a file's chunks have gone beyond this machine, shown in the
//! mount as read-only extended attributes:
//!
//! * `user.pactfs.replicas`: `R/N`, the fewest replicas any chunk of the
//!   file has on providers (`R`) over the replication target (`N`). A file
//!   with no chunk (empty) reads `N/N`: it has nothing to lose. A file with
//!   bytes written but not yet cut into chunks reads `0/N`.
//! * `user.pactfs.promises`: the ids (hex, comma-separated, sorted, each
//!   once) of the promises under which the file's chunks are stored.
//!
//! They are computed on each read, never stored, and not listed by
//! `listxattr` (so `cp -a` and `rsync -X` do not copy them to other file
//! systems, nor back). Setting or removing any `user.pactfs.` attribute
//! fails with EPERM: the names belong to pactfs.
//!
//! `fs` never talks to the network, so the answers come through
//! [`Durability`], a handle the node implements over the store and the
//! market agent and gives the drive once the network runs. Until then (and
//! in tests without a network) the drive answers with [`Offline`].

use crate::chunk::ChunkId;
use crate::store::StoreError;

/// Prefix of the attribute names pactfs reserves.
pub const RESERVED_PREFIX: &[u8] = b"user.pactfs.";
/// `R/N`: the least-replicated chunk's replicas over the target.
pub const REPLICAS_XATTR: &[u8] = b"user.pactfs.replicas";
/// Promise ids, hex, comma-separated.
pub const PROMISES_XATTR: &[u8] = b"user.pactfs.promises";

/// What the drive asks about the placement of a file's chunks.
pub trait Durability: Send + Sync {
    /// The replication target (distinct providers per chunk).
    fn target(&self) -> u32;
    /// The fewest replicas recorded for any of `chunks` (a chunk no longer
    /// in the index counts 0); `target()` when `chunks` is empty.
    fn min_replicas(&self, chunks: &[ChunkId]) -> Result<u32, StoreError>;
    /// The promises under which `chunks` are stored, each once, in order.
    fn promises(&self, chunks: &[ChunkId]) -> Result<Vec<[u8; 32]>, StoreError>;
}

/// A drive with no network: nothing is stored anywhere else.
#[derive(Clone, Copy, Debug, Default)]
pub struct Offline {
    pub target: u32,
}

impl Durability for Offline {
    fn target(&self) -> u32 {
        self.target
    }

    fn min_replicas(&self, chunks: &[ChunkId]) -> Result<u32, StoreError> {
        Ok(if chunks.is_empty() { self.target } else { 0 })
    }

    fn promises(&self, _chunks: &[ChunkId]) -> Result<Vec<[u8; 32]>, StoreError> {
        Ok(Vec::new())
    }
}

/// `R/N` as the attribute reads.
pub fn replicas_value(min: u32, target: u32) -> Vec<u8> {
    format!("{min}/{target}").into_bytes()
}

/// Promise ids as the attribute reads: lowercase hex, comma-separated.
pub fn promises_value(ids: &[[u8; 32]]) -> Vec<u8> {
    ids.iter().map(|id| crate::chunk::hex(id)).collect::<Vec<_>>().join(",").into_bytes()
}
