//! The node's network side: the tokio runtime, the libp2p swarm, the
//! provider (when `[provider] enabled`) and the placement agent (when a
//! drive is mounted), assembled from the config.

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
        let provider = if cfg.provider.enabled {
            let dir = cfg.provider.data_dir.clone().unwrap_or_else(|| home.data_dir.join("provider"));
            let store = Arc::new(super::open_store_at(&dir)?);
            let terms = ProviderTerms {
                capacity: cfg.provider.capacity.bytes(),
                price_per_gib_month: to_milli(cfg.provider.price_per_gib_month),
                price_per_gib_retrieval: to_milli(cfg.provider.price_per_gib_retrieval),
                min_duration: cfg.provider.min_duration.as_secs(),
                max_duration: cfg.provider.max_duration.as_secs(),
            };
            let ledger = Some(Arc::new(Ledger));
            Some(Arc::new(Provider::new(store, Signer::from_seed(&seed), terms, faults(), ledger)?))
        } else {
            None
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
        if let Some(p) = provider.clone() {
            runtime.spawn(sweep(p, stop_rx.clone()));
        }
        let agent = match drive_store.clone() {
            Some(store) => {
                let ledger = Some(Arc::new(Ledger));
                let agent = Agent::new(store, net.clone(), Signer::from_seed(&seed), mode, agent_config(cfg), ledger)?;
                let agent = Arc::new(agent);
                runtime.spawn(agent.clone().run(stop_rx.clone()));
                runtime.spawn(reload(home.config_file(), agent.clone(), stop_rx));
                Some(agent)
            }
            None => None,
        };
        Ok(Network { runtime, stopped: Default::default(), net, provider, agent, drive_store, stop_agent, mode })
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
            _ => return None,
        })
    }

    /// Stops placement and the swarm, and flushes the provider's store.
    /// The runtime itself goes with the process.
    pub fn stop(&self) {
        if self.stopped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let _ = self.stop_agent.send(true);
        self.net.shutdown();
        // Give in-flight uploads and answers a moment to finish cleanly.
        self.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
        if let Some(p) = &self.provider
            && let Err(e) = p.sync()
        {
            tracing::error!(cause = %e, "provider store flush failed");
        }
    }
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
                "" => {}
                other => tracing::warn!(fault = other, "unknown fault ignored"),
            }
        }
        if f.tamper_ask || f.forge_promise || f.stale_ask {
            tracing::warn!(faults = ?f, "fault injection on");
        }
    }
    f
}
