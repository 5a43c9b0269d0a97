//! `pactfs provider`: a node that sells storage and runs no drive. It
//! serves until SIGINT, SIGTERM or a `Shutdown` on its control socket,
//! then flushes its store and exits.

use super::{HomeLock, Network, NodeError, control, load_config};
use super::{block_stop_signals, limit_malloc_arenas, wait_for_signal};
use crate::node::Home;
use std::sync::{Arc, mpsc};

/// Runs a provider node in this process until it is told to stop. `ready`
/// is called once it listens (or with the error that prevented it).
pub fn run_provider(home: &Home, lock: HomeLock, ready: impl FnOnce(Result<(), String>)) -> Result<(), NodeError> {
    let signals = block_stop_signals();
    limit_malloc_arenas();
    let started = (|| -> Result<_, NodeError> {
        let mut cfg = load_config(home)?;
        // `pactfs provider` is the explicit request to sell storage.
        cfg.provider.enabled = true;
        let network = Arc::new(Network::start(home, &cfg, None)?);
        let listener = control::bind(&home.control_socket())?;
        Ok((network, listener))
    })();
    let (network, listener) = match started {
        Ok(s) => s,
        Err(e) => {
            ready(Err(e.to_string()));
            return Err(e);
        }
    };
    let (tx, rx) = mpsc::channel::<&'static str>();
    let signal_tx = tx.clone();
    std::thread::spawn(move || {
        let _ = signal_tx.send(wait_for_signal(&signals));
    });
    let control_net = network.clone();
    std::thread::spawn(move || {
        control::serve(listener, move |req| match req {
            control::Request::Ping => control::Reply::ok(serde_json::json!({ "pid": std::process::id() })),
            control::Request::Stats => match &control_net.provider {
                Some(p) => control::Reply::ok(serde_json::to_value(p.stats()).unwrap_or_default()),
                None => control::Reply::err("not a provider"),
            },
            control::Request::Shutdown => {
                let _ = tx.send("shutdown");
                control::Reply::ok(serde_json::Value::Null)
            }
            other => control_net.control(&other).unwrap_or_else(|| control::Reply::err("unsupported")),
        });
    });
    tracing::info!(peer = %network.net.local_peer_id(), "provider running");
    ready(Ok(()));
    let why = rx.recv().unwrap_or("control channel closed");
    tracing::info!(reason = why, "stopping");
    network.stop();
    let _ = std::fs::remove_file(home.control_socket());
    tracing::info!("stopped");
    // As with a mount: the home lock goes with the process.
    std::mem::forget(lock);
    Ok(())
}
