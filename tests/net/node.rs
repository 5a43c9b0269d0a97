//! One node of the network tests: the `Provider` guard (a `pactfs provider`
//! child process in its own temp home, stderr in `<home>/provider.log`), the
//! config every test node gets, and the JSON commands tests ask a node.
//!
//! Every node listens on 127.0.0.1 port 0 and reports its real addresses
//! through `node info --json`, so tests never pick ports. A provider is
//! SIGKILLed and reaped in `Drop` on success and panic alike, and on a panic
//! prints the last lines of its log first.

use crate::common::*;
use serde_json::Value;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Bound for waits on the network (discovery, placement, DHT announcements
/// settling) by debug builds on a loaded machine.
pub const NET_TIMEOUT: Duration = Duration::from_secs(300);
/// Every chunk ends on this many distinct providers.
pub const REPLICATION: u64 = 3;
/// Providers in a cluster.
pub const PROVIDERS: usize = 4;
/// Lines of each node's log printed when a test fails.
const LOG_TAIL: usize = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Hybrid,
    Market,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Hybrid => "hybrid",
            Mode::Market => "market",
        }
    }
}

/// How a test provider sells: its `[provider]` floor price and capacity,
/// and the faults its process runs with (`PACTFS_FAULTS`, which only a
/// `fault-injection` build reads: `tamper-ask`, `forge-promise`,
/// `stale-ask`).
#[derive(Clone, Debug)]
pub struct ProviderSpec {
    /// Credits per GiB-month.
    pub price: f64,
    /// Bytes.
    pub capacity: u64,
    /// Comma-separated fault names; empty for an honest provider.
    pub faults: &'static str,
    /// More keys of its `[provider]` section (TOML lines), such as
    /// `min_duration = "10s"`.
    pub terms: &'static str,
}

impl Default for ProviderSpec {
    fn default() -> ProviderSpec {
        ProviderSpec { price: 1.0, capacity: GIB, faults: "", terms: "" }
    }
}

impl ProviderSpec {
    /// An honest provider at `price` credits per GiB-month with `capacity` bytes.
    pub fn new(price: f64, capacity: u64) -> ProviderSpec {
        ProviderSpec { price, capacity, faults: "", terms: "" }
    }
}

/// The whole config.toml of a test node (replacing the one `init` wrote): a
/// provider selling as `provider` says, or a client (`None`); `extra` is
/// TOML appended as is (whole sections, such as a client's `[budget]`).
pub fn node_toml(mode: Mode, provider: Option<&ProviderSpec>, bootstrap: &[String], extra: &str) -> String {
    let bootstrap: Vec<String> = bootstrap.iter().map(|addr| format!("\"{addr}\"")).collect();
    let spec = provider.cloned().unwrap_or_default();
    format!(
        "[storage]\nreplication = {REPLICATION}\n\n\
         [provider]\nenabled = {}\ncapacity = \"{}B\"\nprice_per_gib_month = {:?}\n{}\n\n\
         [network]\nmode = \"{}\"\n\
         listen = [\"/ip4/127.0.0.1/tcp/0\", \"/ip4/127.0.0.1/udp/0/quic-v1\"]\n\
         bootstrap = [{}]\nmdns = false\n{extra}",
        provider.is_some(),
        spec.capacity,
        spec.price,
        spec.terms,
        mode.name(),
        bootstrap.join(", ")
    )
}

/// One run of `pactfs --home H ARGS`: exit code, stdout parsed as JSON if it
/// is, and the whole exchange for failure messages.
pub struct Answer {
    pub code: Option<i32>,
    pub json: Option<Value>,
    pub text: String,
}

/// Runs `pactfs --home HOME ARGS` (not recorded in any history: tests poll).
pub fn ask(home: &Path, args: &[&str]) -> Answer {
    let mut command = Command::new(PACTFS);
    command.arg("--home").arg(home).args(args).env_remove("PACTFS_HOME");
    let out = output_of(&mut command);
    Answer { code: out.status.code(), json: serde_json::from_slice(&out.stdout).ok(), text: describe(&command, &out) }
}

/// `ask`, expecting exit 0 and JSON on stdout; `Err` describes what came instead.
pub fn ask_json(home: &Path, args: &[&str]) -> Result<Value, String> {
    let answer = ask(home, args);
    match (answer.code, answer.json) {
        (Some(0), Some(json)) => Ok(json),
        _ => Err(answer.text),
    }
}

/// An unsigned integer at a dotted path (`"provider.chunks"`) of a JSON value.
pub fn num(value: &Value, path: &str) -> u64 {
    path.split('.')
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no unsigned integer at `{path}` in {value}"))
}

/// A string at a key of a JSON object.
pub fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_else(|| panic!("no string `{key}` in {value}"))
}

/// Polls `probe` until it returns `Ok`; panics after `NET_TIMEOUT` naming what
/// never happened and the last thing `probe` saw instead.
pub fn poll<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) => {
                assert!(
                    start.elapsed() < NET_TIMEOUT,
                    "waited {NET_TIMEOUT:?}, but this never happened: {what}\nlast seen:\n{last}"
                );
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// `node info --json` once the node answers with at least one listen address;
/// checks the fields every node reports and that each address names the node.
pub fn wait_node_info(who: &str, home: &Path, mode: Mode, mut alive: impl FnMut() -> Result<(), String>) -> Value {
    let info = poll(&format!("{who} to answer `node info --json` with listen addresses"), || {
        alive()?;
        let info = ask_json(home, &["node", "info", "--json"])?;
        match info.get("listen").and_then(Value::as_array) {
            Some(listen) if !listen.is_empty() => Ok(info),
            _ => Err(info.to_string()),
        }
    });
    let peer_id = text(&info, "peer_id");
    assert!(peer_id.starts_with("12D3Koo"), "{who}: an ed25519 peer id is expected: {info}");
    assert_eq!(text(&info, "mode"), mode.name(), "{who}: node info reports the configured mode");
    for addr in info["listen"].as_array().unwrap() {
        let addr = addr.as_str().unwrap_or_else(|| panic!("{who}: listen holds a non-string: {info}"));
        assert!(addr.ends_with(&format!("/p2p/{peer_id}")), "{who}: {addr} does not end in /p2p/{peer_id}");
    }
    info
}

/// The listen address of `info` with `/tcp/` (true) or QUIC (false) in it.
pub fn listen_addr(info: &Value, tcp: bool) -> String {
    let listen = info["listen"].as_array().unwrap().iter().filter_map(Value::as_str);
    let mut found =
        listen.filter(|a| if tcp { a.contains("/tcp/") } else { a.contains("/udp/") && a.contains("/quic-v1") });
    let kind = if tcp { "TCP" } else { "QUIC" };
    found.next().unwrap_or_else(|| panic!("no {kind} address in node info: {info}")).to_owned()
}

/// The port after `/tcp/` or `/udp/` in a multiaddr.
pub fn port_of(addr: &str, proto: &str) -> u16 {
    let parts: Vec<&str> = addr.split('/').collect();
    let at = parts.iter().position(|p| *p == proto).unwrap_or_else(|| panic!("no /{proto}/ in {addr}"));
    parts.get(at + 1).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no {proto} port in {addr}"))
}

/// Prints the last `LOG_TAIL` lines of a node's log to stderr.
pub fn print_log_tail(who: &str, log: &Path) {
    match fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL);
            eprintln!("==== {who}: last {} lines of {}:", lines.len() - from, log.display());
            lines[from..].iter().for_each(|line| eprintln!("{line}"));
        }
        Err(err) => eprintln!("==== {who}: no log at {}: {err}", log.display()),
    }
}

/// One `pactfs provider` process in its own temp home, stderr in `<home>/provider.log`.
pub struct Provider {
    pub name: String,
    /// Dropped after the process is reaped (field order).
    _dir: TempDir,
    pub home: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    pub mode: Mode,
    /// What it sells, and its faults.
    pub spec: ProviderSpec,
    pub peer_id: String,
    /// TCP and QUIC listen multiaddrs (with /p2p/) of the current process.
    pub tcp: String,
    pub quic: String,
}

impl Provider {
    /// `init`, the test config, then starts the node and waits until it answers.
    pub fn start(name: &str, mode: Mode, bootstrap: &[String]) -> Provider {
        Provider::start_with(name, mode, bootstrap, &ProviderSpec::default())
    }

    /// `init`, the test config selling as `spec` says (price, capacity,
    /// faults), then starts the node and waits until it answers.
    pub fn start_with(name: &str, mode: Mode, bootstrap: &[String], spec: &ProviderSpec) -> Provider {
        let dir = tempfile::Builder::new().prefix("pactfs-net-").tempdir().expect("create temp home");
        let home = dir.path().canonicalize().expect("canonicalize temp home");
        let init = ask(&home, &["init"]);
        assert_eq!(init.code, Some(0), "{name}: pactfs init failed:\n{}", init.text);
        fs::write(home.join("config.toml"), node_toml(mode, Some(spec), bootstrap, "")).expect("write config.toml");
        let mut provider = Provider {
            name: name.to_owned(),
            log: home.join("provider.log"),
            _dir: dir,
            home,
            child: None,
            mode,
            spec: spec.clone(),
            peer_id: String::new(),
            tcp: String::new(),
            quic: String::new(),
        };
        provider.spawn();
        let info = provider.info();
        assert_eq!(text(&info, "role"), "provider", "{name}: {info}");
        assert_eq!(num(&info, "provider.chunks"), 0, "{name}: a fresh provider holds nothing: {info}");
        assert_eq!(num(&info, "provider.capacity"), spec.capacity, "{name}: capacity is the configured one: {info}");
        provider
    }

    /// Starts the process (appending to its log) and waits for its addresses.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{}: already running", self.name);
        let log = OpenOptions::new().create(true).append(true).open(&self.log).expect("open provider log");
        let child = Command::new(PACTFS)
            .arg("-v")
            .arg("--home")
            .arg(&self.home)
            .arg("provider")
            .env_remove("PACTFS_HOME")
            .env("PACTFS_FAULTS", self.spec.faults)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start `pactfs provider`: {e}", self.name));
        self.child = Some(child);
        // The TCP and QUIC listeners come up one after the other.
        let name = self.name.clone();
        let info = poll(&format!("{name} to report both a TCP and a QUIC listen address"), || {
            let info = self.info();
            let listening = |tcp| {
                info["listen"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .any(|a| if tcp { a.contains("/tcp/") } else { a.contains("/quic-v1") })
            };
            if listening(true) && listening(false) { Ok(info) } else { Err(info.to_string()) }
        });
        self.peer_id = text(&info, "peer_id").to_owned();
        self.tcp = listen_addr(&info, true);
        self.quic = listen_addr(&info, false);
    }

    /// `node info --json` of the running provider (polled until it has addresses).
    pub fn info(&mut self) -> Value {
        let (name, child) = (&self.name, self.child.as_mut());
        let child = child.unwrap_or_else(|| panic!("{name}: not running"));
        wait_node_info(name, &self.home, self.mode, || match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => panic!("{name} exited ({status}) while a test expected it to run"),
            Err(err) => panic!("{name}: waiting for the process: {err}"),
        })
    }

    /// `provider.chunks` of `node info`.
    pub fn chunks(&mut self) -> u64 {
        num(&self.info(), "provider.chunks")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap_or_else(|| panic!("{}: not running", self.name)).id()
    }

    /// Whether the process still runs (not exited, not a zombie).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Whether the guard holds a process (not killed or stopped by the test).
    pub fn child_started(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let name = &self.name;
        let child = self.child.as_mut().unwrap_or_else(|| panic!("{name}: not running"));
        child.kill().unwrap_or_else(|e| panic!("{name}: SIGKILL: {e}"));
        child.wait().unwrap_or_else(|e| panic!("{name}: reaping after SIGKILL: {e}"));
        self.child = None;
    }

    /// Starts the provider again from the same home and config.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Starts the provider again listening on the ports it had, so that
    /// nodes bootstrapped from its old addresses find it again.
    pub fn restart_on_same_ports(&mut self) {
        let (tcp, udp) = (port_of(&self.tcp, "tcp"), port_of(&self.quic, "udp"));
        let config = self.home.join("config.toml");
        let old = fs::read_to_string(&config).expect("read provider config.toml");
        let new = old.replace(
            "listen = [\"/ip4/127.0.0.1/tcp/0\", \"/ip4/127.0.0.1/udp/0/quic-v1\"]",
            &format!("listen = [\"/ip4/127.0.0.1/tcp/{tcp}\", \"/ip4/127.0.0.1/udp/{udp}/quic-v1\"]"),
        );
        assert_ne!(old, new, "{}: the config names port 0 listeners", self.name);
        fs::write(&config, new).expect("write provider config.toml");
        self.spawn();
    }

    /// SIGTERM; asserts the provider exits by itself, with status 0.
    pub fn stop(&mut self) {
        let name = &self.name;
        let child = self.child.as_mut().unwrap_or_else(|| panic!("{name}: not running"));
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let mut status = None;
        wait_for(&format!("{name} to exit after SIGTERM"), NET_TIMEOUT, || {
            status = child.try_wait().expect("try_wait on provider");
            status.is_some()
        });
        let status = status.unwrap();
        assert!(status.success(), "{name}: SIGTERM must flush and exit 0, got {status}");
        self.child = None;
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        if thread::panicking() {
            print_log_tail(&format!("provider {} ({})", self.name, self.peer_id), &self.log);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Flips one byte in every KiB of the body of every record of every pack
/// under `dir` (a provider's store), as rot on its disk would: any range
/// an audit asks for, and every chunk a fetch gets, is damaged. Returns
/// the records damaged.
pub fn rot_packs(dir: &Path) -> usize {
    let mut rotten = 0;
    for p in pack_files(dir) {
        let mut bytes = fs::read(&p).expect("read pack");
        let mut at = 4096;
        while at + 40 <= bytes.len() && &bytes[at..at + 4] == b"PCHK" {
            let len = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
            for i in (0..len).step_by(1024) {
                bytes[at + 40 + i] ^= 0x01;
            }
            rotten += 1;
            at = (at + 40 + len).div_ceil(4096) * 4096;
        }
        fs::write(&p, bytes).expect("write pack");
    }
    rotten
}

/// Every pack file under `dir`.
pub fn pack_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "pack") {
                out.push(p);
            }
        }
    }
    out
}
