//! The market agent: buys storage for pending chunks with signed promises,
//! within the budget, until every chunk has `replication` receipts from
//! distinct providers; pays for what it bought; renews what is still
//! needed and lets the rest expire.
//!
//! One pass (`place`): check the asks heard, take a batch of pending
//! chunks, choose providers per chunk (`asks`), bid per provider for its
//! chunks, and upload each chunk under the promise its provider signed.
//! A chunk counts as placed on a provider only with the provider's signed
//! receipt; it stays pending and pinned until the target holds. Between
//! passes: payments (`pay`) and renewals (`renew`).

mod asks;
mod assign;
mod audit;
mod bid;
mod budget;
mod fetch;
mod held;
mod pay;
mod place;
mod renew;
mod repair;
mod scrub;

pub use asks::AskView;
pub use audit::{AuditView, BrokenView, ProviderReputation};
pub use fetch::FetchError;
pub use held::{Held, State, month_of};
pub use repair::RepairStatus;
pub use scrub::{ScrubReport, scrub};

use crate::chunk::{ChunkId, hex};
use crate::ledger::{Event, Ledger};
use crate::lock;
use crate::net::{Mode, NetHandle};
use crate::promise::{NodeKey, Signer, credits, unix_now};
use crate::reputation::Record;
use crate::store::{Store, StoreError};
use asks::Quote;
use libp2p::PeerId;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Chunks promised to providers (and the promise) but not stored there yet.
type OpenSlots = HashMap<ChunkId, Vec<(NodeKey, [u8; 32])>>;

/// Pause between passes when nothing could be placed.
const IDLE: Duration = Duration::from_millis(500);

/// What the agent works within: `[storage] replication`, `[budget]` and
/// `[market]`, prices in milli-credits and durations in seconds. The node
/// may replace it while the agent runs (a config reload).
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    pub replication: u32,
    pub credits_per_month: u64,
    pub max_price_per_gib_month: u64,
    pub max_retrieval_price: u64,
    pub promise_duration: u64,
    pub renew_window: u64,
    pub audit_interval: u64,
    pub min_reputation: f64,
    pub explore_share: f64,
    pub payment_interval: u64,
    /// How long a provider holding our promises may stay unreachable
    /// before they count as broken and their chunks are re-placed.
    pub repair_grace: u64,
}

/// Placement counters and the agent's view of itself, for `pactfs status`.
#[derive(Default, Clone, Debug, Serialize)]
pub struct AgentStatus {
    pub uploads: u64,
    pub upload_bytes: u64,
    pub failures: u64,
    pub providers_known: usize,
    pub asks_usable: usize,
    pub promises_active: usize,
    /// Milli-credits per month committed by active promises.
    pub committed_per_month: u64,
    pub budget_per_month: u64,
    pub spent_this_month: u64,
    /// Why chunks are waiting, when they are and the agent knows why.
    pub blocked: Option<String>,
    /// Repair: re-placing the chunks of broken promises.
    pub repair: RepairStatus,
}

/// What `pactfs promises` shows of one promise.
#[derive(Clone, Debug, Serialize)]
pub struct PromiseView {
    pub id: String,
    pub provider: String,
    pub chunks: usize,
    /// Of `chunks`, how many are the drive's own metadata now (metadata
    /// snapshot parts, sealed ledger ranges): a promise holding only
    /// those lapses once a newer root supersedes them.
    pub metadata: usize,
    pub bytes: u64,
    /// Milli-credits per GiB-month.
    pub price_per_gib_month: u64,
    pub start: u64,
    pub expiry: u64,
    /// storage or retrieval.
    pub kind: String,
    /// active, expiring, renewed, expired or broken.
    pub state: String,
    pub reason: String,
    pub last_audit: Option<u64>,
    /// The promise this one renews (hex), if it is a renewal.
    pub renews: Option<String>,
}

pub struct Agent {
    store: Arc<Store>,
    net: NetHandle,
    signer: Signer,
    me: NodeKey,
    mode: Mode,
    /// Ledger entries go to a writer thread (an append is a synced disk
    /// write: never on the runtime's threads), which batches them.
    ledger: Mutex<Option<std::sync::mpsc::Sender<Event>>>,
    ledger_writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    cfg: RwLock<AgentConfig>,
    held: Mutex<HashMap<[u8; 32], Held>>,
    reputation: Mutex<HashMap<NodeKey, Record>>,
    quotes: Mutex<HashMap<PeerId, Quote>>,
    /// Providers skipped until the instant, and why.
    backoff: Mutex<HashMap<PeerId, (Instant, String)>>,
    /// Chunks promised to a provider but not yet stored there.
    open: Mutex<OpenSlots>,
    /// Where the next pass resumes in the queue, so chunks that cannot be
    /// placed now do not starve the rest.
    cursor: Mutex<Option<ChunkId>>,
    status: Mutex<AgentStatus>,
    /// Replicas given to newcomers, and in all (explore_share).
    explored: Mutex<(u64, u64)>,
    last_payment: Mutex<Option<Instant>>,
    /// Providers whose last payment failed, and when to try them again
    /// (sooner than the next interval: a node that just started may not
    /// reach them yet).
    pay_retry: Mutex<(Option<Instant>, std::collections::BTreeSet<NodeKey>)>,
    /// The last reason each provider's ask was refused (to log it once).
    refused_asks: Mutex<HashMap<PeerId, String>>,
    /// Monthly cost of the bids awaiting an answer.
    in_flight: budget::InFlight,
    /// Why a bid of this pass was not made (budget, price).
    bid_blocked: Mutex<Option<String>>,
    /// What repair is doing (`repair`).
    repair: repair::Repair,
    /// Promises not to try renewing again before the instant (a renewal
    /// failed, or the promise is left to lapse).
    renew_later: Mutex<HashMap<[u8; 32], Instant>>,
    /// Retrieval promises and what was fetched under them (`fetch`).
    retrievals: fetch::Retrievals,
}

impl Agent {
    pub fn new(
        store: Arc<Store>,
        net: NetHandle,
        signer: Signer,
        mode: Mode,
        cfg: AgentConfig,
        ledger: Option<Arc<Ledger>>,
    ) -> Result<Agent, StoreError> {
        let held: HashMap<[u8; 32], Held> = held::load_held(&store)?.into_iter().map(|h| (h.id(), h)).collect();
        // A broken promise's replicas may not all be released yet (a stop
        // in between): releasing is idempotent, so look at all of them.
        let repair = repair::Repair::new(held.values().filter(|h| h.state == State::Broken).map(Held::id));
        let reputation = held::load_reputation(&store)?.into_iter().collect();
        let retrievals = fetch::Retrievals::new(Agent::load_retrieved(&store), &held);
        let (tx, writer) = match ledger {
            Some(l) => {
                let (tx, rx) = std::sync::mpsc::channel();
                let writer = std::thread::Builder::new()
                    .name("pactfs-ledger".into())
                    .spawn(move || write_ledger(&l, &rx))
                    .map_err(|e| StoreError::io(std::path::Path::new("ledger writer thread"), e))?;
                (Some(tx), Some(writer))
            }
            None => (None, None),
        };
        Ok(Agent {
            me: signer.node_key(),
            store,
            net,
            signer,
            mode,
            ledger: Mutex::new(tx),
            ledger_writer: Mutex::new(writer),
            cfg: RwLock::new(cfg),
            held: Mutex::new(held),
            reputation: Mutex::new(reputation),
            quotes: Mutex::default(),
            backoff: Mutex::default(),
            open: Mutex::default(),
            cursor: Mutex::default(),
            status: Mutex::default(),
            explored: Mutex::default(),
            last_payment: Mutex::default(),
            pay_retry: Mutex::default(),
            in_flight: budget::InFlight::default(),
            refused_asks: Mutex::default(),
            bid_blocked: Mutex::default(),
            repair,
            renew_later: Mutex::default(),
            retrievals,
        })
    }

    pub fn config(&self) -> AgentConfig {
        self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes a new budget and market terms (a config reload); the next
    /// pass works within them.
    pub fn set_config(&self, cfg: AgentConfig) {
        let mut c = self.cfg.write().unwrap_or_else(|p| p.into_inner());
        if *c != cfg {
            tracing::info!(
                budget = %credits(cfg.credits_per_month),
                max_price = %credits(cfg.max_price_per_gib_month),
                "market terms reloaded"
            );
            *c = cfg;
        }
    }

    fn log(&self, event: Event) {
        if let Some(tx) = lock(&self.ledger).as_ref()
            && tx.send(event).is_err()
        {
            tracing::error!("the ledger writer has stopped: an entry is lost");
        }
    }

    /// Writes every ledger entry still queued and stops the writer (at
    /// shutdown, after the agent has stopped).
    pub fn flush_ledger(&self) {
        lock(&self.ledger).take();
        if let Some(w) = lock(&self.ledger_writer).take()
            && w.join().is_err()
        {
            tracing::error!("the ledger writer panicked");
        }
    }

    pub fn status(&self) -> AgentStatus {
        let now = unix_now();
        let mut s = lock(&self.status).clone();
        let held = lock(&self.held);
        s.promises_active = held.values().filter(|h| h.state == State::Active).count();
        s.committed_per_month = committed(&held, now);
        drop(held);
        s.budget_per_month = self.config().credits_per_month;
        s.spent_this_month = held::spent(&self.store, &month_of(now)).unwrap_or(0);
        s.repair = self.repair_status();
        s
    }

    /// Every promise held, newest first.
    pub fn promises(&self) -> Vec<PromiseView> {
        let now = unix_now();
        let window = self.config().renew_window;
        let blobs: std::collections::HashSet<[u8; 32]> =
            self.store.blobs().unwrap_or_default().into_iter().map(|(id, _)| id.0).collect();
        let mut v: Vec<PromiseView> = lock(&self.held)
            .values()
            .map(|h| {
                let t = &h.promise.terms;
                let state = match h.state {
                    State::Active if h.is_storage() && t.expiry <= now + window => "expiring",
                    State::Active => "active",
                    State::Renewed => "renewed",
                    State::Expired => "expired",
                    State::Broken => "broken",
                };
                PromiseView {
                    id: hex(&h.id()),
                    provider: crate::net::peer_id_of(&t.provider).map(|p| p.to_string()).unwrap_or_default(),
                    kind: if h.is_storage() { "storage" } else { "retrieval" }.to_string(),
                    chunks: t.chunks.len(),
                    metadata: t.chunks.iter().filter(|c| blobs.contains(*c)).count(),
                    bytes: t.bytes,
                    price_per_gib_month: t.price,
                    start: t.start,
                    expiry: t.expiry,
                    state: state.to_string(),
                    reason: h.reason.clone(),
                    last_audit: h.last_audit,
                    renews: t.renews.map(|r| hex(&r)),
                }
            })
            .collect();
        v.sort_by(|a, b| b.start.cmp(&a.start).then(a.id.cmp(&b.id)));
        v
    }

    /// The promise that stands for `id` now: `id` itself, or the renewal
    /// that took its place (a receipt names the promise its chunk was
    /// first stored under, and renewals keep the chunk where it is).
    pub fn current_promise(&self, id: &[u8; 32]) -> [u8; 32] {
        let held = lock(&self.held);
        let mut cur = *id;
        // A chain never loops (each renewal is newer), but bound the walk.
        for _ in 0..held.len() {
            match held.get(&cur).and_then(|h| h.renewed_by) {
                Some(next) if next != cur => cur = next,
                _ => break,
            }
        }
        cur
    }

    /// The asks this node sees, best first, with why any is not used.
    pub fn market(&self) -> Vec<AskView> {
        let now = unix_now();
        let cfg = self.config();
        let quotes = lock(&self.quotes).clone();
        let rep = lock(&self.reputation).clone();
        let mut v: Vec<AskView> = quotes
            .values()
            .map(|q| {
                let r = rep.get(&q.key).copied().unwrap_or_default();
                let a = &q.ask.body;
                AskView {
                    provider: q.peer.to_string(),
                    price_per_gib_month: a.price_per_gib_month,
                    price_per_gib_retrieval: a.price_per_gib_retrieval,
                    free_bytes: a.free_bytes,
                    min_duration: a.min_duration,
                    max_duration: a.max_duration,
                    expires: a.expires,
                    reputation: r.score(now),
                    newcomer: !r.has_record(now),
                    latency_ms: q.latency_ms,
                    excluded: self.excluded(q, &cfg, now),
                }
            })
            .collect();
        v.sort_by(|a, b| a.price_per_gib_month.cmp(&b.price_per_gib_month).then(a.provider.cmp(&b.provider)));
        v
    }

    /// Why selection skips a provider now, if it does (reputation aside).
    fn excluded(&self, q: &Quote, cfg: &AgentConfig, now: u64) -> Option<String> {
        if q.ask.body.expires < now {
            return Some("its ask expired".into());
        }
        if q.ask.body.price_per_gib_month > cfg.max_price_per_gib_month {
            return Some(format!(
                "asks {} per GiB-month, above the budget's maximum {}",
                credits(q.ask.body.price_per_gib_month),
                credits(cfg.max_price_per_gib_month)
            ));
        }
        if let Some((until, why)) = lock(&self.backoff).get(&q.peer)
            && *until > Instant::now()
        {
            return Some(format!("skipped for now: {why}"));
        }
        let r = lock(&self.reputation).get(&q.key).copied().unwrap_or_default();
        if r.has_record(now) && r.score(now) < cfg.min_reputation {
            return Some(format!("reputation {:.2} below the minimum {}", r.score(now), cfg.min_reputation));
        }
        None
    }

    fn back_off(&self, peer: PeerId, for_: Duration, why: String) {
        tracing::debug!(%peer, cause = %why, "provider skipped for {:?}", for_);
        lock(&self.backoff).insert(peer, (Instant::now() + for_, why));
    }

    fn set_blocked(&self, why: Option<String>) {
        let mut s = lock(&self.status);
        if s.blocked != why {
            if let Some(w) = &why {
                tracing::info!(reason = %w, "placement is waiting");
            }
            s.blocked = why;
        }
    }

    fn update_reputation(&self, provider: NodeKey, kept: bool) {
        let now = unix_now();
        let rec = {
            let mut rep = lock(&self.reputation);
            let r = rep.entry(provider).or_default();
            if kept {
                r.kept(now)
            } else {
                r.broke(now)
            }
            *r
        };
        if let Err(e) = held::save_reputation(&self.store, &provider, &rec) {
            tracing::error!(cause = %e, "cannot save a reputation record");
        }
    }

    fn save(&self, h: &Held) {
        if let Err(e) = held::save_held(&self.store, h) {
            tracing::error!(cause = %e, "cannot save a promise");
        }
    }

    /// Places, pays and renews until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let placed = match self.pass().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(cause = %e, "placement pass failed");
                    0
                }
            };
            self.renew_and_expire().await;
            self.repair_step().await;
            self.audit_step().await;
            self.pay_due().await;
            if *stop.borrow() {
                break;
            }
            if placed == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }

    /// Runs store work on the blocking pool.
    async fn on_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, String> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(&store)).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
    }
}

/// Most entries written in one batch (one synced write).
const LEDGER_BATCH: usize = 512;

/// The writer thread: appends entries in batches until every sender is gone.
fn write_ledger(ledger: &Ledger, rx: &std::sync::mpsc::Receiver<Event>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < LEDGER_BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let n = batch.len();
        if let Err(e) = ledger.append_many(batch) {
            tracing::error!(cause = %e, entries = n, "cannot append to the ledger: entries lost");
        }
    }
}

/// Milli-credits per month committed by the active promises.
fn committed(held: &HashMap<[u8; 32], Held>, now: u64) -> u64 {
    held.values()
        .filter(|h| h.state == State::Active && h.promise.terms.expiry > now)
        .map(|h| h.promise.terms.monthly_cost())
        .sum()
}

fn rand_nonce() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests;
