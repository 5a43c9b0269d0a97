//! `pactfs scrub`: fetch every recorded replica back from its holder and
//! verify it against its id. The id is the BLAKE3 of the sealed bytes, so a
//! copy that verifies is byte for byte the one that was uploaded.

use crate::chunk::ChunkId;
use crate::net::{NetHandle, Response, peer_id_of, proto::GetChunk};
use crate::promise::{NodeKey, Receipt, Signed};
use crate::store::Store;
use futures::StreamExt;
use libp2p::PeerId;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

const PARALLEL: usize = 8;

#[derive(Clone, Debug, Default, Serialize)]
pub struct ScrubReport {
    /// Distinct chunks with at least one replica.
    pub chunks: u64,
    pub replicas: u64,
    pub verified: u64,
    /// Answers that do not hash to the chunk id.
    pub bad: u64,
    /// Holders that could not be reached or refused.
    pub unreachable: u64,
    /// Replicas whose holder the DHT also names (hybrid mode).
    pub dht_found: u64,
    /// One line per problem, for people.
    pub problems: Vec<String>,
}

enum Outcome {
    Verified { in_dht: bool },
    Bad(String),
    Unreachable(String),
}

/// Fetches one replica and checks it against the chunk id (the id is the
/// BLAKE3 of the sealed bytes, so a copy that verifies is the local copy).
async fn check_replica(net: &NetHandle, id: ChunkId, peer: PeerId, promise: [u8; 32]) -> Result<(), Outcome> {
    let answer = super::fetch::get_retrying(net, peer, GetChunk { promise, id: id.0, range: None }).await;
    match answer {
        Ok(Response::Chunk(b)) if id.verifies(&b) => Ok(()),
        Ok(Response::Chunk(_)) => {
            Err(Outcome::Bad(format!("{peer} returned bytes that do not hash to {}", id.fmt_short())))
        }
        Ok(Response::Refused(r)) => Err(Outcome::Unreachable(format!("{peer} refused: {}", r.message))),
        Ok(other) => Err(Outcome::Bad(format!("{peer} answered {other:?}"))),
        Err(e) => Err(Outcome::Unreachable(e.to_string())),
    }
}

/// Checks every replica of one chunk, with one DHT lookup for all of them.
async fn check_chunk(net: NetHandle, id: ChunkId, holders: Vec<(NodeKey, [u8; 32])>, dht: bool) -> Vec<Outcome> {
    let in_dht = if dht { net.find_holders(id.0).await.unwrap_or_default() } else { Vec::new() };
    let checks = holders.into_iter().map(|(holder, promise)| {
        let (net, in_dht) = (&net, &in_dht);
        async move {
            let Some(peer) = peer_id_of(&holder) else { return Outcome::Bad("holder key is not a valid peer".into()) };
            match check_replica(net, id, peer, promise).await {
                Ok(()) => Outcome::Verified { in_dht: in_dht.contains(&peer) },
                Err(o) => o,
            }
        }
    });
    futures::future::join_all(checks).await
}

/// Checks every replica; `dht` also looks each chunk's holders up in the DHT.
pub async fn scrub(store: Arc<Store>, net: NetHandle, dht: bool) -> Result<ScrubReport, String> {
    let replicas = tokio::task::spawn_blocking(move || store.all_replicas())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut by_chunk: BTreeMap<ChunkId, Vec<(NodeKey, [u8; 32])>> = BTreeMap::new();
    for (id, h, receipt) in &replicas {
        // The receipt names the promise to fetch under; one that does not
        // decode fetches under none and is refused, which the report shows.
        let promise = Signed::<Receipt>::decode_stored(receipt).map_or([0; 32], |r| r.body.promise);
        by_chunk.entry(*id).or_default().push((NodeKey(*h), promise));
    }
    let mut report =
        ScrubReport { chunks: by_chunk.len() as u64, replicas: replicas.len() as u64, ..ScrubReport::default() };
    let mut outcomes = futures::stream::iter(by_chunk)
        .map(|(id, holders)| check_chunk(net.clone(), id, holders, dht))
        .buffer_unordered(PARALLEL);
    while let Some(chunk) = outcomes.next().await {
        for o in chunk {
            match o {
                Outcome::Verified { in_dht } => {
                    report.verified += 1;
                    report.dht_found += u64::from(in_dht);
                }
                Outcome::Bad(why) => {
                    report.bad += 1;
                    report.problems.push(why);
                }
                Outcome::Unreachable(why) => {
                    report.unreachable += 1;
                    report.problems.push(why);
                }
            }
        }
    }
    Ok(report)
}
