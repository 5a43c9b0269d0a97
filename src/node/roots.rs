//! Publishing the drive's root, and restoring a drive from it.
//!
//! The publisher (`publish_roots`, one task per mounted node) takes a
//! snapshot when a durable sync asked for one, or every
//! [`SNAPSHOT_EVERY`] when the store changed, but only when nothing waits
//! for placement (a snapshot then names only chunks that have holders).
//! It keeps the parts as blobs (placed like data), and once every part
//! has a verified replica it signs a root naming them with their
//! holders, keeps it, publishes it (a DHT record in hybrid mode; in both
//! modes sent to the parts' holders, which keep the newest per client),
//! and only then releases the parts of older snapshots.
//!
//! [`restore`] is the first mount of a home made by `init --restore`: on a
//! temporary store and network it finds the newest root that verifies
//! (DHT records and the providers it learns of), fetches the parts from
//! their holders, loads them into the empty drive store and clears the
//! marker; then the node mounts as usual, every chunk remote.

use super::network::Network;
use super::{Home, NodeError};
use crate::chunk::{ChunkId, UserSecret};
use crate::config::Config;
use crate::market::Agent;
use crate::net::{Mode, NetHandle, Request, Response, peer_id_of};
use crate::promise::{NodeKey, Signer, decode_root, encode_root, root_dht_key};
use crate::snapshot::{self, PART_LABEL, PartRef};
use crate::store::{BlobRecord, Store, StoreError};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the publisher looks.
const TICK: Duration = Duration::from_secs(2);
/// A changed store is snapshotted at most this often unless a durable
/// sync asks.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(900);
/// The published root, in the drive store's `market` records.
const MINE: &[u8] = b"root/mine";
/// How long a restore waits for a root before it gives up.
const RESTORE_WAIT: Duration = Duration::from_secs(180);
/// An answer to a root request, at most.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// What `status` shows of the root.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RootStatus {
    /// The newest root published (0: none yet).
    pub seq: u64,
    /// Its time (unix seconds).
    pub at: u64,
    pub parts: usize,
    /// A snapshot is kept and waits for its parts to be placed.
    pub placing: bool,
    /// The newest root covers every durable sync started so far.
    pub synced: bool,
}

/// The publisher's shared state.
pub struct Roots {
    /// Durable syncs started (each wants a root taken after it).
    wanted: AtomicU64,
    /// The `wanted` count the newest root's snapshot was taken at.
    covered: AtomicU64,
    status: Mutex<RootStatus>,
}

impl Roots {
    pub fn new(store: &Store) -> Arc<Roots> {
        let mut status = RootStatus::default();
        if let Some(root) = load_mine(store) {
            status = RootStatus {
                seq: root.body.seq,
                at: root.body.at,
                parts: root.body.ids.len(),
                ..RootStatus::default()
            };
        }
        Arc::new(Roots { wanted: AtomicU64::new(0), covered: AtomicU64::new(0), status: Mutex::new(status) })
    }

    /// A durable sync started: snapshot once it is placed.
    pub fn want(&self) {
        self.wanted.fetch_add(1, Ordering::SeqCst);
    }

    pub fn status(&self) -> RootStatus {
        let mut s = crate::lock(&self.status).clone();
        s.synced = s.seq > 0 && self.covered.load(Ordering::SeqCst) >= self.wanted.load(Ordering::SeqCst);
        s
    }

    fn set(&self, f: impl FnOnce(&mut RootStatus)) {
        f(&mut crate::lock(&self.status));
    }
}

fn load_mine(store: &Store) -> Option<crate::promise::Signed<crate::promise::Root>> {
    let bytes = store.market_get(MINE).ok()??;
    decode_root(&bytes, None).ok()
}

/// The publisher task (see the module doc) until `stop` turns true.
pub async fn publish_roots(
    roots: Arc<Roots>,
    store: Arc<Store>,
    net: NetHandle,
    signer: Signer,
    secret: UserSecret,
    mode: Mode,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seq = None;
    // The first periodic snapshot comes one period after start (a durable
    // sync asks sooner).
    let mut last_taken: Option<Instant> = Some(Instant::now());
    let mut placing: Option<Vec<PartRef>> = None;
    // The `wanted` count when the snapshot being placed was taken.
    let mut placing_gen = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        if placing.is_none() {
            let changed = last_seq != Some(store.write_seq());
            let due = last_taken.is_none_or(|t| t.elapsed() >= SNAPSHOT_EVERY) && changed;
            let wanted = roots.wanted.load(Ordering::SeqCst);
            if !(wanted > roots.covered.load(Ordering::SeqCst) || due) {
                continue;
            }
            let (s, sec) = (store.clone(), secret.clone());
            let taken = tokio::task::spawn_blocking(move || take(&s, &sec)).await;
            match taken {
                Ok(Ok(Some(parts))) => {
                    last_seq = Some(store.write_seq());
                    last_taken = Some(Instant::now());
                    let same =
                        load_mine(&store).is_some_and(|r| r.body.ids == parts.iter().map(|p| p.id).collect::<Vec<_>>());
                    if same {
                        tracing::debug!("metadata unchanged since the last root");
                        roots.covered.fetch_max(wanted, Ordering::SeqCst);
                    } else {
                        roots.set(|s| s.placing = true);
                        placing = Some(parts);
                        placing_gen = wanted;
                    }
                }
                // Something waits for placement: look again at the next tick.
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::warn!(cause = %e, "taking a metadata snapshot failed"),
                Err(e) => tracing::warn!(cause = %e, "the snapshot task failed"),
            }
        }
        let Some(parts) = placing.as_mut() else { continue };
        let s = store.clone();
        let ids: Vec<ChunkId> = parts.iter().map(|p| ChunkId(p.id)).collect();
        let holders = tokio::task::spawn_blocking(move || placed_holders(&s, &ids)).await;
        let holders = match holders {
            Ok(Ok(Some(h))) => h,
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => {
                tracing::warn!(cause = %e, "reading the snapshot's placement failed");
                continue;
            }
            Err(_) => continue,
        };
        for (p, h) in parts.iter_mut().zip(holders) {
            p.holders = h.into_iter().map(NodeKey).collect();
        }
        let parts = placing.take().unwrap_or_default();
        match publish(&store, &net, &signer, &secret, mode, &parts).await {
            Ok(root) => {
                roots.set(|s| *s = RootStatus { seq: root.0, at: root.1, parts: parts.len(), ..RootStatus::default() });
                roots.covered.fetch_max(placing_gen, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::warn!(cause = %e, "publishing the root failed; retrying");
                placing = Some(parts);
            }
        }
    }
}

/// Takes a snapshot and keeps its parts, unless chunks wait for placement.
fn take(store: &Store, secret: &UserSecret) -> Result<Option<Vec<PartRef>>, NodeError> {
    if !store.pending_ids(None, 1)?.is_empty() {
        return Ok(None);
    }
    let parts = snapshot::take(store, secret).map_err(|e| NodeError::Control(e.to_string()))?;
    let n = parts.len();
    let mut refs = Vec::with_capacity(n);
    for (i, p) in parts.into_iter().enumerate() {
        let rec = BlobRecord {
            what: format!("{PART_LABEL} part {i}/{n}"),
            key: crate::chunk::ChunkKey(p.part.key),
            len: p.part.len,
        };
        store.keep_blob(&ChunkId(p.part.id), &p.sealed, &rec)?;
        refs.push(p.part);
    }
    tracing::info!(parts = n, "metadata snapshot kept; placing it");
    Ok(Some(refs))
}

/// Every part's holders, once each has at least one verified replica.
fn placed_holders(store: &Store, ids: &[ChunkId]) -> Result<Option<Vec<Vec<[u8; 32]>>>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let holders = store.replica_holders(id)?;
        if holders.is_empty() {
            return Ok(None);
        }
        out.push(holders);
    }
    Ok(Some(out))
}

/// Signs, keeps and publishes the root; releases older snapshots' parts.
async fn publish(
    store: &Arc<Store>,
    net: &NetHandle,
    signer: &Signer,
    secret: &UserSecret,
    mode: Mode,
    parts: &[PartRef],
) -> Result<(u64, u64), NodeError> {
    let seq = load_mine(store).map_or(1, |r| r.body.seq + 1);
    let mut salt = [0u8; 16];
    SystemRandom::new().fill(&mut salt).map_err(|_| NodeError::Random)?;
    let ledger: Vec<[u8; 32]> =
        store.blobs()?.into_iter().filter(|(_, b)| b.what.starts_with("ledger")).map(|(id, _)| id.0).collect();
    let root = snapshot::make_root(signer, secret, seq, salt, parts, &ledger)
        .map_err(|e| NodeError::Control(e.to_string()))?;
    let bytes = encode_root(&root);
    store.market_put(MINE, &bytes, true)?;
    if mode == Mode::Hybrid {
        net.put_root(bytes.clone());
    }
    let holders: BTreeSet<NodeKey> = parts.iter().flat_map(|p| p.holders.iter().copied()).collect();
    let mut kept = 0;
    for h in &holders {
        let Some(peer) = peer_id_of(h) else { continue };
        match tokio::time::timeout(ASK_TIMEOUT, net.request(peer, Request::PutRoot(bytes.clone()))).await {
            Ok(Ok(Response::Root(Some(held)))) if held == bytes => kept += 1,
            Ok(Ok(other)) => tracing::debug!(%peer, answer = ?other, "a holder did not keep the root"),
            Ok(Err(e)) => tracing::debug!(%peer, cause = %e, "root not sent"),
            Err(_) => tracing::debug!(%peer, "root not answered in time"),
        }
    }
    if kept == 0 && mode == Mode::Market {
        return Err(NodeError::Network("no holder of the snapshot kept the root".into()));
    }
    let current: BTreeSet<[u8; 32]> = parts.iter().map(|p| p.id).collect();
    for (id, b) in store.blobs()? {
        if b.what.starts_with(PART_LABEL) && !current.contains(&id.0) {
            store.release_blob(&id)?;
        }
    }
    tracing::info!(seq, parts = parts.len(), holders_kept = kept, "root published");
    Ok((seq, root.body.at))
}

/// The first mount of a home made by `init --restore` (module doc).
pub fn restore(home: &Home, cfg: &Config, secret: &UserSecret, store: &Store) -> Result<(), NodeError> {
    if !store.is_fresh()? {
        return Err(NodeError::Control(
            "this home waits for a restore but its store already holds files; remove restore.pending to mount it as it is".into(),
        ));
    }
    let tmp = home.data_dir.join("restore-tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let fetched = {
        let tmp_store = Arc::new(super::open_store_at(&tmp)?);
        let network = Network::start(home, cfg, Some(tmp_store))?;
        let agent = network.agent_handle().ok_or_else(|| NodeError::Network("no agent to fetch with".into()))?;
        let me = network.net.node_key();
        let found = network.block_on(find_and_fetch(&network.net, &agent, me, secret, cfg));
        network.stop();
        found
    };
    let _ = std::fs::remove_dir_all(&tmp);
    let (root, parts, bodies) = fetched?;
    let loaded = snapshot::load(store, &parts, bodies).map_err(|e| NodeError::Control(format!("restore: {e}")))?;
    store.market_put(MINE, &encode_root(&root), true)?;
    home.restore_done()?;
    tracing::info!(seq = root.body.seq, parts = parts.len(), entries = loaded, "drive restored from its root");
    eprintln!("pactfs: restored the drive from root {} ({} parts, {loaded} records)", root.body.seq, parts.len());
    Ok(())
}

type Fetched = (crate::promise::Signed<crate::promise::Root>, Vec<PartRef>, Vec<Vec<u8>>);

async fn find_and_fetch(
    net: &NetHandle,
    agent: &Arc<Agent>,
    me: NodeKey,
    secret: &UserSecret,
    cfg: &Config,
) -> Result<Fetched, NodeError> {
    let started = Instant::now();
    let hybrid = cfg.network.mode == crate::config::NetworkMode::Hybrid;
    let mut last_note = None::<Instant>;
    let root = loop {
        let mut found: Vec<Vec<u8>> = Vec::new();
        if hybrid && let Ok(records) = net.find_roots(root_dht_key(&me)).await {
            found.extend(records);
        }
        let providers = net.providers().await.unwrap_or_default();
        for peer in &providers {
            if let Ok(Ok(Response::Root(Some(b)))) =
                tokio::time::timeout(ASK_TIMEOUT, net.request(*peer, Request::GetRoot(me))).await
            {
                found.push(b);
            }
        }
        if let Some(root) = snapshot::newest(found.iter().map(|b| b.as_slice()), &me) {
            break root;
        }
        if started.elapsed() > RESTORE_WAIT {
            return Err(NodeError::Network(format!(
                "restore: no root of this node found in {} s ({} providers known{}); are network.bootstrap and the mode right?",
                RESTORE_WAIT.as_secs(),
                providers.len(),
                if hybrid { ", DHT searched" } else { "" }
            )));
        }
        if last_note.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            let peers = net.peers().await.map(|p| p.len()).unwrap_or(0);
            tracing::info!(peers, providers = providers.len(), "restore: waiting for peers that know this node's root");
            eprintln!("pactfs: restore: looking for this drive's root ({peers} peers, {} providers)", providers.len());
            last_note = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let parts = snapshot::root_parts(&root.body, secret).map_err(|e| NodeError::Control(format!("restore: {e}")))?;
    tracing::info!(seq = root.body.seq, parts = parts.len(), "restore: root found; fetching the snapshot");
    let mut bodies = Vec::with_capacity(parts.len());
    for p in &parts {
        let body = agent
            .fetch_from_holders(ChunkId(p.id), u64::from(p.len), p.holders.clone())
            .await
            .map_err(|e| NodeError::Network(format!("restore: snapshot part: {e}")))?;
        bodies.push(body.into_bytes());
    }
    Ok((root, parts, bodies))
}
