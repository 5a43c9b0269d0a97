//! The bulk path between real swarms on loopback: pipelined answers in
//! order, its bounds, and a peer that writes garbage on a bulk stream.

use super::tests::{listen_addrs, node, runtime};
use super::*;
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use proto::GetChunk;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Answers a get with a body derived from the id, after a short pause, and
/// counts how many requests it serves at once.
#[derive(Default)]
struct Echo {
    now: AtomicUsize,
    most: AtomicUsize,
    served: AtomicUsize,
}

fn body_of(id: &[u8; 32]) -> Vec<u8> {
    id.repeat(1000 + id[0] as usize)
}

impl Service for Echo {
    fn serve(&self, _: &NodeKey, req: Request) -> Response {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.served.fetch_add(1, Ordering::SeqCst);
        match req {
            Request::Get(g) => Response::Chunk(body_of(&g.id)),
            _ => Response::Has(vec![]),
        }
    }
    fn ask(&self, _: &[Multiaddr]) -> Option<crate::promise::Signed<crate::promise::Ask>> {
        None
    }
}

fn get(n: u8) -> Request {
    Request::Get(GetChunk { promise: [0; 32], id: [n; 32], range: None })
}

/// Sends gets 0..count at once; each must come back with its own body.
async fn expect_own_answers(c: &NetHandle, peer: libp2p::PeerId, count: u8, what: &str) {
    let gets: Vec<_> = (0..count)
        .map(|n| {
            let c = c.clone();
            tokio::spawn(async move { (n, c.request(peer, get(n)).await) })
        })
        .collect();
    for g in gets {
        let (n, r) = g.await.unwrap();
        match r.unwrap() {
            Response::Chunk(b) => assert!(b == body_of(&[n; 32]), "{what}get {n} came back with another answer"),
            other => panic!("{what}get {n}: {other:?}"),
        }
    }
}

#[test]
fn bulk_answers_come_back_in_order_within_the_bounds() {
    let echo = Arc::new(Echo::default());
    runtime().block_on(async {
        let p = node(1, Role::Provider, Some(echo.clone()), vec![]).await;
        for (i, addr) in listen_addrs(&p).await.into_iter().enumerate() {
            let c = node(30 + i as u8, Role::Client, None, vec![addr]).await;
            expect_own_answers(&c, p.local_peer_id(), 120, "").await;
            c.shutdown();
        }
    });
    let most = echo.most.load(Ordering::SeqCst);
    assert!(most > 1, "requests were served one at a time: not pipelined");
    assert!(most <= bulk::MAX_STREAMS * bulk::DEPTH, "{most} requests of one peer served at once");
    assert_eq!(echo.served.load(Ordering::SeqCst), 240);
}

/// A bare libp2p peer that opens bulk streams by hand.
async fn raw_peer(addr: Multiaddr) -> (libp2p_stream::Control, tokio::task::JoinHandle<()>) {
    let key = libp2p::identity::Keypair::ed25519_from_bytes([9; 32]).unwrap();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        // Between two exchanges no stream is open; the default (no idle
        // time) would close the connection under the next one.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let control = swarm.behaviour().new_control();
    swarm.dial(addr).unwrap();
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (control, driver)
}

/// Writes `bytes` on a fresh bulk stream and returns what comes back
/// before the provider ends the stream.
async fn exchange(control: &mut libp2p_stream::Control, peer: libp2p::PeerId, bytes: &[u8]) -> Vec<u8> {
    let mut s = control.open_stream(peer, bulk::BULK).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s.close().await.unwrap();
    let mut back = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut back)).await;
    assert!(read.is_ok(), "the provider neither answered nor closed the stream");
    back
}

#[test]
fn garbage_on_a_bulk_stream_ends_that_stream_and_serving_goes_on() {
    use crate::codec::frame::header;
    let echo = Arc::new(Echo::default());
    runtime().block_on(async {
        let p = node(1, Role::Provider, Some(echo.clone()), vec![]).await;
        let addr = listen_addrs(&p).await.into_iter().find(|a| a.to_string().contains("/tcp/")).unwrap();
        let (mut control, driver) = raw_peer(addr).await;
        let peer = p.local_peer_id();
        let frame = |v: u8, kind: u8, len: usize, body: &[u8]| [&header(v, kind, len)[..], body].concat();
        let (ask_kind, ask) = Request::Ask.encode();
        let garbage = [
            frame(proto::WIRE_V1, 1, u32::MAX as usize, &[0; 64]),
            frame(9, 1, 10, &[0; 10]),
            frame(proto::WIRE_V1, 1, 40, &[0xff; 40]),
            frame(proto::WIRE_V1, 2, 100, &[1; 10]),
            frame(proto::WIRE_V1, ask_kind, ask.len(), &ask),
            b"\x00\x01garbage".to_vec(),
        ];
        for g in &garbage {
            let back = exchange(&mut control, peer, g).await;
            assert!(back.is_empty(), "the provider answered garbage with {} bytes", back.len());
        }
        // Streams past the bound end the oldest; the newest serves. Each
        // stream is opened only after the one before it has answered: the
        // provider's acceptor holds one unaccepted stream per connection
        // and drops a second one that arrives before it is taken.
        let get_frame = |n: u8| {
            let (kind, body) = get(n).encode();
            frame(proto::WIRE_V1, kind, body.len(), &body)
        };
        let answer_frame = |n: u8| {
            let (kind, body) = Response::Chunk(body_of(&[n; 32])).encode();
            frame(proto::WIRE_V1, kind, body.len(), &body)
        };
        let mut open = Vec::new();
        for n in 0..bulk::MAX_STREAMS as u8 {
            let mut s = control.open_stream(peer, bulk::BULK).await.unwrap();
            s.write_all(&get_frame(n)).await.unwrap();
            let mut back = vec![0; answer_frame(n).len()];
            s.read_exact(&mut back).await.unwrap();
            assert!(back == answer_frame(n), "get {n} on a fresh stream after garbage");
            open.push(s);
        }
        let back = exchange(&mut control, peer, &get_frame(7)).await;
        assert!(back == answer_frame(7), "a get on a stream past the bound");
        let mut oldest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(20), open[0].read_to_end(&mut oldest)).await;
        assert!(closed.is_ok(), "the oldest stream past the bound stayed open");
        for (n, s) in open.iter_mut().enumerate().skip(1) {
            s.write_all(&get_frame(n as u8)).await.unwrap();
            let mut back = vec![0; answer_frame(n as u8).len()];
            s.read_exact(&mut back).await.unwrap();
            assert!(back == answer_frame(n as u8), "stream {n} still serves after the oldest ended");
        }
        driver.abort();
    });
    let well_formed = 1 + bulk::MAX_STREAMS + (bulk::MAX_STREAMS - 1);
    assert_eq!(echo.served.load(Ordering::SeqCst), well_formed, "only the well-formed gets reached the service");
}

#[test]
fn a_request_abandoned_while_it_is_written_leaves_later_answers_right() {
    let echo = Arc::new(Echo::default());
    runtime().block_on(async {
        let p = node(1, Role::Provider, Some(echo.clone()), vec![]).await;
        let addr = listen_addrs(&p).await.remove(0);
        let c = node(40, Role::Client, None, vec![addr]).await;
        let peer = p.local_peer_id();
        for round in 0..6u64 {
            // A 16 MiB put given up after a few milliseconds: usually while
            // its frame is still being written.
            let body = vec![7u8; 16 << 20];
            let put = Request::Put(proto::PutChunk { promise: [0; 32], id: [1; 32], body });
            let _ = tokio::time::timeout(Duration::from_millis(round), c.request(peer, put)).await;
            expect_own_answers(&c, peer, 12, &format!("round {round}: ")).await;
        }
    });
}
