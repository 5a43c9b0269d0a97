//! The node's network side: the tokio runtime, the libp2p swarm, the
//! provider (when `[provider] enabled`), the placement agent (when a
//! drive is mounted) and the node's ledger (in the drive's store, else in
//! the provider's), assembled from the config.

use super::durable::{DriveDurability, Tracker};
use super::ledger::{NodeLedger, SEAL_EVERY};
use super::roots::{Roots, publish_roots};
use super::{Home, NodeError, control};
use crate::config::{Config, NetworkMode};
use crate::ledger::Ledger;
use crate::market::{Agent, AgentConfig, ScrubReport};
use crate::net::{self, Mode, NetConfig, NetHandle, Role};
use crate::promise::Signer;
use crate::promise::to_milli;
use crate::provider::{Faults, Provider, ProviderTerms};
use crate::store::Store;
use libp2p::Multiaddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Worker threads of the node's runtime: the swarm and uploads are async;
/// disk work goes to the blocking pool.
const RUNTIME_THREADS: usize = 2;

pub struct Network {
    runtime: tokio::runtime::Runtime,
    stopped: std::sync::atomic::AtomicBool,
    pub net: NetHandle,
    pub provider: Option<Arc<Provider>>,
    agent: Option<Arc<Agent>>,
    drive_store: Option<Arc<Store>>,
    /// `None` when it could not be opened (logged at start): the node
    /// serves on, and `log verify` says why.
    ledger: Option<Arc<NodeLedger>>,
    /// Stops the agent and the sealing task.
    /// Status and `sync --durable` waits (a node with a drive).
    tracker: Option<Tracker>,
    /// The root publisher's state (a node with a drive).
    roots: Option<Arc<Roots>>,
    stop_agent: watch::Sender<bool>,
    mode: Mode,
}

fn parse_addrs(key: &str, values: &[String]) -> Result<Vec<Multiaddr>, NodeError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.parse::<Multiaddr>()
                .map_err(|e| NodeError::Network(format!("network.{key}[{i}] = {v:?}: not a multiaddr: {e}")))
        })
        .collect()
}

impl Network {
    /// Starts the network. `drive_store` is the mounted drive's store (a
    /// client); `None` for a provider-only node.
    pub fn start(home: &Home, cfg: &Config, drive_store: Option<Arc<Store>>) -> Result<Network, NodeError> {
        let seed = home.identity_seed()?;
        let mode = match cfg.network.mode {
            NetworkMode::Hybrid => Mode::Hybrid,
            NetworkMode::Market => Mode::Market,
        };
        let listen = parse_addrs("listen", &cfg.network.listen)?;
        let bootstrap = parse_addrs("bootstrap", &cfg.network.bootstrap)?;
        if let Some((i, a)) = bootstrap.iter().enumerate().find(|(_, a)| net::peer_of_addr(a).is_none()) {
            return Err(NodeError::Network(format!("network.bootstrap[{i}] = \"{a}\": needs a /p2p/<peer id> suffix")));
        }
        let provider_store = if cfg.provider.enabled {
            let dir = cfg.provider.data_dir.clone().unwrap_or_else(|| home.data_dir.join("provider"));
            Some(Arc::new(super::open_store_at(&dir)?))
        } else {
            None
        };
        let ledger = drive_store.clone().or(provider_store.clone()).and_then(|store| {
            let secret = home
                .user_secret()
                .map_err(|e| tracing::warn!(cause = %e, "no user secret: the ledger will not be sealed"))
                .ok();
            match NodeLedger::open(store, Signer::from_seed(&seed), secret) {
                Ok(l) => Some(Arc::new(l)),
                Err(e) => {
                    tracing::error!(cause = %e, "the ledger cannot be opened: running without one");
                    None
                }
            }
        });
        let log = ledger.as_ref().map(|l| l.ledger.clone());
        let provider = match provider_store {
            Some(store) => {
                let terms = ProviderTerms {
                    capacity: cfg.provider.capacity.bytes(),
                    price_per_gib_month: to_milli(cfg.provider.price_per_gib_month),
                    price_per_gib_retrieval: to_milli(cfg.provider.price_per_gib_retrieval),
                    min_duration: cfg.provider.min_duration.as_secs(),
                    max_duration: cfg.provider.max_duration.as_secs(),
                    voluntary_capacity: cfg.provider.voluntary_capacity.bytes(),
                };
                Some(Arc::new(Provider::new(store, Signer::from_seed(&seed), terms, faults(), log.clone())?))
            }
            None => None,
        };
        let role = Role::new(drive_store.is_some(), provider.is_some());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("pactfs-net")
            .enable_all()
            .build()
            .map_err(|e| NodeError::io(&home.data_dir, e))?;
        let netcfg = NetConfig { identity_seed: seed, mode, role, listen, bootstrap, mdns: cfg.network.mdns };
        let service = provider.clone().map(|p| p as Arc<dyn net::Service>);
        let net = runtime.block_on(net::start(netcfg, service)).map_err(|e| NodeError::Network(e.to_string()))?;
        if let Some(p) = &provider {
            // Provider records do not survive a restart: announce again.
            let held = p.held()?;
            tracing::info!(chunks = held.len(), "provider store open");
            net.provide(held);
        }
        let (stop_agent, stop_rx) = watch::channel(false);
        if let Some(l) = &ledger {
            runtime.spawn(seal_periodically(l.clone(), stop_rx.clone()));
        }
        if let Some(p) = provider.clone() {
            if cfg.provider.voluntary_capacity.bytes() > 0 {
                runtime.spawn(super::volunteer::copy_hot(p.clone(), net.clone(), stop_rx.clone()));
            }
            runtime.spawn(sweep(p, stop_rx.clone()));
        }
        let agent = match drive_store.clone() {
            Some(store) => {
                let agent_store = store.clone();
                let agent = Agent::new(store, net.clone(), Signer::from_seed(&seed), mode, agent_config(cfg), log)?;
                let agent = Arc::new(agent);
                runtime.spawn(agent.clone().run(stop_rx.clone()));
                runtime.spawn(super::cache::keep_cache(agent_store, cfg.storage.cache_size.bytes(), stop_rx.clone()));
                runtime.spawn(reload(home.config_file(), agent.clone(), stop_rx.clone()));
                Some(agent)
            }
            None => None,
        };
        let tracker = match (&drive_store, &agent) {
            (Some(s), Some(a)) => Some(Tracker::new(s.clone(), a.clone())),
            _ => None,
        };
        let roots = match (&drive_store, home.user_secret()) {
            (Some(s), Ok(secret)) => {
                let roots = Roots::new(s);
                let signer = Signer::from_seed(&seed);
                let task = publish_roots(roots.clone(), s.clone(), net.clone(), signer, secret, mode, stop_rx);
                runtime.spawn(task);
                Some(roots)
            }
            _ => None,
        };
        Ok(Network {
            runtime,
            stopped: Default::default(),
            net,
            provider,
            agent,
            drive_store,
            ledger,
            tracker,
            roots,
            stop_agent,
            mode,
        })
    }

    /// The node's ledger, for the market to append to; `None` if it could
    /// not be opened.
    pub fn ledger(&self) -> Option<Arc<Ledger>> {
        self.ledger.as_ref().map(|l| l.ledger.clone())
    }

    /// Runs a future on the node's runtime from a plain thread.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// `pactfs node info`.
    pub fn info(&self) -> Result<serde_json::Value, String> {
        let info = self.block_on(self.net.info()).map_err(|e| e.to_string())?;
        let mut v = serde_json::to_value(info).map_err(|e| e.to_string())?;
        v["provider"] = match &self.provider {
            Some(p) => serde_json::to_value(p.stats()).unwrap_or_default(),
            None => serde_json::Value::Null,
        };
        if let Some(a) = &self.agent {
            v["placement"] = serde_json::to_value(a.status()).unwrap_or_default();
        }
        Ok(v)
    }

    /// `pactfs peers`.
    pub fn peers(&self) -> Result<serde_json::Value, String> {
        let peers = self.block_on(self.net.peers()).map_err(|e| e.to_string())?;
        serde_json::to_value(peers).map_err(|e| e.to_string())
    }

    /// `pactfs scrub`.
    pub fn scrub(&self) -> Result<ScrubReport, String> {
        let store = self.drive_store.clone().ok_or("this node has no drive to scrub")?;
        self.block_on(crate::market::scrub(store, self.net.clone(), self.mode == Mode::Hybrid))
    }

    /// What the drive reports in its `user.pactfs.*` attributes; `None`
    /// for a node without a drive.
    pub fn durability(&self) -> Option<Arc<dyn crate::fs::Durability>> {
        let (store, agent) = (self.drive_store.clone()?, self.agent.clone()?);
        Some(Arc::new(DriveDurability::new(store, agent)))
    }

    /// Fetches chunks the drive no longer caches; `None` without a drive.
    pub fn remote(&self) -> Option<Arc<dyn crate::fs::Remote>> {
        let agent = self.agent.clone()?;
        Some(Arc::new(super::cache::AgentRemote { agent, runtime: self.runtime.handle().clone() }))
    }

    pub(super) fn drive_store(&self) -> Option<Arc<Store>> {
        self.drive_store.clone()
    }

    pub(super) fn agent_handle(&self) -> Option<Arc<Agent>> {
        self.agent.clone()
    }

    fn agent(&self) -> Result<&Arc<Agent>, String> {
        self.agent.as_ref().ok_or_else(|| NO_DRIVE.to_string())
    }

    fn tracker(&self) -> Result<&Tracker, String> {
        self.tracker.as_ref().ok_or_else(|| NO_DRIVE.to_string())
    }

    /// Answers the control requests about the network; `None` for others.
    pub fn control(&self, req: &control::Request) -> Option<control::Reply> {
        let reply = |r: Result<serde_json::Value, String>| match r {
            Ok(v) => control::Reply::ok(v),
            Err(e) => control::Reply::err(e),
        };
        Some(match req {
            control::Request::NodeInfo => reply(self.info()),
            control::Request::Peers => reply(self.peers()),
            control::Request::Scrub => {
                reply(self.scrub().and_then(|r| serde_json::to_value(r).map_err(|e| e.to_string())))
            }
            control::Request::LogVerify { .. } | control::Request::LogShow { .. } => self.answer_ledger(req),
            #[cfg(feature = "fault-injection")]
            control::Request::LedgerAppend { .. } => self.answer_ledger(req),
            control::Request::Promises => reply(self.agent().and_then(|a| json(a.promises()))),
            control::Request::Audit { now } => {
                reply(self.agent().and_then(|a| json(if *now { self.block_on(a.audit_now()) } else { a.audits() })))
            }
            control::Request::Reputation => reply(self.agent().and_then(|a| json(a.reputation()))),
            control::Request::Market => reply(self.agent().and_then(|a| json(a.market()))),
            control::Request::Status => reply(
                self.tracker().and_then(|t| t.status().map_err(|e| e.to_string())).and_then(json).and_then(|mut v| {
                    if let Some(r) = &self.roots {
                        v["root"] = json(r.status())?;
                    }
                    Ok(v)
                }),
            ),
            control::Request::DurableStart { ino } => reply(self.tracker().and_then(|t| {
                if let Some(r) = &self.roots {
                    r.want();
                }
                let (token, p) = t.start(*ino).map_err(|e| e.to_string())?;
                let mut v = json(p)?;
                v["token"] = token.into();
                Ok(v)
            })),
            control::Request::Pin { .. } | control::Request::Unpin { .. } | control::Request::Evict { .. } => {
                return self.answer_cache(req);
            }
            control::Request::DurableCheck { token } => {
                reply(self.tracker().and_then(|t| t.check(*token).map_err(|e| e.to_string())).and_then(json))
            }
            _ => return None,
        })
    }

    fn answer_ledger(&self, req: &control::Request) -> control::Reply {
        let answer = match &self.ledger {
            Some(l) => l.answer(req),
            None => Some(Err("this node has no ledger: it could not be opened (see the node's log)".into())),
        };
        match answer {
            Some(Ok(v)) => control::Reply::ok(v),
            Some(Err(e)) => control::Reply::err(e),
            None => control::Reply::err("unsupported"),
        }
    }

    /// Stops placement and the swarm, seals and flushes the ledger, and
    /// flushes the provider's store. The runtime itself goes with the
    /// process.
    pub fn stop(&self) {
        if self.stopped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let _ = self.stop_agent.send(true);
        self.net.shutdown();
        // Give in-flight uploads and answers a moment to finish cleanly.
        self.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
        if let Some(a) = &self.agent {
            a.flush_ledger();
        }
        if let Some(l) = &self.ledger {
            l.close();
        }
        if let Some(p) = &self.provider
            && let Err(e) = p.sync()
        {
            tracing::error!(cause = %e, "provider store flush failed");
        }
    }
}

/// Seals new ledger entries every [`SEAL_EVERY`] until `stop` turns true
/// (the last seal is `Network::stop`'s).
async fn seal_periodically(ledger: Arc<NodeLedger>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SEAL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the node has only just started.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        let l = ledger.clone();
        match tokio::task::spawn_blocking(move || l.seal()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(cause = %e, "sealing the ledger failed; retrying at the next tick"),
            Err(e) => tracing::warn!(cause = %e, "the sealing task failed"),
        }
    }
}

const NO_DRIVE: &str = "this node has no drive (a provider only): ask the node that mounts it";

fn json(v: impl serde::Serialize) -> Result<serde_json::Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// The agent's terms from the config.
pub fn agent_config(cfg: &Config) -> AgentConfig {
    AgentConfig {
        replication: cfg.storage.replication,
        credits_per_month: to_milli(cfg.budget.credits_per_month),
        max_price_per_gib_month: to_milli(cfg.budget.max_price_per_gib_month),
        max_retrieval_price: to_milli(cfg.budget.max_retrieval_price),
        promise_duration: cfg.market.promise_duration.as_secs(),
        renew_window: cfg.market.renew_window.as_secs(),
        audit_interval: cfg.market.audit_interval.as_secs(),
        min_reputation: cfg.market.min_reputation,
        explore_share: cfg.market.explore_share,
        payment_interval: cfg.market.payment_interval.as_secs(),
        repair_grace: cfg.market.repair_grace.as_secs(),
    }
}

/// How often the config file is checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// How often a provider ends expired promises.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Re-reads the config file when it changes and hands the agent its new
/// budget and market terms; other sections need a restart. A file that
/// does not validate is logged and ignored (the running terms stay).
async fn reload(path: std::path::PathBuf, agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = mtime(&path);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RELOAD_EVERY) => {}
            _ = stop.changed() => return,
        }
        let now = mtime(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match Config::load(&path) {
            Ok(cfg) => agent.set_config(agent_config(&cfg)),
            Err(e) => tracing::warn!(cause = %e, "config changed but does not validate: keeping the running terms"),
        }
    }
}

/// Ends a provider's expired promises and frees their chunks.
async fn sweep(provider: Arc<Provider>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = stop.changed() => return,
        }
        let p = provider.clone();
        let _ = tokio::task::spawn_blocking(move || p.sweep(crate::promise::unix_now())).await;
    }
}

/// Faults a test asked for through `PACTFS_FAULTS` (comma-separated);
/// only builds with the `fault-injection` feature look.
fn faults() -> Faults {
    let mut f = Faults::default();
    if cfg!(feature = "fault-injection") {
        for name in std::env::var("PACTFS_FAULTS").unwrap_or_default().split(',') {
            match name.trim() {
                "tamper-ask" => f.tamper_ask = true,
                "forge-promise" => f.forge_promise = true,
                "stale-ask" => f.stale_ask = true,
                "forge-proof" => f.forge_proof = true,
                "" => {}
                other => tracing::warn!(fault = other, "unknown fault ignored"),
            }
        }
        if f.tamper_ask || f.forge_promise || f.stale_ask || f.forge_proof {
            tracing::warn!(faults = ?f, "fault injection on");
        }
    }
    f
}
