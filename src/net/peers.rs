//! What this node knows of its peers: addresses, role and mode (from the
//! identify agent string or the market announcements), latency.

use crate::promise::{Ask, Signed};
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What a node does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Client,
    Provider,
    Both,
    Unknown,
}

impl Role {
    pub fn new(client: bool, provider: bool) -> Role {
        match (client, provider) {
            (true, true) => Role::Both,
            (false, true) => Role::Provider,
            (true, false) => Role::Client,
            (false, false) => Role::Unknown,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Provider => "provider",
            Role::Both => "both",
            Role::Unknown => "unknown",
        }
    }
    fn parse(s: &str) -> Role {
        match s {
            "client" => Role::Client,
            "provider" => Role::Provider,
            "both" => Role::Both,
            _ => Role::Unknown,
        }
    }
    pub fn sells(self) -> bool {
        matches!(self, Role::Provider | Role::Both)
    }
}

/// The identify agent string: `pactfs/<version> (mode=<mode>; role=<role>)`.
pub fn agent_string(mode: super::Mode, role: Role) -> String {
    format!("pactfs/{} (mode={}; role={})", env!("CARGO_PKG_VERSION"), mode.as_str(), role.as_str())
}

/// Reads mode and role back from a peer's agent string ("unknown" for
/// anything that is not pactfs).
pub fn parse_agent(agent: &str) -> (String, Role) {
    if !agent.starts_with("pactfs/") {
        return ("unknown".into(), Role::Unknown);
    }
    let field = |name: &str| {
        agent.split(['(', ';', ')']).map(str::trim).find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    let mode = match field("mode") {
        Some(m @ ("hybrid" | "market")) => m.to_string(),
        _ => "unknown".into(),
    };
    (mode, field("role").map(Role::parse).unwrap_or(Role::Unknown))
}

/// One connected peer, as `pactfs peers` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PeerSummary {
    pub peer_id: String,
    pub addresses: Vec<String>,
    pub mode: String,
    pub role: Role,
    pub latency_ms: Option<f64>,
}

#[derive(Default)]
pub(super) struct Peer {
    pub connections: usize,
    /// Addresses it listens on (identify) or we reached it at.
    pub addrs: Vec<Multiaddr>,
    pub mode: Option<String>,
    pub role: Option<Role>,
    pub rtt: Option<Duration>,
    /// When a market announcement last named it a provider.
    pub announced: Option<Instant>,
    /// Its latest ask heard on the gossip.
    pub ask: Option<Signed<Ask>>,
    /// Hot chunks and offers of its latest announcement.
    pub hot: Vec<[u8; 32]>,
    pub offers: Vec<[u8; 32]>,
}

/// Most addresses kept per peer: a peer cannot grow our memory with lies.
const MAX_ADDRS: usize = 16;

#[derive(Default)]
pub(super) struct PeerTable {
    pub peers: HashMap<PeerId, Peer>,
}

impl PeerTable {
    pub fn entry(&mut self, peer: PeerId) -> &mut Peer {
        self.peers.entry(peer).or_default()
    }

    pub fn add_addrs(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = Multiaddr>) {
        let p = self.entry(peer);
        for a in addrs {
            if !p.addrs.contains(&a) {
                if p.addrs.len() == MAX_ADDRS {
                    p.addrs.remove(0);
                }
                p.addrs.push(a);
            }
        }
    }

    pub fn connected(&self) -> impl Iterator<Item = (&PeerId, &Peer)> {
        self.peers.iter().filter(|(_, p)| p.connections > 0)
    }

    pub fn providers(&self) -> Vec<PeerId> {
        let mut out: Vec<PeerId> =
            self.peers.iter().filter(|(_, p)| p.role.is_some_and(Role::sells)).map(|(id, _)| *id).collect();
        out.sort();
        out
    }

    pub fn asks(&self) -> Vec<(PeerId, Signed<Ask>)> {
        self.peers.iter().filter_map(|(id, p)| Some((*id, p.ask.clone()?))).collect()
    }

    pub fn listings(&self) -> Vec<super::Listing> {
        self.peers
            .iter()
            .filter(|(_, p)| !p.hot.is_empty() || !p.offers.is_empty())
            .map(|(id, p)| super::Listing { peer: *id, hot: p.hot.clone(), offers: p.offers.clone() })
            .collect()
    }

    pub fn summaries(&self) -> Vec<PeerSummary> {
        let mut out: Vec<PeerSummary> = self
            .connected()
            .map(|(id, p)| PeerSummary {
                peer_id: id.to_string(),
                addresses: {
                    let mut a: Vec<String> = p.addrs.iter().map(|a| a.to_string()).collect();
                    a.sort();
                    a
                },
                mode: p.mode.clone().unwrap_or_else(|| "unknown".into()),
                role: p.role.unwrap_or(Role::Unknown),
                latency_ms: p.rtt.map(|d| d.as_secs_f64() * 1000.0),
            })
            .collect();
        out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_round_trip() {
        let s = agent_string(super::super::Mode::Market, Role::Both);
        assert_eq!(parse_agent(&s), ("market".to_string(), Role::Both));
        assert_eq!(parse_agent("rust-libp2p/0.1"), ("unknown".to_string(), Role::Unknown));
        assert_eq!(parse_agent("pactfs/9 (mode=evil; role=x)"), ("unknown".to_string(), Role::Unknown));
    }
}
