//! The pactfs side of the benchmark: a client node of the pactfs library
//! puts chunks to (and gets them back from) a real `pactfs provider`
//! process, through the real chunk protocols, its store and its fsyncs.

use super::{bodies, cpu_seconds, report};
use anyhow::{Context as _, Result, bail};
use futures::StreamExt as _;
use libp2p::Multiaddr;
use pactfs::chunk::ChunkId;
use pactfs::net::proto::{GetChunk, PutChunk};
use pactfs::net::{self, Mode, NetConfig, Request, Response, Role};
use pactfs::promise::{AuditTerms, MAX_PROMISE_CHUNKS, PromiseKind, Signer, Terms, unix_now};
use std::time::{Duration, Instant};

/// The chunks of `bodies` (the baselines' bytes for the same seed) with
/// their ids, so that a later `pactfs-get` asks for exactly what
/// `pactfs-put` stored.
fn chunks(seed: u64, total: u64, chunk: u64) -> Result<Vec<(ChunkId, Vec<u8>)>> {
    Ok(bodies(seed, total, chunk)?.into_iter().map(|b| (ChunkId::of(&b), b)).collect())
}

async fn connect(addr: &Multiaddr, seed: u64) -> Result<(net::NetHandle, libp2p::PeerId, Signer)> {
    connect_as(addr, *blake3::hash(&seed.to_le_bytes()).as_bytes(), Mode::Market).await
}

/// A client node with identity `identity_seed`, in `mode`, connected to the
/// provider at `addr` (which names it with /p2p/).
pub(super) async fn connect_as(
    addr: &Multiaddr,
    identity_seed: [u8; 32],
    mode: Mode,
) -> Result<(net::NetHandle, libp2p::PeerId, Signer)> {
    let provider = net::peer_of_addr(addr).context("the address needs a /p2p/<peer id> suffix")?;
    let cfg = NetConfig {
        identity_seed,
        mode,
        role: Role::Client,
        listen: vec![],
        bootstrap: vec![addr.clone()],
        mdns: false,
    };
    let handle = net::start(cfg, None).await.context("starting the client node")?;
    // Connected before the clock starts: the first request would pay the handshake.
    for _ in 0..600 {
        if handle.peers().await?.iter().any(|p| p.peer_id == provider.to_string()) {
            return Ok((handle, provider, Signer::from_seed(&identity_seed)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("could not connect to {addr}")
}

fn transport_of(addr: &Multiaddr) -> &'static str {
    if addr.to_string().contains("/quic") { "quic" } else { "tcp" }
}

/// Buys promises covering `bodies` at the provider's asking price; returns
/// each chunk's promise id. Bought before the clock starts: the benchmark
/// measures moving chunks, `scripts/bench-market` the market.
async fn buy(
    handle: &net::NetHandle,
    provider: libp2p::PeerId,
    signer: &Signer,
    bodies: &[(ChunkId, Vec<u8>)],
) -> Result<Vec<[u8; 32]>> {
    let provider_key = net::node_key_of(&provider).context("provider peer id is not an ed25519 key")?;
    let ask = match handle.request(provider, Request::Ask).await? {
        Response::Ask(a) => a,
        other => bail!("no ask: {other:?}"),
    };
    let mut out = Vec::with_capacity(bodies.len());
    for (n, part) in bodies.chunks(MAX_PROMISE_CHUNKS).enumerate() {
        let now = unix_now();
        let terms = Terms {
            kind: PromiseKind::Storage,
            client: signer.node_key(),
            provider: provider_key,
            chunks: part.iter().map(|(id, _)| id.0).collect(),
            bytes: part.iter().map(|(_, b)| b.len() as u64).sum(),
            price: ask.body.price_per_gib_month,
            start: now,
            expiry: now + ask.body.min_duration.max(3600),
            audit: AuditTerms { interval: 3600, max_range: 4096 },
            nonce: now ^ (n as u64) << 32,
            renews: None,
        };
        match handle.request(provider, Request::Bid(signer.sign(terms))).await? {
            Response::Promise(p) => out.extend(std::iter::repeat_n(p.id(), part.len())),
            other => bail!("bid not accepted: {other:?}"),
        }
    }
    Ok(out)
}

/// Puts `total` bytes as distinct chunks, `streams` requests in flight.
pub async fn put(addr: Multiaddr, total: u64, chunk: u64, streams: usize, seed: u64) -> Result<()> {
    let (handle, provider, signer) = connect(&addr, seed).await?;
    let bodies = chunks(seed, total, chunk)?;
    let promises = buy(&handle, provider, &signer, &bodies).await?;
    let bytes: u64 = bodies.iter().map(|(_, b)| b.len() as u64).sum();
    let (cpu0, t0) = (cpu_seconds()?, Instant::now());
    // Each request its own task on the runtime's workers, as the drive's
    // requests are (and as raw-send's streams are), not polled by the
    // thread that blocks on main.
    let mut puts = futures::stream::iter(bodies.into_iter().zip(promises).map(|((id, body), promise)| {
        let handle = handle.clone();
        tokio::spawn(async move {
            match handle.request(provider, Request::Put(PutChunk { promise, id: id.0, body })).await? {
                Response::Stored(_) => Ok(()),
                other => bail!("put refused: {other:?}"),
            }
        })
    }))
    .buffer_unordered(streams);
    while let Some(r) = puts.next().await {
        r.context("a put task failed")??;
    }
    report("pactfs-put", transport_of(&addr), bytes, t0.elapsed().as_secs_f64(), cpu_seconds()? - cpu0)?;
    handle.shutdown();
    Ok(())
}

/// Gets back what `put` stored with the same seed, verifying every chunk.
pub async fn get(addr: Multiaddr, total: u64, chunk: u64, streams: usize, seed: u64) -> Result<()> {
    let (handle, provider, _) = connect(&addr, seed).await?;
    let chunks = chunks(seed, total, chunk)?;
    let bytes: u64 = chunks.iter().map(|(_, b)| b.len() as u64).sum();
    let ids: Vec<ChunkId> = chunks.into_iter().map(|(id, _)| id).collect();
    let (cpu0, t0) = (cpu_seconds()?, Instant::now());
    let mut gets = futures::stream::iter(ids.into_iter().map(|id| {
        let handle = handle.clone();
        tokio::spawn(async move {
            // Any live promise of this client covering the chunk serves.
            match handle.request(provider, Request::Get(GetChunk { promise: [0; 32], id: id.0, range: None })).await? {
                Response::Chunk(b) if id.verifies(&b) => Ok(()),
                Response::Chunk(_) => bail!("chunk {} came back wrong", id.fmt_short()),
                other => bail!("get refused: {other:?}"),
            }
        })
    }))
    .buffer_unordered(streams);
    while let Some(r) = gets.next().await {
        r.context("a get task failed")??;
    }
    report("pactfs-get", transport_of(&addr), bytes, t0.elapsed().as_secs_f64(), cpu_seconds()? - cpu0)?;
    handle.shutdown();
    Ok(())
}
