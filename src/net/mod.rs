//! The network: a libp2p swarm (TCP + noise + yamux, QUIC; identify, ping,
//! Kademlia in hybrid mode, gossipsub, optional mDNS) and the chunk
//! protocols, driven by one task on the node's tokio runtime.
//!
//! The rest of the node talks to it through a cloneable [`NetHandle`]
//! (commands over a channel, answers over oneshots). Inbound requests go
//! to the node's [`Service`] (the provider) on the blocking pool; the net
//! layer decides no policy, it only bounds what it accepts.

mod announce;
mod behaviour;
pub mod bulk;
mod event_loop;
mod peers;
pub mod proto;

pub use announce::Announce;
pub use peers::{PeerSummary, Role};
pub use proto::{Refusal, Request, Response};

use crate::promise::{Ask, NodeKey, Signed};
use libp2p::{Multiaddr, PeerId, identity};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// How peers find each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Kademlia DHT plus the market gossip.
    Hybrid,
    /// The market gossip and the bootstrap peers alone: no DHT.
    Market,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hybrid => "hybrid",
            Mode::Market => "market",
        }
    }
}

/// What the network layer needs from the node.
pub struct NetConfig {
    /// The 32-byte ed25519 seed of the node's identity.
    pub identity_seed: [u8; 32],
    pub mode: Mode,
    pub role: Role,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub mdns: bool,
}

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot listen on {addr}: {cause}")]
    Listen { addr: Multiaddr, cause: String },
    #[error("bad identity key: {0}")]
    Identity(String),
    #[error("cannot build the network transport: {0}")]
    Transport(String),
    #[error("request to {peer} failed: {cause}")]
    Request { peer: PeerId, cause: String },
    #[error("the network has stopped")]
    Stopped,
    #[error("{0} is not available in market mode (no DHT)")]
    NoDht(&'static str),
}

/// Serves inbound chunk and market requests (a provider); called on the
/// blocking pool.
pub trait Service: Send + Sync + 'static {
    fn serve(&self, from: &NodeKey, req: Request) -> Response;
    /// The ask to announce, reachable at `addrs`; `None` sells nothing now.
    fn ask(&self, addrs: &[Multiaddr]) -> Option<Signed<Ask>>;
    /// Chunks served often, which other providers may copy (announced).
    fn hot(&self) -> Vec<[u8; 32]> {
        Vec::new()
    }
    /// Chunks kept voluntarily and offered for retrieval.
    fn offers(&self) -> Vec<[u8; 32]> {
        Vec::new()
    }
}

/// What a provider's latest announcement listed.
#[derive(Clone, Debug)]
pub struct Listing {
    pub peer: PeerId,
    pub hot: Vec<[u8; 32]>,
    pub offers: Vec<[u8; 32]>,
}

/// This node as the network sees it.
#[derive(Clone, Debug, Serialize)]
pub struct NodeInfo {
    pub peer_id: String,
    /// Listen addresses with `/p2p/<peer id>`, ready to bootstrap from.
    pub listen: Vec<String>,
    pub mode: Mode,
    pub role: Role,
}

enum Command {
    // Boxed: a request carries a whole chunk.
    Request { peer: PeerId, req: Box<Request>, reply: oneshot::Sender<Result<Response, NetError>> },
    Info { reply: oneshot::Sender<NodeInfo> },
    Peers { reply: oneshot::Sender<Vec<PeerSummary>> },
    Providers { reply: oneshot::Sender<Vec<PeerId>> },
    Asks { reply: oneshot::Sender<Vec<(PeerId, Signed<Ask>)>> },
    Listings { reply: oneshot::Sender<Vec<Listing>> },
    FindHolders { key: [u8; 32], reply: oneshot::Sender<Result<Vec<PeerId>, NetError>> },
    Provide { keys: Vec<[u8; 32]> },
    PutRoot { value: Vec<u8> },
    FindRoots { key: Vec<u8>, reply: oneshot::Sender<Result<Vec<Vec<u8>>, NetError>> },
    Shutdown,
}

/// The node's way into the network task; cheap to clone.
#[derive(Clone)]
pub struct NetHandle {
    tx: mpsc::UnboundedSender<Command>,
    bulk: Arc<bulk::Client>,
    local: PeerId,
    key: NodeKey,
}

impl NetHandle {
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }
    pub fn node_key(&self) -> NodeKey {
        self.key
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Sends one request to `peer` (dialling it if needed) and waits for the
    /// answer: puts and gets on the bulk path when the peer accepts it,
    /// everything else through request-response.
    pub async fn request(&self, peer: PeerId, req: Request) -> Result<Response, NetError> {
        let req = if bulk::carries(&req) {
            match self.bulk.request(peer, req).await {
                Ok(res) => return Ok(res),
                Err(bulk::Failed::Error(e)) => return Err(e),
                Err(bulk::Failed::Unsupported(req)) => req,
            }
        } else {
            req
        };
        self.ask(|reply| Command::Request { peer, req: Box::new(req), reply }).await?
    }
    pub async fn info(&self) -> Result<NodeInfo, NetError> {
        self.ask(|reply| Command::Info { reply }).await
    }
    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerSummary>, NetError> {
        self.ask(|reply| Command::Peers { reply }).await
    }
    /// Providers this node knows of (through identify, the DHT or gossip).
    pub async fn providers(&self) -> Result<Vec<PeerId>, NetError> {
        self.ask(|reply| Command::Providers { reply }).await
    }
    /// The asks heard on the market gossip, as heard (unchecked).
    pub async fn asks(&self) -> Result<Vec<(PeerId, Signed<Ask>)>, NetError> {
        self.ask(|reply| Command::Asks { reply }).await
    }
    /// Holders of a chunk according to the DHT's provider records (hybrid only).
    /// What each provider's latest announcement listed (hot chunks, offers).
    pub async fn listings(&self) -> Result<Vec<Listing>, NetError> {
        self.ask(|reply| Command::Listings { reply }).await
    }
    pub async fn find_holders(&self, key: [u8; 32]) -> Result<Vec<PeerId>, NetError> {
        self.ask(|reply| Command::FindHolders { key, reply }).await?
    }
    /// Announces that this node holds these chunks (hybrid: provider records).
    pub fn provide(&self, keys: Vec<[u8; 32]>) {
        let _ = self.tx.send(Command::Provide { keys });
    }
    /// Publishes an encoded signed root as a DHT record under its client's
    /// key (hybrid only; nothing in market mode).
    pub fn put_root(&self, value: Vec<u8>) {
        let _ = self.tx.send(Command::PutRoot { value });
    }
    /// Every record found under a root key (hybrid only), unchecked: the
    /// caller verifies and takes the newest.
    pub async fn find_roots(&self, key: Vec<u8>) -> Result<Vec<Vec<u8>>, NetError> {
        self.ask(|reply| Command::FindRoots { key, reply }).await?
    }
    /// Stops the network task; connections close.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }
}

/// The node key behind a peer id (ed25519 peer ids embed the public key).
pub fn node_key_of(peer: &PeerId) -> Option<NodeKey> {
    let mh = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let pk = identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    Some(NodeKey(pk.try_into_ed25519().ok()?.to_bytes()))
}

/// The peer id of a node key.
pub fn peer_id_of(key: &NodeKey) -> Option<PeerId> {
    let pk = identity::ed25519::PublicKey::try_from_bytes(&key.0).ok()?;
    Some(identity::PublicKey::from(pk).to_peer_id())
}

/// The peer id named by a multiaddr's trailing `/p2p/...`.
pub fn peer_of_addr(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// Starts the network on the current tokio runtime: builds the swarm,
/// listens, dials the bootstrap peers and spawns the event loop.
pub async fn start(cfg: NetConfig, service: Option<Arc<dyn Service>>) -> Result<NetHandle, NetError> {
    let keypair =
        identity::Keypair::ed25519_from_bytes(cfg.identity_seed).map_err(|e| NetError::Identity(e.to_string()))?;
    let local = keypair.public().to_peer_id();
    let key = node_key_of(&local).ok_or_else(|| NetError::Identity("not an ed25519 key".into()))?;
    let swarm = behaviour::build_swarm(&keypair, &cfg)?;
    let control = swarm.behaviour().stream.new_control();
    let (tx, rx) = mpsc::unbounded_channel();
    // Dropped when the event loop ends: the bulk server stops with it.
    let (alive, stopped) = oneshot::channel::<()>();
    if let Some(service) = &service {
        // Chunks stored through the bulk path are announced like the others.
        let provide = tx.clone();
        let stored = move |chunk: [u8; 32]| {
            let _ = provide.send(Command::Provide { keys: vec![chunk] });
        };
        tokio::spawn(bulk::serve(control.clone(), service.clone(), Arc::new(stored), stopped));
    }
    let bulk = Arc::new(bulk::Client::new(control));
    let mut lp = event_loop::EventLoop::new(swarm, cfg, service);
    lp.listen_and_bootstrap()?;
    tokio::spawn(async move {
        lp.run(rx).await;
        drop(alive);
    });
    Ok(NetHandle { tx, bulk, local, key })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_bulk;
