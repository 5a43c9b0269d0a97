//! The control socket: how `pactfs` commands reach a running node.
//!
//! A Unix socket under the data directory, owner-only (0600). One request
//! per connection: a JSON line in, a JSON line out. No command opens the
//! node's RocksDB behind its back; they ask the node over this socket.

use super::NodeError;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest request or reply line accepted.
const MAX_LINE: u64 = 1024 * 1024;

/// What a command asks of the node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Stats,
    /// This node's peer id, listen addresses, mode and role.
    NodeInfo,
    /// Connected peers.
    Peers,
    /// Fetch and verify every replica of the drive's chunks.
    Scrub,
    /// Flush, unmount and exit (a provider: stop). A mount that is busy is
    /// detached, as on SIGTERM.
    Shutdown,
    /// `pactfs umount`: flush and unmount. A busy mount (a file open or a
    /// working directory under it) stays mounted and the reply says so,
    /// unless `lazy`: then it is detached and the node exits when the last
    /// user lets go. The reply's `detached` tells which happened.
    Unmount {
        #[serde(default)]
        lazy: bool,
    },
    /// One page of `pactfs log verify`: check the entries from `from` on,
    /// the first chained to `prev` (hex; zeros when absent). With
    /// `counting`, a bad entry was found already: only count the rest.
    LogVerify {
        #[serde(default)]
        from: u64,
        #[serde(default)]
        prev: Option<String>,
        #[serde(default)]
        counting: bool,
    },
    /// One page of `pactfs log show`: at most `limit` entries from `from`
    /// (or from the first at or after the unix time `since`), none before
    /// `since`.
    LogShow {
        #[serde(default)]
        since: Option<u64>,
        #[serde(default)]
        from: Option<u64>,
        #[serde(default = "default_show_limit")]
        limit: usize,
    },
    /// Test builds only: append `count` made-up entries to the ledger.
    #[cfg(feature = "fault-injection")]
    LedgerAppend {
        count: u64,
    },
    /// Every promise the drive's agent holds (`market::PromiseView`s).
    Promises,
    /// The asks the agent sees (`market::AskView`s).
    Market,
    /// Placement of the drive's chunks and the agent's state (`durable::Status`).
    Status,
    /// Flush the drive, then snapshot the chunks still pending: those of
    /// the files at or under inode `ino` (walked), or all with `None`.
    /// Answers `{ token, total, remaining, missing_replicas, blocked }`.
    DurableStart {
        #[serde(default)]
        ino: Option<u64>,
    },
    /// How many chunks of a snapshot are still below the replication
    /// target: `{ total, remaining, missing_replicas, blocked }`.
    DurableCheck {
        token: u64,
    },
    /// Keep the files at or under `ino` (all with `None`) local, fetching
    /// what they lack: `{ chunks, changed, bytes, failed, errors }`.
    Pin {
        #[serde(default)]
        ino: Option<u64>,
    },
    /// Undo a pin of exactly that inode.
    Unpin {
        #[serde(default)]
        ino: Option<u64>,
    },
    /// The last audit of each promise; with `now`, audit every active
    /// storage promise first and answer those audits.
    Audit {
        #[serde(default)]
        now: bool,
    },
    /// Each provider's reputation and the broken promises behind it.
    Reputation,
    /// Free the local copies of placed chunks of the files at or under
    /// `ino`: `{ chunks, changed, bytes, pending, pinned }`.
    Evict {
        #[serde(default)]
        ino: Option<u64>,
    },
}

fn default_show_limit() -> usize {
    256
}

/// The node's answer: `ok` with a value, or an error message.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default)]
    pub value: serde_json::Value,
    #[serde(default)]
    pub error: String,
}

impl Reply {
    pub fn ok(value: serde_json::Value) -> Reply {
        Reply { ok: true, value, error: String::new() }
    }
    pub fn err(error: impl ToString) -> Reply {
        Reply { ok: false, value: serde_json::Value::Null, error: error.to_string() }
    }
}

/// Binds the socket, owner-only, replacing a stale one from a dead node.
pub fn bind(path: &Path) -> Result<UnixListener, NodeError> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| NodeError::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| NodeError::io(path, e))?;
    Ok(listener)
}

/// Serves connections until the listener fails; `handle` answers each request.
pub fn serve(listener: UnixListener, handle: impl Fn(Request) -> Reply + Send + Sync + 'static) {
    let handle = std::sync::Arc::new(handle);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { break };
        let handle = handle.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve_one(stream, &*handle) {
                tracing::debug!(cause = %e, "control connection failed");
            }
        });
    }
}

fn serve_one(stream: UnixStream, handle: &dyn Fn(Request) -> Reply) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_LINE)).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(req) => handle(req),
        Err(e) => Reply::err(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    (&stream).write_all(&out)
}

/// Sends one request to the node behind `path` and waits for its reply.
pub fn call(path: &Path, req: &Request, timeout: Option<Duration>) -> Result<serde_json::Value, NodeError> {
    let not_running = |e: std::io::Error| NodeError::NotRunning { socket: PathBuf::from(path), cause: e.to_string() };
    let mut stream = UnixStream::connect(path).map_err(not_running)?;
    stream.set_read_timeout(timeout).map_err(|e| NodeError::io(path, e))?;
    let mut line = serde_json::to_vec(req).unwrap_or_default();
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| NodeError::io(path, e))?;
    let mut answer = String::new();
    BufReader::new((&stream).take(MAX_LINE)).read_line(&mut answer).map_err(|e| NodeError::io(path, e))?;
    let reply: Reply = serde_json::from_str(&answer)
        .map_err(|e| NodeError::Control(format!("unreadable reply from the node: {e}")))?;
    if reply.ok { Ok(reply.value) } else { Err(NodeError::Control(reply.error)) }
}
