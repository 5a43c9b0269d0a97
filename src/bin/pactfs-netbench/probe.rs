//! `probe`: what a real `pactfs provider` answers to requests a client must
//! not get away with, for `tests/net/signatures.rs`. As a client node (and a
//! second identity for the requests made as someone else) it gets the
//! provider's ask, bids, and then sends the very same signed bid again, a
//! bid changed after signing, another client's bid, uploads under a promise
//! id the provider never signed, of a chunk its promise does not cover, of
//! bytes that do not hash to their id, and fetches as another identity; and
//! for contrast the requests that must work (the bid, the upload, the fetch).
//!
//! Prints one JSON object: for each step the answer's kind, the variant of
//! `Response` or, for a refusal, of `Refusal` (`"Promise"`, `"Stored"`,
//! `"Replayed"`, `"Unauthorized"`, …), or `"error: …"` when the request got
//! no answer. It judges nothing itself, beyond checking the signatures on
//! the ask, the promise and the receipt it is given (`"verified"` or why
//! not): the test decides what each step must get.

use super::pactfs_path::connect_as;
use anyhow::{Context as _, Result};
use libp2p::{Multiaddr, PeerId};
use pactfs::chunk::ChunkId;
use pactfs::net::proto::{GetChunk, PutChunk};
use pactfs::net::{self, Mode, NetHandle, Request, Response};
use pactfs::promise::{AuditTerms, Bid, PromiseKind, Terms, unix_now};
use serde_json::{Map, Value, json};

/// Identity seeds of the probe's two clients: fixed, so a provider's log
/// names the same keys run after run.
const CLIENT: [u8; 32] = [0xc1; 32];
const OTHER: [u8; 32] = [0xc2; 32];
/// Bytes of each test chunk: small, so the probe is quick.
const CHUNK: usize = 64 * 1024;

pub async fn probe(addr: Multiaddr, mode: Mode) -> Result<()> {
    let (client, provider, signer) = connect_as(&addr, CLIENT, mode).await?;
    let (other, _, other_signer) = connect_as(&addr, OTHER, mode).await?;
    let provider_key = net::node_key_of(&provider).context("the provider's peer id is not an ed25519 key")?;
    let mut out = Map::new();
    out.insert("provider".into(), json!(provider.to_string()));

    let ask = match client.request(provider, Request::Ask).await {
        Ok(Response::Ask(ask)) => ask,
        answer => {
            out.insert("ask".into(), json!(kind(&answer)));
            return print(out);
        }
    };
    let ask_check = match ask.check(unix_now()) {
        Ok(()) if ask.body.provider == provider_key => "verified".to_string(),
        Ok(()) => "names another provider".to_string(),
        Err(e) => format!("does not verify: {e}"),
    };
    out.insert("ask".into(), json!(ask_check));

    let covered = body(1);
    let uncovered = body(2);
    let covered_id = ChunkId::of(&covered);
    let now = unix_now();
    let terms = Terms {
        kind: PromiseKind::Storage,
        client: signer.node_key(),
        provider: provider_key,
        chunks: vec![covered_id.0],
        bytes: covered.len() as u64,
        price: ask.body.price_per_gib_month,
        start: now,
        expiry: now + ask.body.min_duration.max(3600).min(ask.body.max_duration),
        audit: AuditTerms { interval: 3600, max_range: 4096 },
        nonce: now,
        renews: None,
    };
    let bid: Bid = signer.sign(terms.clone());
    let answer = client.request(provider, Request::Bid(bid.clone())).await;
    out.insert("bid".into(), json!(kind(&answer)));
    let Ok(Response::Promise(promise)) = answer else { return print(out) };
    let promise_check = match promise.verify() {
        Ok(()) if promise.terms == terms => "verified".to_string(),
        Ok(()) => "terms differ from the bid".to_string(),
        Err(e) => format!("does not verify: {e}"),
    };
    out.insert("promise".into(), json!(promise_check));
    let pid = promise.id();

    // The same signed bid again: its nonce is spent.
    let answer = client.request(provider, Request::Bid(bid.clone())).await;
    out.insert("replayed_bid".into(), json!(kind(&answer)));
    // A fresh bid whose price was lowered after signing.
    let mut tampered = signer.sign(Terms { nonce: now + 1, ..terms.clone() });
    tampered.body.price = tampered.body.price.saturating_sub(1) / 2;
    let answer = client.request(provider, Request::Bid(tampered)).await;
    out.insert("tampered_bid".into(), json!(kind(&answer)));
    // A fresh bid of the client's, sent by another identity.
    let relayed = signer.sign(Terms { nonce: now + 2, ..terms.clone() });
    let answer = other.request(provider, Request::Bid(relayed)).await;
    out.insert("bid_from_other_identity".into(), json!(kind(&answer)));

    // Uploads that must be refused, then the one that must be stored.
    let unsigned_pid = *blake3::hash(b"a promise this provider never signed").as_bytes();
    let answer = put(&client, provider, unsigned_pid, &uncovered).await;
    out.insert("upload_unsigned_promise".into(), json!(kind(&answer)));
    let answer = put(&client, provider, pid, &uncovered).await;
    out.insert("upload_uncovered_chunk".into(), json!(kind(&answer)));
    let answer = client
        .request(provider, Request::Put(PutChunk { promise: pid, id: covered_id.0, body: uncovered.clone() }))
        .await;
    out.insert("upload_wrong_bytes".into(), json!(kind(&answer)));
    let answer = put(&other, provider, pid, &covered).await;
    out.insert("upload_other_identity".into(), json!(kind(&answer)));
    let answer = put(&client, provider, pid, &covered).await;
    out.insert("upload".into(), json!(kind(&answer)));
    if let Ok(Response::Stored(receipt)) = &answer {
        let check = match receipt.check(&provider_key, &signer.node_key(), &pid, &covered_id.0, covered.len() as u32) {
            Ok(()) => "verified".to_string(),
            Err(e) => format!("does not verify: {e}"),
        };
        out.insert("receipt".into(), json!(check));
    }

    // Fetches: another identity under the client's promise, then the client.
    let answer = get(&other, provider, pid, covered_id).await;
    out.insert("fetch_other_identity".into(), json!(kind(&answer)));
    let answer = get(&client, provider, pid, covered_id).await;
    let fetched = match &answer {
        Ok(Response::Chunk(b)) if covered_id.verifies(b) => "Chunk".to_string(),
        Ok(Response::Chunk(_)) => "wrong bytes".to_string(),
        _ => kind(&answer),
    };
    out.insert("fetch".into(), json!(fetched));
    client.shutdown();
    other.shutdown();
    // The other identity's key, for the test to find in the provider's log.
    out.insert("other_identity".into(), json!(net::peer_id_of(&other_signer.node_key()).map(|p| p.to_string())));
    print(out)
}

async fn put(node: &NetHandle, provider: PeerId, promise: [u8; 32], body: &[u8]) -> Result<Response, net::NetError> {
    let id = ChunkId::of(body).0;
    node.request(provider, Request::Put(PutChunk { promise, id, body: body.to_vec() })).await
}

async fn get(node: &NetHandle, provider: PeerId, promise: [u8; 32], id: ChunkId) -> Result<Response, net::NetError> {
    node.request(provider, Request::Get(GetChunk { promise, id: id.0, range: None })).await
}

/// The answer's kind: the `Response` variant, or the `Refusal` of a refusal.
fn kind(answer: &Result<Response, net::NetError>) -> String {
    match answer {
        Ok(Response::Refused(r)) => format!("{:?}", r.why),
        Ok(Response::Stored(_)) => "Stored".into(),
        Ok(Response::Chunk(_)) => "Chunk".into(),
        Ok(Response::Has(_)) => "Has".into(),
        Ok(Response::Ask(_)) => "Ask".into(),
        Ok(Response::Promise(_)) => "Promise".into(),
        Ok(Response::Counter(_)) => "Counter".into(),
        Ok(Response::Paid(_)) => "Paid".into(),
        Ok(Response::Root(_)) => "Root".into(),
        Ok(Response::Audited(_)) => "Audited".into(),
        Err(e) => format!("error: {e}"),
    }
}

/// `CHUNK` bytes of its own for each `seed`.
fn body(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..CHUNK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn print(out: Map<String, Value>) -> Result<()> {
    super::announce(&Value::Object(out).to_string())
}
