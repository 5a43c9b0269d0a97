//! The pactfs side of the benchmark: a client node of the pactfs library
//! puts chunks to (and gets them back from) a real `pactfs provider`
//! process, through the real chunk protocols, its store and its fsyncs.

use super::{cpu_seconds, report};
use anyhow::{Context as _, Result, bail};
use futures::StreamExt as _;
use libp2p::Multiaddr;
use pactfs::chunk::ChunkId;
use pactfs::net::proto::{GetChunk, PutChunk};
use pactfs::net::{self, Mode, NetConfig, Request, Response, Role};
use pactfs::promise::{PutToken, Signer};
use std::time::{Duration, Instant};

/// `count` distinct chunks of `size` bytes, the same for the same seed (so
/// a later `pactfs-get` asks for exactly what `pactfs-put` stored).
fn chunks(seed: u64, count: u64, size: usize) -> Vec<(ChunkId, Vec<u8>)> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let base: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    (0..count)
        .map(|i| {
            let mut b = base.clone();
            let n = b.len().min(16);
            b[..n].copy_from_slice(&[i.to_le_bytes(), seed.to_le_bytes()].concat()[..n]);
            (ChunkId::of(&b), b)
        })
        .collect()
}

async fn connect(addr: &Multiaddr, seed: u64) -> Result<(net::NetHandle, libp2p::PeerId, Signer)> {
    let provider = net::peer_of_addr(addr).context("the address needs a /p2p/<peer id> suffix")?;
    let identity_seed = *blake3::hash(&seed.to_le_bytes()).as_bytes();
    let cfg = NetConfig {
        identity_seed,
        mode: Mode::Market,
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

/// Puts `total` bytes as distinct chunks, `streams` requests in flight.
pub async fn put(addr: Multiaddr, total: u64, chunk: u64, streams: usize, seed: u64) -> Result<()> {
    let (handle, provider, signer) = connect(&addr, seed).await?;
    let provider_key = net::node_key_of(&provider).context("provider peer id is not an ed25519 key")?;
    let token = signer.sign(PutToken::new(signer.node_key(), provider_key, 1));
    let count = (total / chunk).max(1);
    let bodies = chunks(seed, count, chunk as usize);
    let bytes = count * chunk;
    let (cpu0, t0) = (cpu_seconds()?, Instant::now());
    let mut puts = futures::stream::iter(bodies.into_iter().map(|(id, body)| {
        let (handle, token) = (handle.clone(), token.clone());
        async move {
            match handle.request(provider, Request::Put(PutChunk { token, id: id.0, body })).await? {
                Response::Stored(_) => Ok(()),
                other => bail!("put refused: {other:?}"),
            }
        }
    }))
    .buffer_unordered(streams);
    while let Some(r) = puts.next().await {
        r?;
    }
    report("pactfs-put", transport_of(&addr), bytes, t0.elapsed().as_secs_f64(), cpu_seconds()? - cpu0)?;
    handle.shutdown();
    Ok(())
}

/// Gets back what `put` stored with the same seed, verifying every chunk.
pub async fn get(addr: Multiaddr, total: u64, chunk: u64, streams: usize, seed: u64) -> Result<()> {
    let (handle, provider, _) = connect(&addr, seed).await?;
    let count = (total / chunk).max(1);
    let ids: Vec<ChunkId> = chunks(seed, count, chunk as usize).into_iter().map(|(id, _)| id).collect();
    let bytes = count * chunk;
    let (cpu0, t0) = (cpu_seconds()?, Instant::now());
    let mut gets = futures::stream::iter(ids.into_iter().map(|id| {
        let handle = handle.clone();
        async move {
            match handle.request(provider, Request::Get(GetChunk { id: id.0, range: None })).await? {
                Response::Chunk(b) if id.verifies(&b) => Ok(()),
                Response::Chunk(_) => bail!("chunk {} came back wrong", id.fmt_short()),
                other => bail!("get refused: {other:?}"),
            }
        }
    }))
    .buffer_unordered(streams);
    while let Some(r) = gets.next().await {
        r?;
    }
    report("pactfs-get", transport_of(&addr), bytes, t0.elapsed().as_secs_f64(), cpu_seconds()? - cpu0)?;
    handle.shutdown();
    Ok(())
}
