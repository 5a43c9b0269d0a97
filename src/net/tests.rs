//! Real swarms on loopback, in one process: the chunk protocols end to end,
//! and a peer that speaks garbage on them.

use super::*;
use crate::chunk::ChunkId;
use crate::promise::{AuditTerms, Cheque, MILLI, NodeKey, PromiseKind, Signer, Terms, unix_now};
use crate::provider::{Faults, Provider, ProviderTerms};
use crate::store::Store;
use proto::{GetChunk, HasChunks, PutChunk};
use std::time::Duration;

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

pub(super) async fn node(
    seed: u8,
    role: Role,
    service: Option<Arc<dyn Service>>,
    bootstrap: Vec<Multiaddr>,
) -> NetHandle {
    let cfg = NetConfig {
        identity_seed: [seed; 32],
        mode: Mode::Market,
        role,
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap(), "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
        bootstrap,
        mdns: false,
    };
    start(cfg, service).await.unwrap()
}

pub(super) async fn listen_addrs(h: &NetHandle) -> Vec<Multiaddr> {
    for _ in 0..500 {
        let info = h.info().await.unwrap();
        if info.listen.len() >= 2 {
            return info.listen.iter().map(|a| a.parse().unwrap()).collect();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("node never reported its listen addresses");
}

use std::sync::Arc;

fn provider(dir: &std::path::Path) -> Arc<Provider> {
    let terms = ProviderTerms {
        capacity: 64 << 20,
        price_per_gib_month: MILLI,
        price_per_gib_retrieval: MILLI,
        min_duration: 60,
        max_duration: 86400,
        voluntary_capacity: 0,
    };
    let store = Arc::new(Store::open(dir, 0, 0).unwrap());
    Arc::new(Provider::new(store, Signer::from_seed(&[1; 32]), terms, Faults::default(), None).unwrap())
}

/// Asks the provider for its ask, bids at its price for `ids` and returns
/// the promise id.
async fn buy(c: &NetHandle, p: &NetHandle, client: &Signer, ids: &[([u8; 32], u64)], nonce: u64) -> [u8; 32] {
    let ask = match c.request(p.local_peer_id(), Request::Ask).await.unwrap() {
        Response::Ask(a) => a,
        other => panic!("expected an ask, got {other:?}"),
    };
    ask.check(unix_now()).unwrap();
    assert_eq!(ask.body.provider, p.node_key());
    let now = unix_now();
    let terms = Terms {
        kind: PromiseKind::Storage,
        client: client.node_key(),
        provider: p.node_key(),
        chunks: ids.iter().map(|(id, _)| *id).collect(),
        bytes: ids.iter().map(|(_, l)| *l).sum(),
        price: ask.body.price_per_gib_month,
        start: now,
        expiry: now + 3600,
        audit: AuditTerms { interval: 60, max_range: 4096 },
        nonce,
        renews: None,
    };
    match c.request(p.local_peer_id(), Request::Bid(client.sign(terms.clone()))).await.unwrap() {
        Response::Promise(pr) => {
            pr.verify().unwrap();
            assert_eq!(pr.terms, terms);
            pr.id()
        }
        other => panic!("expected a promise, got {other:?}"),
    }
}

#[test]
fn chunk_protocols_over_tcp_and_quic() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let p = node(1, Role::Provider, Some(provider(dir.path())), vec![]).await;
        let addrs = listen_addrs(&p).await;
        for (i, addr) in addrs.iter().enumerate() {
            // A fresh client per transport, so each request really crosses it.
            let c = node(10 + i as u8, Role::Client, None, vec![addr.clone()]).await;
            let client = Signer::from_seed(&[10 + i as u8; 32]);
            let body = crate::test_data::data(1 << 20, i as u64);
            let id = ChunkId::of(&body).0;
            let promise = buy(&c, &p, &client, &[(id, body.len() as u64)], i as u64).await;
            let put = Request::Put(PutChunk { promise, id, body: body.clone() });
            match c.request(p.local_peer_id(), put).await.unwrap() {
                Response::Stored(r) => r.check(&p.node_key(), &c.node_key(), &promise, &id, body.len() as u32).unwrap(),
                other => panic!("over {addr}: expected a receipt, got {other:?}"),
            }
            let get = Request::Get(GetChunk { promise, id, range: None });
            let got = c.request(p.local_peer_id(), get.clone()).await.unwrap();
            assert_eq!(got, Response::Chunk(body), "over {addr}");
            let has = c.request(p.local_peer_id(), Request::Has(HasChunks { ids: vec![id, [0; 32]] })).await.unwrap();
            assert_eq!(has, Response::Has(vec![true, false]));
            // A client does not even offer the chunk protocols.
            let to_client = p.request(c.local_peer_id(), get).await;
            assert!(
                matches!(&to_client, Err(NetError::Request { cause, .. }) if cause.contains("protocols")),
                "{to_client:?}"
            );
            let peers = c.peers().await.unwrap();
            assert!(peers.iter().any(|s| s.peer_id == p.local_peer_id().to_string() && s.role == Role::Provider));
            // A cheque crosses the market protocol and comes back acknowledged.
            let cheque = client.sign(Cheque {
                client: client.node_key(),
                provider: p.node_key(),
                total: 7,
                seq: 1,
                at: unix_now(),
            });
            match c.request(p.local_peer_id(), Request::Pay(cheque)).await.unwrap() {
                Response::Paid(ack) => {
                    ack.verify_by(&p.node_key()).unwrap();
                    assert_eq!(ack.body.total, 7);
                }
                other => panic!("expected an acknowledgement, got {other:?}"),
            }
        }
    });
}

/// A request-response codec that writes whatever bytes it is given: a
/// peer that speaks garbage on the chunk protocols.
#[derive(Clone, Default)]
struct RawCodec;

impl libp2p::request_response::Codec for RawCodec {
    type Protocol = libp2p::StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;
    async fn read_request<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &Self::Protocol,
        _: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::other("raw peer serves nothing"))
    }
    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        use futures::AsyncReadExt;
        let mut out = Vec::new();
        io.take(1 << 20).read_to_end(&mut out).await?;
        Ok(out)
    }
    async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()> {
        use futures::AsyncWriteExt;
        io.write_all(&req).await?;
        io.close().await
    }
    async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &Self::Protocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn garbled_and_oversized_messages_are_refused_and_serving_goes_on() {
    use futures::StreamExt;
    use libp2p::request_response as rr;
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let p = node(1, Role::Provider, Some(provider(dir.path())), vec![]).await;
        let addr = listen_addrs(&p).await.into_iter().find(|a| a.to_string().contains("/tcp/")).unwrap();
        let key = libp2p::identity::Keypair::ed25519_from_bytes([9; 32]).unwrap();
        let mut raw = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
            .unwrap()
            .with_behaviour(|_| {
                rr::Behaviour::with_codec(
                    RawCodec,
                    [(proto::PUT, rr::ProtocolSupport::Outbound)],
                    rr::Config::default(),
                )
            })
            .unwrap()
            .build();
        raw.dial(addr.clone()).unwrap();
        let mut huge = crate::codec::frame::header(proto::WIRE_V1, 1, u32::MAX as usize).to_vec();
        huge.extend_from_slice(&[0; 64]);
        let mut wrong_version = crate::codec::frame::header(9, 1, 10).to_vec();
        wrong_version.extend_from_slice(&[0; 10]);
        let mut truncated = crate::codec::frame::header(proto::WIRE_V1, 1, 1000).to_vec();
        truncated.extend_from_slice(&[1; 10]);
        let mut garbled_body = crate::codec::frame::header(proto::WIRE_V1, 1, 40).to_vec();
        garbled_body.extend_from_slice(&[0xff; 40]);
        let garbage: Vec<Vec<u8>> = vec![huge, wrong_version, truncated, garbled_body, b"\x00\x01garbage".to_vec()];
        for g in garbage {
            raw.behaviour_mut().send_request(&p.local_peer_id(), g);
            // Each bad message ends its own stream, with no answer.
            loop {
                match raw.select_next_some().await {
                    libp2p::swarm::SwarmEvent::Behaviour(rr::Event::OutboundFailure { .. }) => break,
                    libp2p::swarm::SwarmEvent::Behaviour(rr::Event::Message { message, .. }) => {
                        if let rr::Message::Response { response, .. } = message {
                            assert!(response.is_empty(), "the provider answered garbage with {} bytes", response.len());
                        }
                        break;
                    }
                    _ => {}
                }
            }
        }
        // The provider is still up and serving a well-behaved client.
        let c = node(20, Role::Client, None, vec![addr]).await;
        let client = Signer::from_seed(&[20; 32]);
        let body = crate::test_data::data(5000, 3);
        let id = ChunkId::of(&body).0;
        let promise = buy(&c, &p, &client, &[(id, body.len() as u64)], 99).await;
        let r = c.request(p.local_peer_id(), Request::Put(PutChunk { promise, id, body })).await.unwrap();
        assert!(matches!(r, Response::Stored(_)), "after garbage the provider answered {r:?}");
    });
}

/// A service that holds every request until released: lets a test fill a
/// provider's per-peer request budget.
struct Stalled {
    gate: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Service for Stalled {
    fn serve(&self, _: &NodeKey, _: Request) -> Response {
        let mut open = self.gate.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
        Response::Has(vec![])
    }
    fn ask(&self, _: &[Multiaddr]) -> Option<crate::promise::Signed<crate::promise::Ask>> {
        None
    }
}

#[test]
fn requests_per_peer_are_bounded() {
    let stalled = Arc::new(Stalled { gate: std::sync::Mutex::new(false), cv: std::sync::Condvar::new() });
    runtime().block_on(async {
        let p = node(1, Role::Provider, Some(stalled.clone()), vec![]).await;
        let addr = listen_addrs(&p).await.remove(0);
        let c = node(2, Role::Client, None, vec![addr]).await;
        let n = event_loop::MAX_INFLIGHT_PER_PEER + 8;
        let mut asks: futures::stream::FuturesUnordered<_> = (0..n)
            .map(|_| {
                let c = c.clone();
                let peer = p.local_peer_id();
                tokio::spawn(async move { c.request(peer, Request::Has(HasChunks { ids: vec![] })).await })
            })
            .collect();
        // While the service holds the admitted requests, only refusals can
        // come back: the first 8 answers are the requests past the budget.
        use futures::StreamExt;
        let (mut busy, mut served) = (0, 0);
        for _ in 0..8 {
            match asks.next().await.unwrap().unwrap().unwrap() {
                Response::Refused(r) if r.why == Refusal::Busy => busy += 1,
                other => panic!("past the budget, expected busy, got {other:?}"),
            }
        }
        *stalled.gate.lock().unwrap() = true;
        stalled.cv.notify_all();
        while let Some(a) = asks.next().await {
            match a.unwrap().unwrap() {
                Response::Has(_) => served += 1,
                other => panic!("within the budget, expected an answer, got {other:?}"),
            }
        }
        assert_eq!(served, event_loop::MAX_INFLIGHT_PER_PEER, "served {served}, busy {busy}");
        assert_eq!(busy, 8);
    });
}
