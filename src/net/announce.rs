//! Market announcements: a provider's signed "I sell storage, reach me
//! here", spread by gossipsub. In market mode they are how a node learns of
//! providers it was never told about; in hybrid mode they complement the DHT.
//!
//! A provider also lists the chunks it serves often (`hot`: others may copy
//! them) and, in market mode, the chunks it keeps of its own accord and
//! offers for retrieval (`offers`; in hybrid mode those are DHT provider
//! records instead).

use super::Role;
use crate::codec;
use crate::promise::{Ask, Signed};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

pub const ANNOUNCE_V2: u8 = 2;
/// Largest announcement accepted (gossipsub's own limit is set to match).
pub const MAX_ANNOUNCE: usize = 32 * 1024;
const MAX_ANNOUNCE_ADDRS: usize = 16;
/// Most chunk ids in each of `hot` and `offers`.
pub const MAX_LISTED: usize = 256;
/// The gossip topic of announcements.
pub const TOPIC: &str = "pactfs/market/peers/1";

/// One announcement. Its author is gossipsub's signed message source;
/// capacity and prices belong to the market's asks, not here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// 0 client, 1 provider, 2 both.
    pub role: u8,
    /// Addresses as multiaddr bytes.
    #[serde(deserialize_with = "codec::bounded_seq::<_, _, MAX_ANNOUNCE_ADDRS>")]
    pub addrs: Vec<codec::Bytes>,
    pub at: u64,
    /// A provider's current ask (its signature is the market's to check).
    pub ask: Option<Signed<Ask>>,
    /// Chunks it serves often, which others may copy from it.
    #[serde(deserialize_with = "codec::bounded_seq::<_, _, MAX_LISTED>")]
    pub hot: Vec<[u8; 32]>,
    /// Chunks it keeps of its own accord and serves for retrieval.
    #[serde(deserialize_with = "codec::bounded_seq::<_, _, MAX_LISTED>")]
    pub offers: Vec<[u8; 32]>,
}

impl Announce {
    pub fn new(role: Role, addrs: &[Multiaddr], at: u64) -> Announce {
        let role = match role {
            Role::Provider => 1,
            Role::Both => 2,
            _ => 0,
        };
        let addrs = addrs.iter().take(MAX_ANNOUNCE_ADDRS).map(|a| codec::Bytes(a.to_vec())).collect();
        Announce { role, addrs, at, ask: None, hot: Vec::new(), offers: Vec::new() }
    }
    pub fn role(&self) -> Role {
        match self.role {
            1 => Role::Provider,
            2 => Role::Both,
            0 => Role::Client,
            _ => Role::Unknown,
        }
    }
    /// The addresses that parse; at most a fixed number.
    pub fn multiaddrs(&self) -> Vec<Multiaddr> {
        self.addrs.iter().take(MAX_ANNOUNCE_ADDRS).filter_map(|b| Multiaddr::try_from(b.0.clone()).ok()).collect()
    }
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(ANNOUNCE_V2, self)
    }
    pub fn decode(bytes: &[u8]) -> Result<Announce, codec::CodecError> {
        codec::decode(ANNOUNCE_V2, bytes, MAX_ANNOUNCE)
    }
}
