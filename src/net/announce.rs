//! Market announcements: a provider's signed "I sell storage, reach me
//! here", spread by gossipsub. In market mode they are how a node learns of
//! providers it was never told about; in hybrid mode they complement the DHT.

use super::Role;
use crate::codec;
use crate::promise::{Ask, Signed};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

pub const ANNOUNCE_V1: u8 = 1;
/// Largest announcement accepted (gossipsub's own limit is set to match).
pub const MAX_ANNOUNCE: usize = 16 * 1024;
const MAX_ANNOUNCE_ADDRS: usize = 16;
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
}

impl Announce {
    pub fn new(role: Role, addrs: &[Multiaddr], at: u64) -> Announce {
        let role = match role {
            Role::Provider => 1,
            Role::Both => 2,
            _ => 0,
        };
        let addrs = addrs.iter().take(MAX_ANNOUNCE_ADDRS).map(|a| codec::Bytes(a.to_vec())).collect();
        Announce { role, addrs, at, ask: None }
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
        codec::encode(ANNOUNCE_V1, self)
    }
    pub fn decode(bytes: &[u8]) -> Result<Announce, codec::CodecError> {
        codec::decode(ANNOUNCE_V1, bytes, MAX_ANNOUNCE)
    }
}
