//! The command line: parses arguments, calls into `node`, prints results.
//!
//! Output for people is `Key: value` lines (stable; scripts and tests parse
//! them) or a table; `--json` gives the same facts for scripts. Errors go to
//! stderr with their context chain. Exit codes: 0 success, 1 "ran fine,
//! the answer is no" (fsck found problems, `log verify` a broken ledger,
//! `sync --durable` found placement blocked), 2 error.

mod ledger;
mod market;
mod network;
mod output;

use crate::config::Config;
use crate::node::{self, Home, HomeLock, MountOptions, control, daemon};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use output::{print_json, print_kv};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(name = "pactfs", version, about = "A network drive over encrypted content-defined chunks")]
struct Cli {
    /// Keep config, keys and data in DIR (default: ~/.config/pactfs and ~/.local/share/pactfs).
    #[arg(long, global = true, env = "PACTFS_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a home: commented default config, node identity, user secret.
    Init {
        /// Use the keys of a `pactfs key export` file instead; the first
        /// mount then rebuilds the drive from its providers.
        #[arg(long, value_name = "KEYFILE")]
        restore: Option<PathBuf>,
    },
    /// The home's keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Mount the drive at MOUNTPOINT (in the background unless --foreground).
    Mount {
        mountpoint: PathBuf,
        /// Stay attached; SIGINT or SIGTERM unmounts and flushes.
        #[arg(long)]
        foreground: bool,
        /// Let other users into the mount (permissions enforced by the kernel).
        #[arg(long)]
        allow_other: bool,
        /// Mount read-only: the kernel refuses every change (EROFS), and
        /// reads write no access time.
        #[arg(long)]
        read_only: bool,
    },
    /// Flush and unmount the drive mounted at MOUNTPOINT. A drive in use (a
    /// file open or a working directory under it) stays mounted: exit 1.
    #[command(visible_alias = "unmount")]
    Umount {
        mountpoint: PathBuf,
        /// If the drive is in use, detach it now: it leaves the mount table
        /// at once, and the node flushes and exits when the last process
        /// using it lets go (umount -l).
        #[arg(long, short = 'l')]
        lazy: bool,
    },
    /// Show what the drive holds: files, chunks, dedup, pending placement.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Check the index and every chunk against its id (drive unmounted).
    Fsck {
        /// Mend what can be mended.
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run a provider node in the foreground: sell the capacity set in [provider]
    /// until SIGINT/SIGTERM ([provider] enabled = true makes a mounted node sell too).
    Provider,
    /// List connected peers: peer id, mode, role, latency, address.
    Peers {
        #[arg(long)]
        json: bool,
    },
    /// This node on the network.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Fetch every replica of the drive's chunks from its provider and verify it.
    Scrub {
        #[arg(long)]
        json: bool,
    },
    /// The node's signed, hash-chained transaction log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Test builds only: make things happen that tests need.
    #[cfg(feature = "fault-injection")]
    #[command(subcommand, hide = true)]
    Debug(DebugCommand),
    /// Every promise held: provider, chunks, bytes, price, term, state, last audit.
    Promises {
        #[arg(long)]
        json: bool,
    },
    /// The asks this node sees: prices, free room, terms, reputation, latency.
    Market {
        #[arg(long)]
        json: bool,
    },
    /// Placement at a glance: pending, placed, replication, spend, promises,
    /// and why nothing is placed when it is not.
    Status {
        #[arg(long)]
        json: bool,
        /// Show placement live until nothing is pending (Ctrl-C stops).
        #[arg(long)]
        watch: bool,
    },
    /// Flush the drive to the local disk; with --durable, also wait until
    /// every chunk pending now (PATH's only, if given) is on the replication
    /// target's number of providers. Exit 1 if placement is blocked.
    Sync {
        /// Wait for the replication target (the answer to "may this machine go off?").
        #[arg(long)]
        durable: bool,
        /// A file or directory inside the mount (default: the whole drive).
        path: Option<PathBuf>,
        /// The outcome as one JSON object (progress still goes to stderr).
        #[arg(long)]
        json: bool,
    },
    /// The audits of the promises held: each promise's last audit (when,
    /// chunk, range, result). --now audits every active promise first;
    /// exit 1 if any audit failed.
    Audit {
        #[arg(long)]
        now: bool,
        #[arg(long)]
        json: bool,
    },
    /// Each provider's reputation (score, kept, broken) and the broken
    /// promises behind it.
    Reputation {
        #[arg(long)]
        json: bool,
    },
    /// Keep a file or directory (all files under it) on this machine,
    /// fetching what is not local now.
    Pin {
        /// A file or directory inside the mount (default: the whole drive).
        path: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Undo `pin` of the same PATH.
    Unpin {
        path: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Free the local copies of a file's or directory's placed chunks (they
    /// stay on providers and come back on read); pending chunks stay.
    Evict {
        path: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum LogCommand {
    /// Check every entry's chain link and signature; exit 0 intact, 1 broken (names the first bad entry).
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// List the entries: seq, time (UTC), kind, summary.
    Show {
        /// Only entries from WHEN on: a unix time, or a duration ago ("1h", "7d").
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[cfg(feature = "fault-injection")]
#[derive(Subcommand, Debug)]
enum DebugCommand {
    /// Append COUNT made-up entries to the ledger.
    LedgerAppend { count: u64 },
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Write the node identity and the user secret into one file (0600),
    /// everything `pactfs init --restore` needs on another machine. Keep it
    /// secret: it reads the whole drive.
    Export {
        /// Where to write (never over an existing file).
        #[arg(long, value_name = "FILE", default_value = "pactfs.keys")]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Peer id and listen addresses (with the real ports), mode and role.
    Info {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate a config file (default: the home's).
    Check { file: Option<PathBuf> },
    /// Print the effective configuration.
    Show {
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let daemon_cmd = matches!(cli.command, Command::Mount { .. } | Command::Provider);
    init_logging(cli.verbose, daemon_cmd);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return 0;
            }
            eprintln!("pactfs: {e:#}");
            2
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn init_logging(verbose: u8, daemon: bool) {
    use tracing_subscriber::EnvFilter;
    let levels = ["warn", "info", "debug", "trace"];
    let base = if daemon { 1 } else { 0 };
    let level = levels[(base + verbose as usize).min(levels.len() - 1)];
    // Kademlia warns about routine states of a small network (a first node
    // with no peers yet); -vv shows them.
    let kad = if verbose >= 2 { "" } else { ",libp2p_kad=error" };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("pactfs={level}{kad},warn")));
    // A daemon's stderr becomes its log file after the fork: no colours.
    let ansi = !daemon && std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A log that cannot be written (the daemon's log on a full disk) must
    // not take the node down: tracing's own fallback would panic in
    // eprintln! on the same broken stderr.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .log_internal_errors(false)
        .try_init();
}

fn home_of(cli_home: &Option<PathBuf>) -> Result<Home> {
    if let Some(dir) = cli_home {
        let dir = if dir.is_absolute() { dir.clone() } else { std::env::current_dir()?.join(dir) };
        return Ok(Home::single(&dir));
    }
    let user = std::env::var_os("HOME").context("neither --home, PACTFS_HOME nor HOME is set")?;
    Ok(Home::split(Path::new(&user)))
}

fn run(cli: Cli) -> Result<i32> {
    let home = home_of(&cli.home)?;
    match cli.command {
        Command::Init { restore: None } => init(&home),
        Command::Init { restore: Some(keyfile) } => init_restore(&home, &keyfile),
        Command::Key(KeyCommand::Export { out }) => {
            home.export_keys(&out).with_context(|| format!("cannot export the keys to {}", out.display()))?;
            print_kv(&[("Keys", out.display().to_string())])?;
            Ok(0)
        }
        Command::Mount { mountpoint, foreground, allow_other, read_only } => {
            mount(&home, &mountpoint, foreground, MountOptions { allow_other, read_only })
        }
        Command::Umount { mountpoint, lazy } => umount(&home, cli.home.is_some(), &mountpoint, lazy),
        Command::Stats { json } => stats(&home, json),
        Command::Fsck { repair, json } => fsck(&home, repair, json),
        Command::Config(ConfigCommand::Check { file }) => {
            let path = file.unwrap_or_else(|| home.config_file());
            Config::load(&path)?;
            println!("Config: {} is valid", path.display());
            Ok(0)
        }
        Command::Provider => network::provider(&home),
        Command::Peers { json } => network::peers(&home, json),
        Command::Node(NodeCommand::Info { json }) => network::node_info(&home, json),
        Command::Scrub { json } => network::scrub(&home, json),
        Command::Log(LogCommand::Verify { json }) => ledger::verify(&home, json),
        Command::Log(LogCommand::Show { since, json }) => ledger::show(&home, since.as_deref(), json),
        #[cfg(feature = "fault-injection")]
        Command::Debug(DebugCommand::LedgerAppend { count }) => ledger::debug_append(&home, count),
        Command::Promises { json } => market::promises(&home, json),
        Command::Market { json } => market::market(&home, json),
        Command::Status { json, watch } => market::status(&home, json, watch),
        Command::Sync { durable, path, json } => market::sync(&home, durable, path.as_deref(), json),
        Command::Audit { now, json } => market::audit(&home, now, json),
        Command::Reputation { json } => market::reputation(&home, json),
        Command::Pin { path, json } => market::cache(&home, market::CacheOp::Pin, path.as_deref(), json),
        Command::Unpin { path, json } => market::cache(&home, market::CacheOp::Unpin, path.as_deref(), json),
        Command::Evict { path, json } => market::cache(&home, market::CacheOp::Evict, path.as_deref(), json),
        Command::Config(ConfigCommand::Show { json }) => {
            let cfg = node::load_config(&home)?;
            if json {
                print_json(&cfg.to_json())?;
            } else {
                print!("{}", cfg.to_toml());
            }
            Ok(0)
        }
    }
}

fn init(home: &Home) -> Result<i32> {
    let identity = home.init().context("cannot initialise the pactfs home")?;
    print_kv(&[
        ("Home", home.config_dir.display().to_string()),
        ("Data", home.data_dir.display().to_string()),
        ("Config", home.config_file().display().to_string()),
        ("Node key", crate::chunk::hex(identity.verifying_key().as_bytes())),
    ])?;
    Ok(0)
}

fn init_restore(home: &Home, keyfile: &Path) -> Result<i32> {
    let node = home.init_restore(keyfile).context("cannot initialise the pactfs home from the key file")?;
    print_kv(&[
        ("Home", home.config_dir.display().to_string()),
        ("Data", home.data_dir.display().to_string()),
        ("Config", home.config_file().display().to_string()),
        ("Node key", crate::chunk::hex(&node)),
        ("Restore", "at the first mount (set the network in the config first)".to_string()),
    ])?;
    Ok(0)
}

fn mount(home: &Home, mountpoint: &Path, foreground: bool, opts: MountOptions) -> Result<i32> {
    let mnt = std::fs::canonicalize(mountpoint)
        .with_context(|| format!("mountpoint {} does not exist", mountpoint.display()))?;
    if !mnt.is_dir() {
        bail!("mountpoint {} is not a directory", mnt.display());
    }
    if node::is_mounted(&mnt) {
        bail!("something is already mounted at {}", mnt.display());
    }
    let mut lock = HomeLock::acquire(home)?;
    // Fail here, in the foreground, on what would make the node fail.
    home.user_secret()?;
    node::load_config(home)?;
    let print_ready =
        |mnt: &Path, pid: u32| print_kv(&[("Mounted", mnt.display().to_string()), ("Pid", pid.to_string())]);
    if foreground {
        lock.record_pid(std::process::id());
        let m = mnt.clone();
        node::mount(home, lock, &mnt, &opts, |r| {
            if r.is_ok() {
                let _ = print_ready(&m, std::process::id());
            }
        })?;
        return Ok(0);
    }
    match daemon::fork_detached(&home.log_file())? {
        Ok(daemon::Outcome::Ready { pid }) => {
            print_ready(&mnt, pid as u32)?;
            Ok(0)
        }
        Ok(daemon::Outcome::Failed(why)) => bail!("mount failed: {why}"),
        Err(notifier) => {
            lock.record_pid(std::process::id());
            let r = node::mount(home, lock, &mnt, &opts, |r| match r {
                Ok(()) => notifier.ready(),
                Err(why) => notifier.failed(&why),
            });
            if let Err(e) = &r {
                tracing::error!(cause = %e, "node stopped with an error");
            }
            // The daemon's exit code goes nowhere; exit without running
            // the CLI's error printer on a detached stderr.
            std::process::exit(if r.is_ok() { 0 } else { 2 });
        }
    }
}

fn umount(home: &Home, explicit_home: bool, mountpoint: &Path, lazy: bool) -> Result<i32> {
    let mnt = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let data_dir = if explicit_home {
        home.data_dir.clone()
    } else {
        node::find_pactfs_mount(&mnt).ok_or_else(|| node::NodeError::NotMounted(mnt.clone()))?
    };
    let socket = data_dir.join("control.sock");
    let ping = match control::call(&socket, &control::Request::Ping, Some(Duration::from_secs(30))) {
        Ok(v) => v,
        Err(e) => {
            if node::is_mounted(&mnt) {
                // The node is gone but its mount is not: clear it.
                node::detach(&mnt);
                eprintln!("pactfs: the node was not running; detached the stale mount at {}", mnt.display());
                return Ok(0);
            }
            return Err(e.into());
        }
    };
    let served = ping.get("mountpoint").and_then(|m| m.as_str()).map(PathBuf::from);
    if served.as_deref() != Some(mnt.as_path()) {
        bail!("the node of this home serves {}, not {}", served.unwrap_or_default().display(), mnt.display());
    }
    let pid = ping.get("pid").and_then(|p| p.as_u64()).unwrap_or(0) as i32;
    // The node answers once it has flushed and tried the unmount.
    let answer = match control::call(&socket, &control::Request::Unmount { lazy }, Some(UNMOUNT_WAIT)) {
        Ok(a) => a,
        Err(node::NodeError::Control(why)) => {
            eprintln!("pactfs: {why}");
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    if answer.get("detached").and_then(|d| d.as_bool()) == Some(true) {
        // Waiting here could wait on ourselves (a shell whose working
        // directory is under the mount runs this command).
        println!(
            "Detached: {} (the node, pid {pid}, flushes and exits when the last process using it lets go)",
            mnt.display()
        );
        return Ok(0);
    }
    let started = Instant::now();
    let mut warned = false;
    let home_free = || HomeLock::acquire(&Home::single(&data_dir)).is_ok();
    while node::pid_alive(pid) || node::is_mounted(&mnt) || !home_free() {
        if !warned && started.elapsed() > Duration::from_secs(5) {
            eprintln!("pactfs: waiting for the node (pid {pid}) to flush and exit...");
            warned = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("Unmounted: {}", mnt.display());
    Ok(0)
}

/// How long `pactfs umount` waits for the node's flush and unmount.
const UNMOUNT_WAIT: Duration = Duration::from_secs(600);

fn stats(home: &Home, json: bool) -> Result<i32> {
    let value = match control::call(&home.control_socket(), &control::Request::Stats, Some(Duration::from_secs(60))) {
        Ok(v) => v,
        Err(node::NodeError::NotRunning { .. }) => {
            let _lock = HomeLock::acquire(home)?;
            let store = node::open_store(home)?;
            serde_json::to_value(store.stats()?)?
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        print_json(&value)?;
    } else {
        output::print_object(&value)?;
    }
    Ok(0)
}

fn fsck(home: &Home, repair: bool, json: bool) -> Result<i32> {
    let _lock = HomeLock::acquire(home).map_err(|e| match e {
        node::NodeError::AlreadyMounted { .. } => anyhow::anyhow!("{e}: unmount it before running fsck"),
        e => e.into(),
    })?;
    let store = node::open_store(home)?;
    let bar = output::progress_bar("checking chunks");
    let report = store.fsck_with_progress(repair, &mut |done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if json {
        print_json(&serde_json::to_value(&report)?)?;
    } else {
        for f in &report.findings {
            println!("{}{}", f.what, if f.repaired { " (repaired)" } else { "" });
        }
        print_kv(&[
            ("Inodes", report.inodes.to_string()),
            ("Entries", report.dirents.to_string()),
            ("Chunks", report.chunks.to_string()),
            ("Chunks verified", report.chunks_verified.to_string()),
            ("Chunks not cached", report.chunks_remote.to_string()),
            ("Orphans", report.orphans.to_string()),
            ("Journaled files", report.journaled.to_string()),
            ("Problems", report.findings.len().to_string()),
            ("Unrepaired", if repair { report.unrepaired() } else { report.findings.len() }.to_string()),
        ])?;
    }
    let left = if repair { report.unrepaired() } else { report.findings.len() };
    Ok(if left == 0 { 0 } else { 1 })
}
