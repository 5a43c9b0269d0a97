//! A provider's voluntary replication, driven from the node: every few
//! seconds it copies hot chunks other providers announced into the room
//! of `[provider] voluntary_capacity`, verifying each against its id, and
//! in hybrid mode announces each copy as a DHT provider record (in market
//! mode the provider's own announcements list them).

use crate::chunk::{ChunkId, Verified};
use crate::net::proto::GetChunk;
use crate::net::{NetHandle, Request, Response};
use crate::provider::Provider;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const COPY_EVERY: Duration = Duration::from_secs(5);
/// Copies fetched per pass, and at once.
const COPIES_PER_PASS: usize = 64;
const COPIES_AT_ONCE: usize = 4;

pub(super) async fn copy_hot(provider: Arc<Provider>, net: NetHandle, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(COPY_EVERY) => {}
            _ = stop.changed() => return,
        }
        let Ok(listings) = net.listings().await else { return };
        let me = net.local_peer_id();
        let listed: Vec<_> = listings.into_iter().filter(|l| l.peer != me).map(|l| (l.peer, l.hot)).collect();
        if listed.is_empty() {
            continue;
        }
        let p = provider.clone();
        let Ok(wanted) = tokio::task::spawn_blocking(move || p.copies_wanted(&listed, COPIES_PER_PASS)).await else {
            continue;
        };
        let fetched: Vec<Option<Verified>> = futures::stream::iter(wanted)
            .map(|(peer, id)| {
                let net = net.clone();
                async move { copy_one(&net, peer, id).await }
            })
            .buffer_unordered(COPIES_AT_ONCE)
            .collect()
            .await;
        let p = provider.clone();
        let kept = tokio::task::spawn_blocking(move || {
            let mut kept = Vec::new();
            for body in fetched.into_iter().flatten() {
                match p.keep_copy(&body) {
                    Ok(true) => kept.push(body.id().0),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(chunk = %body.id().fmt_short(), cause = %e, "cannot keep a voluntary copy")
                    }
                }
            }
            kept
        })
        .await
        .unwrap_or_default();
        if !kept.is_empty() {
            tracing::info!(copies = kept.len(), "voluntary copies kept");
            net.provide(kept);
        }
    }
}

async fn copy_one(net: &NetHandle, peer: libp2p::PeerId, id: ChunkId) -> Option<Verified> {
    match net.request(peer, Request::Get(GetChunk { promise: [0; 32], id: id.0, range: None })).await {
        Ok(Response::Chunk(b)) => match Verified::check(id, b) {
            Ok(v) => Some(v),
            Err(b) => {
                tracing::warn!(%peer, chunk = %id.fmt_short(), len = b.len(), "a hot chunk copied does not hash to its id");
                None
            }
        },
        Ok(Response::Refused(r)) => {
            tracing::debug!(%peer, chunk = %id.fmt_short(), why = %r.message, "hot chunk copy refused");
            None
        }
        Ok(other) => {
            tracing::debug!(%peer, answer = ?other, "unexpected answer to a hot chunk copy");
            None
        }
        Err(e) => {
            tracing::debug!(%peer, cause = %e, "hot chunk copy failed");
            None
        }
    }
}
