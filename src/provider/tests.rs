use super::*;
use crate::net::proto::Refused;
use crate::promise::{AuditTerms, Bid, Cheque, MILLI, Promise, PromiseKind, Terms};
use crate::store::Store;

const DAY: u64 = 86400;

fn terms(capacity: u64) -> ProviderTerms {
    ProviderTerms {
        capacity,
        price_per_gib_month: 2 * MILLI,
        price_per_gib_retrieval: MILLI / 2,
        min_duration: 3600,
        max_duration: 365 * DAY,
        voluntary_capacity: 0,
    }
}

fn provider(dir: &std::path::Path, capacity: u64) -> Provider {
    let store = Arc::new(Store::open(dir, 0, 0).unwrap());
    Provider::new(store, Signer::from_seed(&[1; 32]), terms(capacity), Faults::default(), None).unwrap()
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    crate::test_data::data(n, u64::from(seed))
}

fn bid_for(client: &Signer, p: &Provider, chunks: &[&[u8]], price: u64, nonce: u64) -> Bid {
    let now = unix_now();
    client.sign(Terms {
        kind: PromiseKind::Storage,
        client: client.node_key(),
        provider: p.me,
        chunks: chunks.iter().map(|b| ChunkId::of(b).0).collect(),
        bytes: chunks.iter().map(|b| b.len() as u64).sum(),
        price,
        start: now,
        expiry: now + 30 * DAY,
        audit: AuditTerms { interval: 3600, max_range: 4096 },
        nonce,
        renews: None,
    })
}

fn refusal(r: Response) -> Refusal {
    match r {
        Response::Refused(r) => r.why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn promise(r: Response) -> Promise {
    match r {
        Response::Promise(p) => *p,
        other => panic!("expected a promise, got {other:?}"),
    }
}

fn put(p: &Provider, client: &Signer, promise: [u8; 32], body: &[u8]) -> Response {
    let id = ChunkId::of(body).0;
    p.serve(&client.node_key(), Request::Put(PutChunk { promise, id, body: body.to_vec() }))
}

#[test]
fn stores_and_serves_under_a_promise() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider(dir.path(), 64 << 20);
    let client = Signer::from_seed(&[2; 32]);
    let b = body(300_000, 1);
    let id = ChunkId::of(&b);
    let pr = promise(p.serve(&client.node_key(), Request::Bid(bid_for(&client, &p, &[&b], 2 * MILLI, 1))));
    pr.verify().unwrap();
    let pid = pr.id();
    match put(&p, &client, pid, &b) {
        Response::Stored(r) => r.check(&p.me, &client.node_key(), &pid, &id.0, b.len() as u32).unwrap(),
        other => panic!("expected a receipt, got {other:?}"),
    }
    // Storing the same chunk again is answered with a receipt and no new bytes.
    assert!(matches!(put(&p, &client, pid, &b), Response::Stored(_)));
    assert_eq!(p.stats().chunks, 1);
    let get = |range| Request::Get(GetChunk { promise: pid, id: id.0, range });
    assert_eq!(p.serve(&client.node_key(), get(None)), Response::Chunk(b.clone()));
    assert_eq!(p.serve(&client.node_key(), get(Some((10, 5)))), Response::Chunk(b[10..15].to_vec()));
    let past = get(Some((b.len() as u64 - 2, 5)));
    assert!(matches!(p.serve(&client.node_key(), past), Response::Refused(Refused { why: Refusal::BadRequest, .. })));
    // Another peer cannot fetch under this client's promise.
    let other = Signer::from_seed(&[3; 32]);
    assert_eq!(refusal(p.serve(&other.node_key(), get(None))), Refusal::Unauthorized);
    let has = Request::Has(HasChunks { ids: vec![id.0, [7; 32]] });
    assert_eq!(p.serve(&client.node_key(), has), Response::Has(vec![true, false]));
    // Everything survives a reopen: chunks, promises, committed bytes.
    drop(p);
    let p = provider(dir.path(), 64 << 20);
    assert_eq!(p.stats().chunks, 1);
    assert_eq!(p.stats().committed, b.len() as u64);
    assert_eq!(p.held().unwrap(), vec![id.0]);
    assert_eq!(p.serve(&client.node_key(), get(None)), Response::Chunk(b));
}

#[test]
fn refuses_what_it_must() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider(dir.path(), 400_000);
    let client = Signer::from_seed(&[2; 32]);
    let other = Signer::from_seed(&[3; 32]);
    let (b1, b2, b3) = (body(150_000, 1), body(150_000, 2), body(150_000, 3));
    // A bid signed by someone else than the peer sending it.
    let forged = bid_for(&other, &p, &[&b1], 2 * MILLI, 1);
    assert_eq!(refusal(p.serve(&client.node_key(), Request::Bid(forged))), Refusal::Unauthorized);
    // A bid below the price is countered with the price.
    match p.serve(&client.node_key(), Request::Bid(bid_for(&client, &p, &[&b1], MILLI, 2))) {
        Response::Counter(c) => assert_eq!(c.price, 2 * MILLI),
        other => panic!("expected a counter, got {other:?}"),
    }
    // At the price of an ask it signed, the provider takes the bid even
    // though demand has since raised its price.
    let asked = p.make_ask(&[]).body.price_per_gib_month;
    let bid = bid_for(&client, &p, &[&b1, &b2], asked, 3);
    let pr = promise(p.serve(&client.node_key(), Request::Bid(bid.clone())));
    // The same bid again, and a new bid reusing its nonce: replays.
    assert_eq!(refusal(p.serve(&client.node_key(), Request::Bid(bid))), Refusal::Replayed);
    let mut again = bid_for(&client, &p, &[&b3], 2 * MILLI, 3);
    again.body.start += 1;
    let again = client.sign(again.body);
    assert_eq!(refusal(p.serve(&client.node_key(), Request::Bid(again))), Refusal::Replayed);
    // Beyond the capacity: refused as full.
    let big = bid_for(&client, &p, &[&b3, &body(150_000, 4)], 10 * MILLI, 4);
    assert_eq!(refusal(p.serve(&client.node_key(), Request::Bid(big))), Refusal::Full);
    // An upload under no promise, under a promise not covering the chunk,
    // under someone else's promise, or a body that does not hash to its id.
    assert_eq!(refusal(put(&p, &client, [9; 32], &b3)), Refusal::Unauthorized);
    assert_eq!(refusal(put(&p, &client, pr.id(), &b3)), Refusal::Unauthorized);
    assert_eq!(refusal(put(&p, &other, pr.id(), &b1)), Refusal::Unauthorized);
    let bad = PutChunk { promise: pr.id(), id: ChunkId::of(&b1).0, body: b2.clone() };
    assert_eq!(refusal(p.serve(&client.node_key(), Request::Put(bad))), Refusal::BadChunk);
    assert!(matches!(put(&p, &client, pr.id(), &b1), Response::Stored(_)));
    // Durations outside the provider's range are refused.
    let mut short = bid_for(&client, &p, &[&b3], 10 * MILLI, 5).body;
    short.expiry = short.start + 60;
    assert_eq!(refusal(p.serve(&client.node_key(), Request::Bid(client.sign(short)))), Refusal::BadRequest);
}

#[test]
fn cheques_only_grow_and_expired_promises_free_their_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider(dir.path(), 64 << 20);
    let client = Signer::from_seed(&[2; 32]);
    let cheque =
        |total, seq| client.sign(Cheque { client: client.node_key(), provider: p.me, total, seq, at: unix_now() });
    assert!(matches!(p.serve(&client.node_key(), Request::Pay(cheque(100, 1))), Response::Paid(_)));
    assert!(matches!(p.serve(&client.node_key(), Request::Pay(cheque(100, 1))), Response::Paid(_)), "idempotent");
    assert_eq!(refusal(p.serve(&client.node_key(), Request::Pay(cheque(50, 2)))), Refusal::BadRequest);
    match p.serve(&client.node_key(), Request::Pay(cheque(300, 2))) {
        Response::Paid(ack) => {
            ack.verify_by(&p.me).unwrap();
            assert_eq!(ack.body.total, 300);
        }
        other => panic!("expected an ack, got {other:?}"),
    }
    let other = Signer::from_seed(&[3; 32]);
    assert_eq!(refusal(p.serve(&other.node_key(), Request::Pay(cheque(400, 3)))), Refusal::Unauthorized);

    let b = body(200_000, 7);
    let pr = promise(p.serve(&client.node_key(), Request::Bid(bid_for(&client, &p, &[&b], 2 * MILLI, 9))));
    assert!(matches!(put(&p, &client, pr.id(), &b), Response::Stored(_)));
    assert_eq!(p.sweep(unix_now()), 0, "a live promise keeps its chunks");
    assert_eq!(p.sweep(pr.terms.expiry + 1), 1);
    assert!(!p.store.holds(&ChunkId::of(&b)).unwrap());
    assert_eq!(p.stats().committed, 0);
    assert_eq!(refusal(put(&p, &client, pr.id(), &b)), Refusal::Unauthorized);
}

#[test]
fn a_renewal_replaces_its_promise_in_the_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider(dir.path(), 300_000);
    let client = Signer::from_seed(&[2; 32]);
    let b = body(200_000, 5);
    let first = promise(p.serve(&client.node_key(), Request::Bid(bid_for(&client, &p, &[&b], 2 * MILLI, 1))));
    assert!(matches!(put(&p, &client, first.id(), &b), Response::Stored(_)));
    let mut t = bid_for(&client, &p, &[&b], 10 * MILLI, 2).body;
    t.start = first.terms.expiry;
    t.expiry = first.terms.expiry + 30 * DAY;
    t.renews = Some(first.id());
    let renewal = promise(p.serve(&client.node_key(), Request::Bid(client.sign(t))));
    assert_eq!(p.stats().committed, 200_000, "counted once, not twice");
    // The old promise's expiry drops it, but the renewal keeps the chunk.
    assert_eq!(p.sweep(first.terms.expiry + 1), 0);
    assert!(p.store.holds(&ChunkId::of(&b)).unwrap());
    // Fetching under the old id still works through the renewal.
    let get = Request::Get(GetChunk { promise: first.id(), id: ChunkId::of(&b).0, range: None });
    assert_eq!(p.serve(&client.node_key(), get), Response::Chunk(b));
    assert_eq!(p.sweep(renewal.terms.expiry + 1), 1);
}

#[test]
fn a_stale_ask_offers_room_that_bids_then_find_gone() {
    // The `stale-ask` fault: the ask keeps offering the whole capacity, but
    // bids are still held to what is left.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), 0, 0).unwrap());
    let faults = Faults { stale_ask: true, ..Faults::default() };
    let p = Provider::new(store, Signer::from_seed(&[1; 32]), terms(1 << 20), faults, None).unwrap();
    let client = Signer::from_seed(&[2; 32]);
    let (a, b) = (body(700_000, 1), body(700_000, 2));
    promise(p.serve(&client.node_key(), Request::Bid(bid_for(&client, &p, &[&a], 2 * MILLI, 1))));
    assert_eq!(p.make_ask(&[]).body.free_bytes, 1 << 20, "the stale ask still offers everything");
    let price = p.make_ask(&[]).body.price_per_gib_month;
    let answer = p.serve(&client.node_key(), Request::Bid(bid_for(&client, &p, &[&b], price, 2)));
    assert_eq!(refusal(answer), Refusal::Full);
    assert_eq!(p.stats().committed, 700_000);
}

#[test]
fn an_upload_goes_under_the_promise_it_names_or_its_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider(dir.path(), 64 << 20);
    let client = Signer::from_seed(&[2; 32]);
    let (b1, b2) = (body(100_000, 1), body(100_000, 2));
    let first = promise(p.serve(&client.node_key(), Request::Bid(bid_for(&client, &p, &[&b1], 10 * MILLI, 1))));
    let second = promise(p.serve(&client.node_key(), Request::Bid(bid_for(&client, &p, &[&b2], 10 * MILLI, 2))));
    // b2 is covered, but by another promise than the one named.
    assert_eq!(refusal(put(&p, &client, first.id(), &b2)), Refusal::Unauthorized);
    assert!(matches!(put(&p, &client, second.id(), &b2), Response::Stored(_)));
    // After a renewal, the old id still leads to the promise in force.
    let mut t = bid_for(&client, &p, &[&b1], 10 * MILLI, 3).body;
    t.start = first.terms.expiry;
    t.expiry = first.terms.expiry + 30 * DAY;
    t.renews = Some(first.id());
    let renewal = promise(p.serve(&client.node_key(), Request::Bid(client.sign(t))));
    match put(&p, &client, first.id(), &b1) {
        Response::Stored(r) => assert_eq!(r.body.promise, renewal.id()),
        other => panic!("expected a receipt under the renewal, got {other:?}"),
    }
}

#[test]
fn hot_chunks_are_copied_kept_and_offered_voluntarily() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let holder = provider(d1.path(), 64 << 20);
    let client = Signer::from_seed(&[2; 32]);
    let b = body(300_000, 7);
    let id = ChunkId::of(&b);
    let pid =
        promise(holder.serve(&client.node_key(), Request::Bid(bid_for(&client, &holder, &[&b], 2 * MILLI, 1)))).id();
    assert!(matches!(put(&holder, &client, pid, &b), Response::Stored(_)));
    let get = |p: &Provider, from: &NodeKey, promise: [u8; 32]| {
        p.serve(from, Request::Get(GetChunk { promise, id: id.0, range: None }))
    };
    let stranger = Signer::from_seed(&[3; 32]).node_key();
    assert_eq!(refusal(get(&holder, &stranger, [0; 32])), Refusal::Unauthorized, "not hot yet: no copy");
    for _ in 0..HOT_AFTER {
        assert!(matches!(get(&holder, &client.node_key(), pid), Response::Chunk(_)));
    }
    assert_eq!(holder.hot_chunks(), vec![id.0]);
    let Response::Chunk(copy) = get(&holder, &stranger, [0; 32]) else { panic!("a hot chunk is copied freely") };

    // The volunteer: room for one chunk of the largest size.
    let mut t = terms(64 << 20);
    t.voluntary_capacity = crate::net::proto::MAX_CHUNK as u64;
    let open = |dir: &std::path::Path, t: ProviderTerms| {
        let store = Arc::new(Store::open(dir, 0, 0).unwrap());
        Provider::new(store, Signer::from_seed(&[4; 32]), t, Faults::default(), None).unwrap()
    };
    let vol = open(d2.path(), t.clone());
    let other = body(300_000, 8);
    let listed = vec![(libp2p::PeerId::random(), vec![id.0, ChunkId::of(&other).0])];
    let wanted = vol.copies_wanted(&listed, 8);
    assert_eq!(wanted.len(), 1, "only as many as the room holds: {wanted:?}");
    assert_eq!(wanted[0].1, id);
    let verified = crate::chunk::Verified::check(id, copy).unwrap();
    assert!(vol.keep_copy(&verified).unwrap());
    assert!(!vol.keep_copy(&verified).unwrap(), "kept once");
    assert!(vol.copies_wanted(&listed, 8).is_empty(), "held, and no room left");
    assert_eq!(vol.voluntary_chunks(), vec![id.0]);

    // A client with no storage promise there retrieves it under a retrieval promise.
    let now = unix_now();
    let bid = client.sign(Terms {
        kind: PromiseKind::Retrieval,
        client: client.node_key(),
        provider: vol.me,
        chunks: vec![id.0],
        bytes: b.len() as u64,
        price: MILLI / 2,
        start: now,
        expiry: now + 600,
        audit: AuditTerms { interval: 0, max_range: 0 },
        nonce: 9,
        renews: None,
    });
    let rp = promise(vol.serve(&client.node_key(), Request::Bid(bid))).id();
    let Response::Chunk(got) = get(&vol, &client.node_key(), rp) else { panic!("served under the retrieval promise") };
    assert_eq!(got, b);
    // The promise sweep never drops a voluntary copy; a restart keeps it.
    vol.sweep(now + 3600);
    drop(vol);
    let vol = open(d2.path(), t);
    assert_eq!(vol.voluntary_chunks(), vec![id.0]);
    assert_eq!(vol.stats().voluntary.voluntary_bytes, b.len() as u64);
    assert!(matches!(get(&vol, &stranger, [0; 32]), Response::Chunk(_)), "offered to anyone who copies");
}
