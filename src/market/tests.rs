//! The agent against real providers: real swarms on loopback in one
//! process, real stores, real signatures. Short promise terms make
//! payments, renewals and expiry happen within seconds.

use super::*;
use crate::net::{self, NetConfig, Role, Service};
use crate::promise::MILLI;
use crate::provider::{Faults, Provider, ProviderTerms};
use libp2p::Multiaddr;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn start_node(seed: u8, role: Role, service: Option<Arc<dyn Service>>, boot: Vec<Multiaddr>) -> NetHandle {
    let cfg = NetConfig {
        identity_seed: [seed; 32],
        mode: Mode::Market,
        role,
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: boot,
        mdns: false,
    };
    net::start(cfg, service).await.unwrap()
}

async fn addr_of(h: &NetHandle) -> Multiaddr {
    for _ in 0..500 {
        if let Some(a) = h.info().await.unwrap().listen.first() {
            return a.parse().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no listen address");
}

fn provider(dir: &std::path::Path, seed: u8, price: u64) -> Arc<Provider> {
    provider_on(Arc::new(Store::open(dir, 0, 0).unwrap()), seed, price)
}

fn provider_on(store: Arc<Store>, seed: u8, price: u64) -> Arc<Provider> {
    let terms = ProviderTerms {
        capacity: 64 << 20,
        price_per_gib_month: price,
        price_per_gib_retrieval: MILLI,
        min_duration: 1,
        max_duration: 86400,
        voluntary_capacity: 0,
    };
    Arc::new(Provider::new(store, Signer::from_seed(&[seed; 32]), terms, Faults::default(), None).unwrap())
}

fn config() -> AgentConfig {
    AgentConfig {
        replication: 2,
        credits_per_month: 1000 * MILLI,
        max_price_per_gib_month: 10 * MILLI,
        max_retrieval_price: MILLI,
        promise_duration: 8,
        renew_window: 5,
        audit_interval: 3600,
        min_reputation: 0.5,
        explore_share: 0.1,
        payment_interval: 1,
        repair_grace: 3600,
    }
}

/// Polls `f` every 100 ms until it holds; fails with `what` after a
/// generous bound (a failure, not a speed target).
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting: {what}");
}

#[test]
fn buys_pays_renews_and_lets_unneeded_promises_lapse() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    runtime().block_on(async {
        // Three providers: the dearest should get nothing while two cheaper
        // ones have room (replication 2).
        let prices = [MILLI, 2 * MILLI, 9 * MILLI];
        let mut providers = Vec::new();
        let mut addrs = Vec::new();
        for (i, price) in prices.iter().enumerate() {
            let p = provider(dirs[i].path(), 1 + i as u8, *price);
            let h = start_node(1 + i as u8, Role::Provider, Some(p.clone() as Arc<dyn Service>), vec![]).await;
            addrs.push(addr_of(&h).await);
            providers.push((p, h));
        }
        let store = Arc::new(Store::open(dirs[3].path(), 0, 0).unwrap());
        let mut ids = Vec::new();
        let mut txn = store.begin();
        for i in 0..6 {
            let body = crate::test_data::data(200_000 + i * 1000, i as u64);
            let id = ChunkId::of(&body);
            txn.add_chunk_at(&id, &body, None).unwrap();
            ids.push(id);
        }
        txn.commit(true).unwrap();
        let client = start_node(9, Role::Client, None, addrs).await;
        let agent = Arc::new(
            Agent::new(store.clone(), client.clone(), Signer::from_seed(&[9; 32]), Mode::Market, config(), None)
                .unwrap(),
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(agent.clone().run(stop_rx));

        until("every chunk placed", || store.pending_ids(None, 100).unwrap().is_empty()).await;
        let cheap: Vec<[u8; 32]> = providers[..2].iter().map(|(p, _)| p_key(p)).collect();
        for id in &ids {
            let mut holders = store.replica_holders(id).unwrap();
            holders.sort();
            let mut want = cheap.clone();
            want.sort();
            assert_eq!(holders, want, "replicas go to the two cheapest, distinct providers");
        }
        assert_eq!(providers[2].0.stats().promises, 0, "the dearest provider sold nothing");

        // Payments: each cheap provider is paid by a cumulative cheque.
        until("both providers paid", || {
            cheap.iter().all(|k| held::last_paid(&store, &NodeKey(*k)).unwrap().is_some_and(|c| c.body.total > 0))
        })
        .await;
        assert!(agent.status().spent_this_month > 0);

        // Renewals: inside the window the promises are renewed, not lost.
        until("a promise renewed", || agent.promises().iter().any(|p| p.state == "renewed")).await;
        let s = store.chunk(&ids[0]).unwrap().unwrap();
        assert!(!s.placement.pending, "a renewal keeps the chunk placed");

        // Release every chunk: the promises lapse instead of renewing, and
        // at expiry the providers drop what no live promise covers.
        let mut txn = store.begin();
        for id in &ids {
            txn.ref_chunk(id, -1);
        }
        txn.commit(true).unwrap();
        until("every promise expired", || {
            let v = agent.promises();
            !v.is_empty() && v.iter().all(|p| p.state == "expired" || p.state == "renewed")
        })
        .await;
        let later = crate::promise::unix_now() + 60;
        for (p, _) in &providers[..2] {
            p.sweep(later);
            assert_eq!(p.stats().chunks, 0, "an expired promise's chunks are freed");
            assert_eq!(p.stats().committed, 0);
        }
        stop_tx.send(true).unwrap();
        let _ = task.await;
    });
}

#[test]
fn a_budget_too_small_keeps_chunks_pending_until_it_is_raised() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    runtime().block_on(async {
        let (_handles, addrs) = start_providers(&dirs[..2], &[MILLI, MILLI]).await;
        let (store, id, body) = store_with_chunk(dirs[2].path(), 300_000, 7);
        let client = start_node(9, Role::Client, None, addrs).await;
        let mut cfg = config();
        cfg.credits_per_month = 0;
        let agent = Arc::new(
            Agent::new(store.clone(), client, Signer::from_seed(&[9; 32]), Mode::Market, cfg.clone(), None).unwrap(),
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(agent.clone().run(stop_rx));
        until("the agent says the budget blocks it", || {
            agent.status().blocked.is_some_and(|b| b.starts_with("budget"))
        })
        .await;
        assert_eq!(store.pending_ids(None, 10).unwrap(), vec![id], "pending, not lost");
        assert!(agent.promises().is_empty());
        cfg.credits_per_month = 1000 * MILLI;
        agent.set_config(cfg);
        until("placed after the budget was raised", || store.pending_ids(None, 10).unwrap().is_empty()).await;
        assert_eq!(store.chunk_body(&id).unwrap(), body);
        stop_tx.send(true).unwrap();
        let _ = task.await;
    });
}

#[test]
fn too_few_usable_providers_says_which_exist_but_are_skipped() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    runtime().block_on(async {
        // Replication 2, one provider within the price limit and one above it.
        let (_handles, addrs) = start_providers(&dirs[..2], &[MILLI, 20 * MILLI]).await;
        let (store, id, _) = store_with_chunk(dirs[2].path(), 300_000, 8);
        let client = start_node(9, Role::Client, None, addrs).await;
        let agent = Arc::new(
            Agent::new(store.clone(), client, Signer::from_seed(&[9; 32]), Mode::Market, config(), None).unwrap(),
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(agent.clone().run(stop_rx));
        until("one replica placed and the rest reported blocked", || {
            store.replica_holders(&id).unwrap().len() == 1
                && agent.status().blocked.is_some_and(|b| {
                    b.contains("1 more distinct providers with room")
                        && b.contains("1 more known but not usable: see `pactfs market`")
                })
        })
        .await;
        assert_eq!(store.pending_ids(None, 10).unwrap(), vec![id], "under target: still pending");
        stop_tx.send(true).unwrap();
        let _ = task.await;
    });
}

/// Providers asking `prices`, one per directory of `dirs` (seeds 1, 2, ...),
/// running: their handles (kept alive by the caller) and addresses.
async fn start_providers(dirs: &[tempfile::TempDir], prices: &[u64]) -> (Vec<NetHandle>, Vec<Multiaddr>) {
    let (mut handles, mut addrs) = (Vec::new(), Vec::new());
    for (i, (dir, price)) in dirs.iter().zip(prices).enumerate() {
        let p = provider(dir.path(), 1 + i as u8, *price);
        let h = start_node(1 + i as u8, Role::Provider, Some(p as Arc<dyn Service>), vec![]).await;
        addrs.push(addr_of(&h).await);
        handles.push(h);
    }
    (handles, addrs)
}

/// A client store in `dir` holding one chunk of `len` bytes, pending
/// placement: the store, the chunk's id and its body.
fn store_with_chunk(dir: &std::path::Path, len: usize, seed: u64) -> (Arc<Store>, ChunkId, Vec<u8>) {
    let store = Arc::new(Store::open(dir, 0, 0).unwrap());
    let body = crate::test_data::data(len, seed);
    let id = ChunkId::of(&body);
    let mut txn = store.begin();
    txn.add_chunk_at(&id, &body, None).unwrap();
    txn.commit(true).unwrap();
    (store, id, body)
}

fn p_key(p: &Provider) -> [u8; 32] {
    p.node_key().0
}

/// A storage promise can name chunks that were never uploaded (released
/// before their upload). Fetching a chunk that was uploaded must bid for
/// the chunks the holder signed receipts for, not the promise's whole
/// list: the holder refuses a bid naming chunks it does not hold, and an
/// honest provider would be blamed for a broken promise.
#[test]
fn a_fetch_bids_only_for_chunks_the_holder_signed_for() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    runtime().block_on(async {
        let pstore = Arc::new(Store::open(dirs[0].path(), 0, 0).unwrap());
        let p = provider_on(pstore.clone(), 1, MILLI);
        let ph = start_node(1, Role::Provider, Some(p.clone() as Arc<dyn Service>), vec![]).await;
        let store = Arc::new(Store::open(dirs[1].path(), 0, 0).unwrap());
        let mut txn = store.begin();
        let ids: Vec<ChunkId> = (0..2)
            .map(|i| {
                let body = crate::test_data::data(150_000, 40 + i);
                let id = ChunkId::of(&body);
                txn.add_chunk_at(&id, &body, None).unwrap();
                id
            })
            .collect();
        txn.commit(true).unwrap();
        let client = start_node(9, Role::Client, None, vec![addr_of(&ph).await]).await;
        let cfg = AgentConfig { replication: 1, ..config() };
        let agent = Arc::new(
            Agent::new(store.clone(), client.clone(), Signer::from_seed(&[9; 32]), Mode::Market, cfg, None).unwrap(),
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(agent.clone().run(stop_rx));
        until("both chunks placed", || store.pending_ids(None, 100).unwrap().is_empty()).await;
        let promises = agent.promises();
        assert_eq!(promises.len(), 1, "one promise names both chunks: {promises:?}");

        // The second chunk "was never uploaded": the provider does not hold
        // it and the client has no receipt for it.
        let (kept, never) = (ids[0], ids[1]);
        assert!(pstore.unhold(&never).unwrap());
        assert!(store.drop_replica(&never, &p_key(&p)).unwrap());
        assert!(matches!(store.evict(&kept).unwrap(), crate::store::Evicted::Freed(_)));

        let got = agent.fetch(kept).await.expect("the holder serves the chunk it signed for");
        assert_eq!(got.id(), kept);
        let states: Vec<String> = agent.promises().iter().map(|p| p.state.clone()).collect();
        assert!(!states.iter().any(|s| s == "broken"), "no promise broken: {states:?}");
        stop_tx.send(true).unwrap();
        let _ = task.await;
    });
}
