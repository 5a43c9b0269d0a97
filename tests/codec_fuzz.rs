//! Property tests over every wire message: decoding arbitrary, truncated or
//! mutated bytes never panics, never allocates past the message kind's
//! limit, and every valid message survives a round trip.
//!
//! A counting global allocator measures the peak of live bytes allocated
//! by the decoding thread while it decodes.

use pactfs::codec::frame;
use pactfs::net::Announce;
use pactfs::net::proto::{
    self, AuditChunk, Audited, Counter, GetChunk, HasChunks, PutChunk, Refusal, Refused, Request, Response,
};
use pactfs::promise::{Ask, AuditTerms, Cheque, ChequeAck, NodeKey, Promise, PromiseKind, Receipt, Signer, Terms};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    if TRACK.with(Cell::get) {
        let live = LIVE.with(|l| {
            l.set(l.get() + delta);
            l.get()
        });
        PEAK.with(|p| p.set(p.get().max(live)));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        note(new as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the peak of bytes it held.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    TRACK.with(|t| t.set(true));
    let out = f();
    TRACK.with(|t| t.set(false));
    (out, PEAK.with(Cell::get).max(0) as usize)
}

/// Slack for the decoder's own bookkeeping (error strings and the like).
const SLACK: usize = 4096;

fn check_request(kind: u8, body: &[u8]) -> Result<(), TestCaseError> {
    let owned = body.to_vec();
    let (r, peak) = peak_of(|| Request::decode(kind, owned).map(|_| ()));
    let limit = proto::request_limit(kind).unwrap_or(0);
    prop_assert!(peak <= limit + SLACK, "request kind {kind}: {peak} bytes allocated for {} input bytes", body.len());
    drop(r);
    Ok(())
}

fn check_response(kind: u8, body: &[u8]) -> Result<(), TestCaseError> {
    let owned = body.to_vec();
    let (r, peak) = peak_of(|| Response::decode(kind, owned).map(|_| ()));
    let limit = proto::response_limit(kind).unwrap_or(0);
    prop_assert!(peak <= limit + SLACK, "response kind {kind}: {peak} bytes allocated for {} input bytes", body.len());
    drop(r);
    Ok(())
}

fn terms(client: NodeKey, provider: NodeKey, chunks: Vec<[u8; 32]>, n: u64, renews: Option<[u8; 32]>) -> Terms {
    Terms {
        kind: if n.is_multiple_of(2) { PromiseKind::Storage } else { PromiseKind::Retrieval },
        client,
        provider,
        chunks,
        bytes: n,
        price: n / 3,
        start: n / 5,
        expiry: n / 2,
        audit: AuditTerms { interval: n % 7200, max_range: (n % 65536) as u32 },
        nonce: n,
        renews,
    }
}

fn valid_requests() -> impl Strategy<Value = Request> {
    let client = Signer::from_seed(&[1; 32]);
    let c2 = Signer::from_seed(&[1; 32]);
    let provider = Signer::from_seed(&[2; 32]).node_key();
    prop_oneof![
        (any::<[u8; 32]>(), any::<[u8; 32]>(), proptest::collection::vec(any::<u8>(), 0..2048))
            .prop_map(|(promise, id, body)| Request::Put(PutChunk { promise, id, body })),
        (any::<[u8; 32]>(), any::<[u8; 32]>(), proptest::option::of(any::<(u64, u32)>()))
            .prop_map(|(promise, id, range)| Request::Get(GetChunk { promise, id, range })),
        proptest::collection::vec(any::<[u8; 32]>(), 0..64).prop_map(|ids| Request::Has(HasChunks { ids })),
        Just(Request::Ask),
        (proptest::collection::vec(any::<[u8; 32]>(), 0..64), any::<u64>(), proptest::option::of(any::<[u8; 32]>()))
            .prop_map(move |(chunks, n, renews)| {
                Request::Bid(client.sign(terms(client.node_key(), provider, chunks, n, renews)))
            }),
        (any::<u64>(), any::<u64>()).prop_map(move |(total, seq)| {
            Request::Pay(c2.sign(Cheque { client: c2.node_key(), provider, total, seq, at: seq / 2 }))
        }),
        proptest::collection::vec(any::<u8>(), 0..4096).prop_map(Request::PutRoot),
        any::<[u8; 32]>().prop_map(|k| Request::GetRoot(NodeKey(k))),
        (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<u64>(), any::<u32>())
            .prop_map(|(promise, id, offset, len)| Request::Audit(AuditChunk { promise, id, offset, len })),
    ]
}

fn valid_responses() -> impl Strategy<Value = Response> {
    let signer = Signer::from_seed(&[2; 32]);
    let (s2, s3, s4) = (Signer::from_seed(&[2; 32]), Signer::from_seed(&[2; 32]), Signer::from_seed(&[2; 32]));
    let client = Signer::from_seed(&[1; 32]);
    let ck = client.node_key();
    prop_oneof![
        (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<u32>(), any::<u64>()).prop_map(
            move |(promise, chunk, len, at)| {
                Response::Stored(signer.sign(Receipt {
                    promise,
                    chunk,
                    len,
                    client: ck,
                    provider: signer.node_key(),
                    at,
                }))
            }
        ),
        (any::<u64>(), proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..16)).prop_map(
            move |(n, addrs)| {
                Response::Ask(s2.sign(Ask {
                    provider: s2.node_key(),
                    price_per_gib_month: n,
                    price_per_gib_retrieval: n / 2,
                    free_bytes: n / 3,
                    min_duration: n / 5,
                    max_duration: n / 4,
                    addrs: addrs.into_iter().map(pactfs::codec::Bytes).collect(),
                    issued: n / 7,
                    expires: n / 6,
                }))
            }
        ),
        (proptest::collection::vec(any::<[u8; 32]>(), 0..64), any::<u64>()).prop_map(move |(chunks, n)| {
            let bid = client.sign(terms(client.node_key(), s3.node_key(), chunks, n, None));
            Response::Promise(Box::new(Promise::accept(&bid, &s3)))
        }),
        (any::<u64>(), ".{0,100}").prop_map(|(price, message)| Response::Counter(Counter { price, message })),
        (any::<u64>(), any::<u64>()).prop_map(move |(total, seq)| {
            Response::Paid(s4.sign(ChequeAck { client: ck, provider: s4.node_key(), total, seq, at: 3 }))
        }),
        proptest::collection::vec(any::<u8>(), 0..2048).prop_map(Response::Chunk),
        proptest::collection::vec(any::<bool>(), 0..256).prop_map(Response::Has),
        (proptest::collection::vec(any::<u8>(), 0..2048), proptest::collection::vec(any::<[u8; 32]>(), 0..64))
            .prop_map(|(bytes, siblings)| Response::Audited(Audited { bytes, siblings })),
        ".{0,200}".prop_map(|m| Response::Refused(Refused { why: Refusal::Busy, message: m })),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4096)).prop_map(Response::Root),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bodies_never_panic_or_overallocate(kind in 0u8..20, body in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check_request(kind, &body)?;
        check_response(kind, &body)?;
        let (r, peak) = peak_of(|| Announce::decode(&body).map(|_| ()));
        prop_assert!(peak <= 16 * 1024 + SLACK, "announcement: {peak} bytes allocated");
        drop(r);
    }

    #[test]
    fn arbitrary_frames_never_panic_or_overallocate(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let (r, peak) = peak_of(|| futures::executor::block_on(frame::read(&mut bytes.as_slice(), proto::WIRE_V1, proto::request_limit)).map(|_| ()));
        // A frame never costs more than its bytes on the wire.
        prop_assert!(peak <= bytes.len() + SLACK, "{peak} bytes allocated reading {} bytes", bytes.len());
        drop(r);
    }

    #[test]
    fn valid_requests_round_trip_and_survive_mutation(req in valid_requests(), flip in any::<(usize, u8)>(), cut in any::<usize>()) {
        let (kind, body) = req.encode();
        prop_assert_eq!(Request::decode(kind, body.clone()).unwrap(), req);
        let mut mutated = body.clone();
        if !mutated.is_empty() {
            let i = flip.0 % mutated.len();
            mutated[i] ^= flip.1 | 1;
        }
        check_request(kind, &mutated)?;
        check_request(kind, &body[..cut % (body.len() + 1)])?;
    }

    #[test]
    fn valid_responses_round_trip_and_survive_mutation(res in valid_responses(), flip in any::<(usize, u8)>(), cut in any::<usize>()) {
        let (kind, body) = res.encode();
        prop_assert_eq!(Response::decode(kind, body.clone()).unwrap(), res);
        let mut mutated = body.clone();
        if !mutated.is_empty() {
            let i = flip.0 % mutated.len();
            mutated[i] ^= flip.1 | 1;
        }
        check_response(kind, &mutated)?;
        check_response(kind, &body[..cut % (body.len() + 1)])?;
    }
}

/// Length prefixes that lie about huge sizes cost nothing: not in the
/// first field, and not in a string or a body further in.
#[test]
fn lying_lengths_allocate_nothing_large() {
    // A refusal whose message claims 60 MiB; a put whose head claims 16 MiB.
    let mut refused = vec![0u8, 0xfc];
    refused.extend_from_slice(&(60u32 << 20).to_le_bytes());
    refused.extend_from_slice(b"short");
    check_response(4, &refused).unwrap();
    let (kind, mut put) = Request::Put(PutChunk { promise: [3; 32], id: [0; 32], body: vec![7; 100] }).encode();
    let n = put.len();
    put[n - 4..].copy_from_slice(&(16u32 << 20).to_be_bytes());
    check_request(kind, &put).unwrap();
    // Tighter than the kind's limit: a lie costs at most 4x the input.
    for (what, peak, len) in [
        (
            "refusal",
            {
                let r = refused.clone();
                peak_of(move || Response::decode(4, r).is_err()).1
            },
            refused.len(),
        ),
        (
            "put",
            {
                let p = put.clone();
                peak_of(move || Request::decode(kind, p).is_err()).1
            },
            put.len(),
        ),
    ] {
        assert!(peak <= 4 * len.max(4096) + SLACK, "{what}: {peak} bytes allocated for {len} input bytes");
    }
    // A has-chunks body claiming 2^40 ids, a chunk claiming 2^40 bytes.
    let lies: [&[u8]; 2] = [&[0xfd, 0, 0, 0, 0, 0, 1, 0, 0], &[0xfc, 0xff, 0xff, 0xff, 0x7f]];
    for kind in 1..=8 {
        for lie in lies {
            check_request(kind, lie).unwrap();
            check_response(kind, lie).unwrap();
        }
    }
}

/// Bodies of every size round-trip, near powers of two included (an earlier
/// limit keyed to the input's length refused chunks a few bytes under one).
#[test]
fn chunk_sizes_near_boundaries_round_trip() {
    for base in [4096usize, 16384, 65536, 262_144, 1 << 20, 4 << 20] {
        for n in base - 12..base + 12 {
            let res = Response::Chunk(vec![0xa5; n]);
            let (kind, body) = res.encode();
            assert_eq!(Response::decode(kind, body).unwrap(), res, "chunk of {n} bytes");
            let req = Request::Put(PutChunk { promise: [2; 32], id: [1; 32], body: vec![0x5a; n] });
            let (kind, body) = req.encode();
            assert_eq!(Request::decode(kind, body).unwrap(), req, "put of {n} bytes");
        }
    }
}
