//! `pactfs scrub`: fetch every recorded replica back from its holder and
//! verify it, byte for byte, against its id and the local copy.

use crate::chunk::ChunkId;
use crate::net::{NetHandle, Refusal, Request, Response, peer_id_of, proto::GetChunk};
use crate::promise::NodeKey;
use crate::store::Store;
use futures::StreamExt;
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;

const PARALLEL: usize = 8;

#[derive(Clone, Debug, Default, Serialize)]
pub struct ScrubReport {
    /// Distinct chunks with at least one replica.
    pub chunks: u64,
    pub replicas: u64,
    pub verified: u64,
    /// Answers that do not hash to the id or differ from the local copy.
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

async fn check_one(store: Arc<Store>, net: NetHandle, id: ChunkId, holder: NodeKey, dht: bool) -> Outcome {
    let Some(peer) = peer_id_of(&holder) else { return Outcome::Bad("holder key is not a valid peer".into()) };
    let mut answer = net.request(peer, Request::Get(GetChunk { id: id.0, range: None })).await;
    // A provider busy with uploads asks us to come back: do, a few times.
    for wait_ms in [100, 300, 1000, 3000] {
        match &answer {
            Ok(Response::Refused(r)) if r.why == Refusal::Busy => {
                tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
                answer = net.request(peer, Request::Get(GetChunk { id: id.0, range: None })).await;
            }
            _ => break,
        }
    }
    let fetched = match answer {
        Ok(Response::Chunk(b)) => b,
        Ok(Response::Refused(r)) => return Outcome::Unreachable(format!("{peer} refused: {}", r.message)),
        Ok(other) => return Outcome::Bad(format!("{peer} answered {other:?}")),
        Err(e) => return Outcome::Unreachable(e.to_string()),
    };
    if !id.verifies(&fetched) {
        return Outcome::Bad(format!("{peer} returned bytes that do not hash to {}", id.fmt_short()));
    }
    let local = tokio::task::spawn_blocking(move || store.chunk_body(&id)).await;
    if let Ok(Ok(local)) = local
        && local != fetched
    {
        return Outcome::Bad(format!("{peer}: copy differs from the local one"));
    }
    let in_dht = dht && net.find_holders(id.0).await.is_ok_and(|h| h.contains(&peer));
    Outcome::Verified { in_dht }
}

/// Checks every replica; `dht` also looks each holder up in the DHT.
pub async fn scrub(store: Arc<Store>, net: NetHandle, dht: bool) -> Result<ScrubReport, String> {
    let s = store.clone();
    let replicas = tokio::task::spawn_blocking(move || s.all_replicas())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut report = ScrubReport {
        chunks: replicas.iter().map(|(id, _)| *id).collect::<HashSet<_>>().len() as u64,
        replicas: replicas.len() as u64,
        ..ScrubReport::default()
    };
    let mut outcomes = futures::stream::iter(replicas)
        .map(|(id, h)| check_one(store.clone(), net.clone(), id, NodeKey(h), dht))
        .buffer_unordered(PARALLEL);
    while let Some(o) = outcomes.next().await {
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
    Ok(report)
}
