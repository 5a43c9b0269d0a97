//! The node's network side: the tokio runtime, the libp2p swarm, the
//! provider (when `[provider] enabled`), the placement agent (when a
//! drive is mounted) and the node's ledger (in the drive's store, else in
//! the provider's), assembled from the config.

use super::ledger::{NodeLedger, SEAL_EVERY};
use super::{Home, NodeError, control};
use crate::config::{Config, NetworkMode};
use crate::ledger::Ledger;
use crate::market::{Agent, ScrubReport};
use crate::net::{self, Mode, NetConfig, NetHandle, Role};
use crate::promise::Signer;
use crate::provider::Provider;
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
        let (provider, provider_store) = if cfg.provider.enabled {
            let dir = cfg.provider.data_dir.clone().unwrap_or_else(|| home.data_dir.join("provider"));
            let store = Arc::new(super::open_store_at(&dir)?);
            let provider = Provider::new(store.clone(), Signer::from_seed(&seed), cfg.provider.capacity.bytes())?;
            (Some(Arc::new(provider)), Some(store))
        } else {
            (None, None)
        };
        let ledger = drive_store.clone().or(provider_store).and_then(|store| {
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
        let agent = drive_store.clone().map(|store| {
            let agent = Arc::new(Agent::new(store, net.clone(), Signer::from_seed(&seed), cfg.storage.replication));
            runtime.spawn(agent.clone().run(stop_rx));
            agent
        });
        Ok(Network {
            runtime,
            stopped: Default::default(),
            net,
            provider,
            agent,
            drive_store,
            ledger,
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
            v["placement"] = serde_json::to_value(a.stats()).unwrap_or_default();
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
            control::Request::LogVerify { .. } | control::Request::LogShow { .. } => self.answer_ledger(req),
            #[cfg(feature = "fault-injection")]
            control::Request::LedgerAppend { .. } => self.answer_ledger(req),
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
