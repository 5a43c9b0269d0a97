//! The network task: drives the swarm, answers the node's commands and
//! hands inbound requests to the service.

use super::behaviour::{Behaviour, BehaviourEvent};
use super::peers::{self, PeerTable, Role};
use super::proto::ChunkCodec;
use super::proto::{Refusal, Request, Response};
use super::{Announce, Command, Mode, NetConfig, NetError, NodeInfo, Service, announce, node_key_of, peer_of_addr};
use crate::promise::{decode_root, root_dht_key};
use futures::StreamExt;
use libp2p::kad::store::RecordStore;
use libp2p::request_response::{self as rr, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, identify, kad, mdns, ping};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Inbound requests one peer may have in flight; more are refused as busy.
pub const MAX_INFLIGHT_PER_PEER: usize = 32;
/// Connections the node opens on its own to peers it learns of.
const MAX_AUTO_DIALS: usize = 64;
/// Provider-record announcements in flight at once.
const MAX_PROVIDE_QUERIES: usize = 16;
/// How often the node announces itself, re-dials bootstrap peers and asks
/// the DHT for providers; quick at first, then settled.
const TICK_EARLY: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_secs(10);
const EARLY_FOR: Duration = Duration::from_secs(60);
/// A disconnected peer not announced for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// How often a DHT node refreshes its routing table and market record.
const DHT_REFRESH: Duration = Duration::from_secs(300);

/// The DHT key under which providers announce themselves.
pub fn market_key() -> kad::RecordKey {
    kad::RecordKey::new(&blake3::hash(b"pactfs/market/providers/v1").as_bytes())
}

type HoldersReply = oneshot::Sender<Result<Vec<PeerId>, NetError>>;
type RootsReply = oneshot::Sender<Result<Vec<Vec<u8>>, NetError>>;
/// Root records kept per lookup (the DHT's replication factor is 20).
const MAX_ROOTS_FOUND: usize = 32;

enum Internal {
    Served { proto: Proto, channel: rr::ResponseChannel<Response>, peer: PeerId, res: Response },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Proto {
    Put,
    Get,
    Has,
    Market,
}

pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    cfg: NetConfig,
    service: Option<Arc<dyn Service>>,
    peers: PeerTable,
    listen: Vec<Multiaddr>,
    /// Requests awaiting their answer. Each protocol's behaviour numbers its
    /// requests on its own, so the protocol is part of the key: a get and a
    /// bid in flight may carry the same number.
    pending: HashMap<(Proto, OutboundRequestId), oneshot::Sender<Result<Response, NetError>>>,
    inflight: HashMap<PeerId, usize>,
    holder_queries: HashMap<kad::QueryId, (HashSet<PeerId>, HoldersReply)>,
    root_queries: HashMap<kad::QueryId, (Vec<Vec<u8>>, RootsReply)>,
    provide_queue: VecDeque<[u8; 32]>,
    provide_inflight: HashSet<kad::QueryId>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    started: Instant,
    last_dht_refresh: Option<Instant>,
}

impl EventLoop {
    pub fn new(swarm: Swarm<Behaviour>, cfg: NetConfig, service: Option<Arc<dyn Service>>) -> EventLoop {
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        EventLoop {
            swarm,
            cfg,
            service,
            peers: PeerTable::default(),
            listen: Vec::new(),
            pending: HashMap::new(),
            inflight: HashMap::new(),
            holder_queries: HashMap::new(),
            root_queries: HashMap::new(),
            provide_queue: VecDeque::new(),
            provide_inflight: HashSet::new(),
            internal_tx,
            internal_rx,
            started: Instant::now(),
            last_dht_refresh: None,
        }
    }

    pub fn listen_and_bootstrap(&mut self) -> Result<(), NetError> {
        let mut failed = Vec::new();
        for addr in self.cfg.listen.clone() {
            if let Err(e) = self.swarm.listen_on(addr.clone()) {
                tracing::warn!(%addr, cause = %e, "cannot listen");
                failed.push(NetError::Listen { addr, cause: e.to_string() });
            }
        }
        // A provider must be reachable; a client works with outbound
        // connections alone (another node on this machine may hold the
        // default port).
        if self.cfg.role.sells() && !failed.is_empty() && failed.len() == self.cfg.listen.len() {
            return Err(failed.remove(0));
        }
        for addr in self.cfg.bootstrap.clone() {
            if let Some(peer) = peer_of_addr(&addr) {
                self.swarm.add_peer_address(peer, addr.clone());
                if let Some(k) = self.swarm.behaviour_mut().kad.as_mut() {
                    k.add_address(&peer, addr.clone());
                }
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::warn!(%addr, cause = %e, "cannot dial bootstrap peer");
            }
        }
        Ok(())
    }

    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(TICK_EARLY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown) | None => break,
                    Some(cmd) => self.on_command(cmd),
                },
                Some(Internal::Served { proto, channel, peer, res }) = self.internal_rx.recv() => {
                    self.finish_inbound(peer);
                    if let Response::Stored(r) = &res
                        && self.cfg.mode == Mode::Hybrid
                    {
                        // A stored chunk is findable through the DHT.
                        self.provide_queue.push_back(r.body.chunk);
                        self.pump_provides();
                    }
                    self.respond(proto, channel, res);
                }
                _ = tick.tick() => {
                    self.on_tick();
                    if self.started.elapsed() > EARLY_FOR && tick.period() == TICK_EARLY {
                        tick = tokio::time::interval(TICK);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                }
            }
        }
        tracing::debug!("network task stopped");
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Request { peer, req, reply } => {
                let proto = match *req {
                    Request::Put(_) => Proto::Put,
                    Request::Get(_) => Proto::Get,
                    Request::Has(_) => Proto::Has,
                    Request::Ask
                    | Request::Bid(_)
                    | Request::Pay(_)
                    | Request::Audit(_)
                    | Request::PutRoot(_)
                    | Request::GetRoot(_) => Proto::Market,
                };
                let id = self.protocol(proto).send_request(&peer, *req);
                self.pending.insert((proto, id), reply);
            }
            Command::Info { reply } => {
                let me = *self.swarm.local_peer_id();
                let listen = self.listen.iter().map(|a| format!("{a}/p2p/{me}")).collect();
                let _ =
                    reply.send(NodeInfo { peer_id: me.to_string(), listen, mode: self.cfg.mode, role: self.cfg.role });
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peers.summaries());
            }
            Command::Providers { reply } => {
                let _ = reply.send(self.peers.providers());
            }
            Command::Asks { reply } => {
                let _ = reply.send(self.peers.asks());
            }
            Command::Listings { reply } => {
                let _ = reply.send(self.peers.listings());
            }
            Command::FindHolders { key, reply } => match self.swarm.behaviour_mut().kad.as_mut() {
                Some(k) => {
                    let id = k.get_providers(kad::RecordKey::new(&key));
                    self.holder_queries.insert(id, (HashSet::new(), reply));
                }
                None => {
                    let _ = reply.send(Err(NetError::NoDht("finding chunk holders")));
                }
            },
            Command::Provide { keys } => {
                if self.cfg.mode == Mode::Hybrid {
                    self.provide_queue.extend(keys);
                    self.pump_provides();
                }
            }
            Command::PutRoot { value } => {
                let Ok(root) = decode_root(&value, None) else { return };
                if let Some(k) = self.swarm.behaviour_mut().kad.as_mut() {
                    let record = kad::Record::new(kad::RecordKey::new(&root_dht_key(&root.body.client)), value);
                    if let Err(e) = k.put_record(record, kad::Quorum::One) {
                        tracing::warn!(cause = %e, "cannot publish the root in the DHT");
                    }
                }
            }
            Command::FindRoots { key, reply } => match self.swarm.behaviour_mut().kad.as_mut() {
                Some(k) => {
                    let id = k.get_record(kad::RecordKey::new(&key));
                    self.root_queries.insert(id, (Vec::new(), reply));
                }
                None => {
                    let _ = reply.send(Err(NetError::NoDht("finding a root")));
                }
            },
            Command::Shutdown => {}
        }
    }

    fn pump_provides(&mut self) {
        while self.provide_inflight.len() < MAX_PROVIDE_QUERIES {
            let Some(key) = self.provide_queue.pop_front() else { break };
            let Some(k) = self.swarm.behaviour_mut().kad.as_mut() else { break };
            match k.start_providing(kad::RecordKey::new(&key)) {
                Ok(id) => {
                    self.provide_inflight.insert(id);
                }
                Err(e) => tracing::warn!(cause = %e, "cannot announce a chunk in the DHT"),
            }
        }
    }

    fn on_tick(&mut self) {
        // Forget peers that are neither connected nor announced lately, so
        // a flood of announcements cannot grow the table without bound.
        self.peers.peers.retain(|_, p| p.connections > 0 || p.announced.is_some_and(|t| t.elapsed() < FORGET_AFTER));
        // Reconnect to bootstrap peers we lost (a restarted peer, say).
        for addr in self.cfg.bootstrap.clone() {
            if let Some(peer) = peer_of_addr(&addr)
                && !self.swarm.is_connected(&peer)
            {
                let _ = self.swarm.dial(addr);
            }
        }
        let refresh = self.last_dht_refresh.is_none_or(|t| t.elapsed() > DHT_REFRESH);
        let connected = self.peers.connected().next().is_some();
        let sells = self.cfg.role.sells();
        if sells {
            self.publish_announce();
        }
        if let Some(k) = self.swarm.behaviour_mut().kad.as_mut() {
            if refresh && connected {
                let _ = k.bootstrap();
                if sells && let Err(e) = k.start_providing(market_key()) {
                    tracing::warn!(cause = %e, "cannot announce this provider in the DHT");
                }
                self.last_dht_refresh = Some(Instant::now());
            }
            if connected {
                k.get_providers(market_key());
            }
        }
    }

    fn publish_announce(&mut self) {
        let mut msg = Announce::new(self.cfg.role, &self.listen, crate::promise::unix_now());
        let addrs: Vec<Multiaddr> = self.listen.iter().filter(|a| is_dialable(a)).cloned().collect();
        if let Some(s) = &self.service {
            msg.ask = s.ask(&addrs);
            msg.hot = s.hot();
            msg.hot.truncate(announce::MAX_LISTED);
            // Hybrid mode offers through DHT provider records instead.
            if self.cfg.mode == Mode::Market {
                msg.offers = s.offers();
                msg.offers.truncate(announce::MAX_LISTED);
            }
        }
        let topic = gossipsub::IdentTopic::new(announce::TOPIC);
        match self.swarm.behaviour_mut().gossip.publish(topic, msg.encode()) {
            Ok(_) | Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
            Err(gossipsub::PublishError::Duplicate) => {}
            Err(e) => tracing::debug!(cause = %e, "announcement not published"),
        }
    }

    fn learn_provider(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, role: Role) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        for a in &addrs {
            self.swarm.add_peer_address(peer, a.clone());
        }
        self.peers.add_addrs(peer, addrs);
        let entry = self.peers.entry(peer);
        if entry.role.is_none_or(|r| r == Role::Unknown) {
            entry.role = Some(role);
        }
        entry.announced = Some(Instant::now());
        let dials = self.peers.connected().count();
        if !self.swarm.is_connected(&peer) && dials < MAX_AUTO_DIALS {
            let _ = self.swarm.dial(peer);
        }
    }

    fn start_inbound(&mut self, peer: PeerId) -> bool {
        let n = self.inflight.entry(peer).or_default();
        if *n >= MAX_INFLIGHT_PER_PEER {
            return false;
        }
        *n += 1;
        true
    }

    fn finish_inbound(&mut self, peer: PeerId) {
        if let Some(n) = self.inflight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inflight.remove(&peer);
            }
        }
    }

    /// The request-response behaviour of one chunk protocol.
    fn protocol(&mut self, proto: Proto) -> &mut rr::Behaviour<ChunkCodec> {
        let b = self.swarm.behaviour_mut();
        match proto {
            Proto::Put => &mut b.put,
            Proto::Get => &mut b.get,
            Proto::Has => &mut b.has,
            Proto::Market => &mut b.market,
        }
    }

    fn respond(&mut self, proto: Proto, channel: rr::ResponseChannel<Response>, res: Response) {
        if self.protocol(proto).send_response(channel, res).is_err() {
            tracing::debug!("peer went away before its answer");
        }
    }

    fn on_request(&mut self, proto: Proto, peer: PeerId, req: Request, channel: rr::ResponseChannel<Response>) {
        let (Some(service), Some(from)) = (self.service.clone(), node_key_of(&peer)) else {
            let why = if self.service.is_none() { Refusal::Unsupported } else { Refusal::Unauthorized };
            self.respond(proto, channel, Response::refused(why, "this node does not serve chunks to that peer"));
            return;
        };
        if !self.start_inbound(peer) {
            tracing::debug!(%peer, "too many requests in flight: refusing as busy");
            self.respond(proto, channel, Response::refused(Refusal::Busy, "too many requests in flight"));
            return;
        }
        let tx = self.internal_tx.clone();
        tokio::task::spawn_blocking(move || {
            let res = service.serve(&from, req);
            let _ = tx.send(Internal::Served { proto, channel, peer, res });
        });
    }

    fn on_rr(&mut self, proto: Proto, ev: rr::Event<Request, Response>) {
        match ev {
            rr::Event::Message { peer, message: rr::Message::Request { request, channel, .. }, .. } => {
                self.on_request(proto, peer, request, channel)
            }
            rr::Event::Message { message: rr::Message::Response { request_id, response }, .. } => {
                if let Some(tx) = self.pending.remove(&(proto, request_id)) {
                    let _ = tx.send(Ok(response));
                }
            }
            rr::Event::OutboundFailure { peer, request_id, error, .. } => {
                if let Some(tx) = self.pending.remove(&(proto, request_id)) {
                    let _ = tx.send(Err(NetError::Request { peer, cause: error.to_string() }));
                }
            }
            rr::Event::InboundFailure { peer, error, .. } => {
                // A garbled, oversized or truncated message: refused, logged,
                // and the connection goes on serving the peer's other streams.
                tracing::warn!(%peer, protocol = ?proto, cause = %error, "refused an inbound message");
            }
            rr::Event::ResponseSent { .. } => {}
        }
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if !self.listen.contains(&address) {
                    self.listen.push(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => self.listen.retain(|a| a != &address),
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                let p = self.peers.entry(peer_id);
                p.connections += 1;
                if endpoint.is_dialer() {
                    self.peers.add_addrs(peer_id, [endpoint.get_remote_address().clone()]);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established, cause, .. } => {
                tracing::debug!(peer = %peer_id, left = num_established, cause = ?cause, "connection closed");
                self.peers.entry(peer_id).connections = num_established as usize;
            }
            SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
                tracing::debug!(from = %send_back_addr, cause = %error, "refused an incoming connection");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, cause = %error, "dial failed");
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour(ev),
            _ => {}
        }
    }

    fn on_behaviour(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Put(e) => self.on_rr(Proto::Put, e),
            BehaviourEvent::Get(e) => self.on_rr(Proto::Get, e),
            BehaviourEvent::Has(e) => self.on_rr(Proto::Has, e),
            BehaviourEvent::Market(e) => self.on_rr(Proto::Market, e),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let (mode, role) = peers::parse_agent(&info.agent_version);
                let speaks_kad = info.protocols.contains(&kad::PROTOCOL_NAME);
                let addrs: Vec<Multiaddr> = info.listen_addrs.into_iter().filter(is_dialable).collect();
                if let Some(k) = self.swarm.behaviour_mut().kad.as_mut()
                    && speaks_kad
                {
                    for a in &addrs {
                        k.add_address(&peer_id, a.clone());
                    }
                }
                let p = self.peers.entry(peer_id);
                p.mode = Some(mode);
                p.role = Some(role);
                if role.sells() {
                    self.learn_provider(peer_id, addrs, role);
                } else {
                    self.peers.add_addrs(peer_id, addrs);
                }
            }
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Stream(()) => {}
            BehaviourEvent::Ping(ping::Event { peer, result: Ok(rtt), .. }) => self.peers.entry(peer).rtt = Some(rtt),
            BehaviourEvent::Ping(_) => {}
            BehaviourEvent::Gossip(gossipsub::Event::Message { message, .. }) => {
                let Some(author) = message.source else { return };
                match Announce::decode(&message.data) {
                    Ok(a) if a.role().sells() => {
                        let addrs = a.multiaddrs().into_iter().filter(is_dialable).collect();
                        self.learn_provider(author, addrs, a.role());
                        // Kept as heard; the market checks its signature
                        // and that it names its author.
                        let entry = self.peers.entry(author);
                        if let Some(ask) = a.ask {
                            entry.ask = Some(ask);
                        }
                        (entry.hot, entry.offers) = (a.hot, a.offers);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(peer = %author, cause = %e, "ignored a garbled announcement"),
                }
            }
            BehaviourEvent::Gossip(_) => {}
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm.add_peer_address(peer, addr);
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(peer);
                    }
                }
            }
            BehaviourEvent::Mdns(_) => {}
            BehaviourEvent::Kad(ev) => self.on_kad(ev),
        }
    }

    fn on_kad(&mut self, ev: kad::Event) {
        if let kad::Event::InboundRequest { request } = &ev {
            self.on_kad_inbound(request.clone());
            return;
        }
        let kad::Event::OutboundQueryProgressed { id, result, step, .. } = ev else { return };
        match result {
            kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(r))) => {
                if let Some((found, _)) = self.root_queries.get_mut(&id)
                    && found.len() < MAX_ROOTS_FOUND
                {
                    found.push(r.record.value);
                }
            }
            kad::QueryResult::PutRecord(Err(e)) => {
                tracing::debug!(cause = ?e, "the root reached fewer DHT peers than asked");
            }
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders { key, providers })) => {
                if let Some((found, _)) = self.holder_queries.get_mut(&id) {
                    found.extend(providers);
                } else if key == market_key() {
                    for p in providers {
                        if p == *self.swarm.local_peer_id() {
                            continue;
                        }
                        let entry = self.peers.entry(p);
                        entry.announced = Some(Instant::now());
                        if entry.role.is_none() {
                            entry.role = Some(Role::Provider);
                        }
                        if !self.swarm.is_connected(&p) {
                            let _ = self.swarm.dial(p);
                        }
                    }
                }
            }
            kad::QueryResult::GetProviders(_) => {}
            kad::QueryResult::StartProviding(r) if self.provide_inflight.remove(&id) => {
                if let Err(e) = r {
                    tracing::debug!(cause = ?e, "chunk announcement did not reach enough peers");
                }
                self.pump_provides();
            }
            kad::QueryResult::Bootstrap(Ok(r)) if r.num_remaining == 0 => {
                tracing::debug!(peer = %r.peer, "DHT bootstrap done");
            }
            _ => {}
        }
        if step.last
            && let Some((found, reply)) = self.root_queries.remove(&id)
        {
            let _ = reply.send(Ok(found));
        }
        if step.last
            && let Some((found, reply)) = self.holder_queries.remove(&id)
        {
            let mut v: Vec<PeerId> = found.into_iter().collect();
            v.sort();
            let _ = reply.send(Ok(v));
        }
    }
}

impl EventLoop {
    /// With record filtering on, inbound records and provider records are
    /// stored here: provider records as they come, records only when they
    /// are a root that verifies, under its client's key, newer than the one
    /// held (so nobody can replace a client's root with garbage or an older one).
    fn on_kad_inbound(&mut self, request: kad::InboundRequest) {
        let Some(k) = self.swarm.behaviour_mut().kad.as_mut() else { return };
        match request {
            kad::InboundRequest::AddProvider { record: Some(p) } => {
                if let Err(e) = k.store_mut().add_provider(p) {
                    tracing::debug!(cause = %e, "provider record not stored");
                }
            }
            kad::InboundRequest::PutRecord { record: Some(r), source, .. } => {
                let root = match decode_root(&r.value, None) {
                    Ok(root) if r.key.as_ref() == root_dht_key(&root.body.client).as_slice() => root,
                    Ok(_) => return tracing::debug!(%source, "a root under another key refused"),
                    Err(e) => return tracing::debug!(%source, cause = %e, "a DHT record that is no root refused"),
                };
                let newer = k
                    .store_mut()
                    .get(&r.key)
                    .is_none_or(|old| decode_root(&old.value, None).map_or(true, |o| o.body.seq < root.body.seq));
                if newer && let Err(e) = k.store_mut().put(r) {
                    tracing::debug!(cause = %e, "root record not stored");
                }
            }
            _ => {}
        }
    }
}

/// Addresses worth dialling: not the unspecified address.
fn is_dialable(a: &Multiaddr) -> bool {
    !a.iter().any(|p| {
        matches!(p, libp2p::multiaddr::Protocol::Ip4(ip) if ip.is_unspecified())
            || matches!(p, libp2p::multiaddr::Protocol::Ip6(ip) if ip.is_unspecified())
    })
}
