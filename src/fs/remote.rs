//! Chunks whose bodies are not in the local store (evicted after
//! placement, or a restored drive's) come from the network. `fs` never
//! talks to the network itself: the node hands the drive a [`Remote`]
//! over its market agent, and the drive keeps what it fetched.

use crate::chunk::{ChunkId, Verified};

/// Fetches a chunk's sealed body from the network.
pub trait Remote: Send + Sync {
    /// The sealed body of `id`, checked against `id`; an error says why no
    /// holder could serve it. Blocks: never called on a runtime thread.
    fn fetch(&self, id: &ChunkId) -> Result<Verified, String>;
}
