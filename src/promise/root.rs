//! A drive's signed root: where its newest metadata snapshot is. Public
//! (a DHT record, or held by providers), so it names the snapshot's parts
//! in the clear and seals what opens them under the user secret (the
//! `snapshot` module makes and opens that sealed list).

use super::{NodeKey, PromiseError, STATEMENT_V1, Signed, Statement};
use crate::codec::{self, Bytes};
use serde::{Deserialize, Serialize};

/// Most parts a root names (each at most one chunk: 64 x 4 MiB of metadata).
pub const MAX_ROOT_PARTS: usize = 64;
/// Most ledger blobs a root names (the newest).
pub const MAX_ROOT_LEDGER: usize = 64;
/// The largest encoded signed root: inside a Kademlia record and a small
/// market message.
pub const MAX_ROOT_BYTES: usize = 32 * 1024;

/// A client's statement of where its newest snapshot is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    pub client: NodeKey,
    /// Higher is newer; whoever holds roots keeps, and a restore takes,
    /// the highest that verifies.
    pub seq: u64,
    pub at: u64,
    /// Fresh per root: the sealed part list's key derives from it.
    pub salt: [u8; 16],
    /// The parts' chunk ids, in order.
    #[serde(deserialize_with = "codec::bounded_seq::<_, _, MAX_ROOT_PARTS>")]
    pub ids: Vec<[u8; 32]>,
    /// The sealed part list (keys, lengths, holders).
    pub parts: Bytes,
    /// The newest sealed ledger blobs.
    #[serde(deserialize_with = "codec::bounded_seq::<_, _, MAX_ROOT_LEDGER>")]
    pub ledger: Vec<[u8; 32]>,
}

impl Statement for Root {
    const DOMAIN: &'static str = "pactfs/root/1";
}

/// Why bytes are not a root to accept.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("malformed root: {0}")]
    Codec(#[from] codec::CodecError),
    #[error("root is for another client")]
    WrongClient,
    #[error("root: {0}")]
    Signature(#[from] PromiseError),
}

/// The record and wire form of a signed root.
pub fn encode_root(root: &Signed<Root>) -> Vec<u8> {
    codec::encode(STATEMENT_V1, root)
}

/// Decodes a root signed by the client it names (and, with `client`,
/// naming that one).
pub fn decode_root(bytes: &[u8], client: Option<&NodeKey>) -> Result<Signed<Root>, RootError> {
    let root: Signed<Root> = codec::decode(STATEMENT_V1, bytes, MAX_ROOT_BYTES)?;
    if client.is_some_and(|c| *c != root.body.client) {
        return Err(RootError::WrongClient);
    }
    root.verify_by(&root.body.client)?;
    Ok(root)
}

/// The Kademlia key under which a client's root is published.
pub fn root_dht_key(client: &NodeKey) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(Root::DOMAIN.as_bytes());
    h.update(&[0]);
    h.update(&client.0);
    h.finalize().as_bytes().to_vec()
}
