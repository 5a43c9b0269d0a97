//! The swarm: transports and the behaviours it runs.

use super::proto::{self, ChunkCodec};
use super::{Mode, NetConfig, NetError, announce, peers};
use libp2p::swarm::{NetworkBehaviour, behaviour::toggle::Toggle};
use libp2p::{Swarm, gossipsub, identify, identity, kad, mdns, noise, ping, request_response, tcp, yamux};
use std::time::Duration;

/// Identify's protocol version: nodes of other networks do not mix with ours.
pub const ID_PROTOCOL: &str = "/pactfs/id/1";
/// How long a request may take before it counts as failed (a 16 MiB chunk
/// over a slow link included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Streams per connection and protocol, each way.
const MAX_STREAMS: usize = 64;
/// Connections stay open this long without traffic.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    pub gossip: gossipsub::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub put: request_response::Behaviour<ChunkCodec>,
    pub get: request_response::Behaviour<ChunkCodec>,
    pub has: request_response::Behaviour<ChunkCodec>,
    pub market: request_response::Behaviour<ChunkCodec>,
    /// Long-lived streams of the bulk chunk path (`net::bulk`).
    pub stream: libp2p_stream::Behaviour,
}

fn chunk_protocol(proto: libp2p::StreamProtocol, serve: bool) -> request_response::Behaviour<ChunkCodec> {
    let support =
        if serve { request_response::ProtocolSupport::Full } else { request_response::ProtocolSupport::Outbound };
    let cfg = request_response::Config::default()
        .with_request_timeout(REQUEST_TIMEOUT)
        .with_max_concurrent_streams(MAX_STREAMS);
    request_response::Behaviour::with_codec(ChunkCodec, [(proto, support)], cfg)
}

fn behaviour(key: &identity::Keypair, cfg: &NetConfig) -> Result<Behaviour, NetError> {
    let local = key.public().to_peer_id();
    let identify = identify::Behaviour::new(
        identify::Config::new(ID_PROTOCOL.into(), key.public())
            .with_agent_version(peers::agent_string(cfg.mode, cfg.role))
            .with_push_listen_addr_updates(true),
    );
    let kad = (cfg.mode == Mode::Hybrid).then(|| {
        let store_cfg = kad::store::MemoryStoreConfig {
            // A provider announces every chunk it holds.
            max_provided_keys: 4 << 20,
            max_records: 4096,
            // The only records are drive roots (`promise::Root`).
            max_value_bytes: crate::promise::MAX_ROOT_BYTES,
            ..Default::default()
        };
        let mut kcfg = kad::Config::new(kad::PROTOCOL_NAME);
        // Inbound records and provider records come to the event loop,
        // which keeps only roots that verify and are newer (`on_kad`).
        kcfg.set_record_filtering(kad::StoreInserts::FilterBoth);
        kcfg.set_query_timeout(Duration::from_secs(30));
        // The event loop bootstraps once it has a peer; kad's own timer
        // would only warn "no known peers" on a node started first.
        kcfg.set_periodic_bootstrap_interval(None);
        let mut k = kad::Behaviour::with_config(local, kad::store::MemoryStore::with_config(local, store_cfg), kcfg);
        // Kademlia turns server only on a confirmed external address, which
        // never happens on a LAN or loopback: a node that listens serves.
        if !cfg.listen.is_empty() {
            k.set_mode(Some(kad::Mode::Server));
        }
        k
    });
    let gossip_cfg = gossipsub::ConfigBuilder::default()
        .max_transmit_size(announce::MAX_ANNOUNCE)
        .heartbeat_interval(Duration::from_secs(1))
        .validation_mode(gossipsub::ValidationMode::Strict)
        .build()
        .map_err(|e| NetError::Transport(format!("gossipsub config: {e}")))?;
    let mut gossip = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gossip_cfg)
        .map_err(|e| NetError::Transport(format!("gossipsub: {e}")))?;
    gossip
        .subscribe(&gossipsub::IdentTopic::new(announce::TOPIC))
        .map_err(|e| NetError::Transport(format!("gossipsub subscribe: {e}")))?;
    let mdns = if cfg.mdns {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), local)
                .map_err(|e| NetError::Transport(e.to_string()))?,
        )
    } else {
        None
    };
    let serve = cfg.role.sells();
    Ok(Behaviour {
        identify,
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(15))),
        kad: Toggle::from(kad),
        gossip,
        mdns: Toggle::from(mdns),
        put: chunk_protocol(proto::PUT, serve),
        get: chunk_protocol(proto::GET, serve),
        has: chunk_protocol(proto::HAS, serve),
        market: chunk_protocol(proto::MARKET, serve),
        stream: libp2p_stream::Behaviour::new(),
    })
}

/// Builds the swarm: TCP (noise, yamux) and QUIC, on tokio.
pub fn build_swarm(key: &identity::Keypair, cfg: &NetConfig) -> Result<Swarm<Behaviour>, NetError> {
    let transport = |e: &dyn std::fmt::Display| NetError::Transport(e.to_string());
    let behaviour = behaviour(key, cfg)?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| transport(&e))?
        .with_quic()
        .with_behaviour(|_| behaviour)
        .map_err(|e| transport(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();
    Ok(swarm)
}
