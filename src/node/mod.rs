//! The node: assembles the layers from the config and runs them.
//!
//! [`mount`] is the life of a mounted drive: take the home's lock, open the
//! store, mount FUSE, serve the control socket, run maintenance, and on a
//! signal or `pactfs umount` unmount, flush and exit. `daemon` detaches it;
//! `control` is the socket commands use to reach it; `home` is the layout
//! of a pactfs home and `pactfs init`.

mod cache;
pub mod control;
pub mod daemon;
mod durable;
pub mod home;
mod keys;
pub mod ledger;
mod lock;
mod mountinfo;
mod network;
mod roots;
mod serve;
mod volunteer;

/// Credits as people read them (the CLI formats prices with it).
pub use crate::promise::credits;
pub use home::Home;
pub use lock::{HomeLock, pid_alive};
pub use mountinfo::{find_pactfs_mount, is_mounted};
pub use network::Network;
pub use serve::run_provider;

use crate::chunk::ChunkSizes;
use crate::config::{Config, ConfigError};
use crate::fs::{Drive, Offline, fuse::PactFs};
use crate::store::{Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

/// How often the node compacts pack files.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(30);
/// FUSE worker threads: enough for a slow chunk read not to stall others.
const FUSE_THREADS: usize = 4;

/// Why the node could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} already exists: refusing to overwrite existing keys")]
    KeysExist(PathBuf),
    #[error("{0} is missing: run `pactfs init` first")]
    NotInitialised(PathBuf),
    #[error("{path}: a key must be 32 bytes, found {len}")]
    BadKey { path: PathBuf, len: usize },
    #[error("{path}: {why}")]
    BadKeyFile { path: PathBuf, why: String },
    #[error("the system random number generator failed")]
    Random,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the pactfs home {home} is already mounted{}", pid.map(|p| format!(" (node pid {p})")).unwrap_or_default())]
    AlreadyMounted { home: PathBuf, pid: Option<u32> },
    #[error("cannot mount at {mountpoint}: {source}")]
    Mount { mountpoint: PathBuf, source: std::io::Error },
    #[error("no pactfs node is running for this home ({socket}: {cause})")]
    NotRunning { socket: PathBuf, cause: String },
    #[error("{0} is not a pactfs mount")]
    NotMounted(PathBuf),
    #[error("node: {0}")]
    Control(String),
    #[error("network: {0}")]
    Network(String),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
}

impl NodeError {
    pub fn io(path: &Path, source: std::io::Error) -> NodeError {
        NodeError::Io { path: path.to_path_buf(), source }
    }
}

/// How to mount.
#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    /// Let other users into the mount (the kernel enforces permissions).
    pub allow_other: bool,
    /// Mount read-only (`ro`; a remount can change it).
    pub read_only: bool,
}

/// Loads the home's config; a missing file means the defaults.
pub fn load_config(home: &Home) -> Result<Config, NodeError> {
    match Config::load(&home.config_file()) {
        Ok(c) => Ok(c),
        Err(ConfigError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %home.config_file().display(), "no config file: using defaults");
            Ok(Config::default())
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens the store of a home whose lock the caller holds.
pub fn open_store(home: &Home) -> Result<Store, NodeError> {
    open_store_at(&home.data_dir)
}

/// Opens the store under `dir` (a home's, or its provider's), creating it.
pub fn open_store_at(dir: &Path) -> Result<Store, NodeError> {
    std::fs::create_dir_all(dir).map_err(|e| NodeError::io(dir, e))?;
    // SAFETY: geteuid and getegid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    // The home lock is ours, so a busy RocksDB lock can only belong to a
    // previous node still in the last moments of its exit: wait for it.
    let mut tries = 0;
    loop {
        match Store::open(dir, uid, gid) {
            Err(StoreError::Db(e)) if e.to_string().contains("lock") && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return Ok(other?),
        }
    }
}

fn chunk_sizes(cfg: &Config) -> ChunkSizes {
    // Validation bounds every size to fastcdc's limits (at most 16 MiB).
    let to_u32 = |b: u64| u32::try_from(b).unwrap_or(u32::MAX);
    ChunkSizes {
        min: to_u32(cfg.storage.chunk_min.bytes()),
        avg: to_u32(cfg.storage.chunk_avg.bytes()),
        max: to_u32(cfg.storage.chunk_max.bytes()),
    }
}

enum Event {
    /// A signal or a `Shutdown`: unmount, detaching a busy mount.
    Stop(&'static str),
    /// `pactfs umount`: the outcome goes back on `done`.
    Unmount {
        lazy: bool,
        done: mpsc::Sender<Result<Unmounted, String>>,
    },
    Ended(std::io::Result<()>),
}

/// How an unmount asked for over the control socket went.
enum Unmounted {
    Clean,
    /// Busy, and detached on request: the node exits when it is let go.
    Detached,
}

/// Runs a mounted drive until it is unmounted or told to stop. `ready` is
/// called once the mount is live (or with the error that prevented it).
pub fn mount(
    home: &Home,
    lock: HomeLock,
    mountpoint: &Path,
    opts: &MountOptions,
    ready: impl FnOnce(Result<(), String>),
) -> Result<(), NodeError> {
    // Block the stop signals before any thread exists, so that every thread
    // inherits the mask and only the signal thread below receives them.
    let signals = block_stop_signals();
    limit_malloc_arenas();
    let started = (|| -> Result<_, NodeError> {
        let cfg = load_config(home)?;
        let secret = home.user_secret()?;
        let store = Arc::new(open_store(home)?);
        if home.restore_pending() {
            roots::restore(home, &cfg, &secret, &store)?;
        }
        let orphans = store.sweep_orphans()?;
        if orphans > 0 {
            tracing::info!(orphans, "removed files unlinked while open before a crash");
        }
        let drive = Arc::new(Drive::new(store.clone(), secret, chunk_sizes(&cfg), cfg.storage.capacity.bytes()));
        let fsname = format!("pactfs:{}", home.data_dir.display());
        drive.follow_mount(fsname.clone());
        let mut fuse_cfg = fuser::Config::default();
        fuse_cfg.mount_options = vec![
            fuser::MountOption::FSName(fsname),
            fuser::MountOption::Subtype("pactfs".into()),
            fuser::MountOption::DefaultPermissions,
        ];
        if opts.read_only {
            fuse_cfg.mount_options.push(fuser::MountOption::RO);
        }
        if opts.allow_other || cfg.mount.allow_other {
            fuse_cfg.acl = fuser::SessionACL::All;
        }
        fuse_cfg.n_threads = Some(FUSE_THREADS);
        fuse_cfg.clone_fd = true;
        let network = Arc::new(Network::start(home, &cfg, Some(store.clone()))?);
        drive.set_durability(match network.durability() {
            Some(handle) => handle,
            None => Arc::new(Offline { target: cfg.storage.replication }),
        });
        if let Some(remote) = network.remote() {
            drive.set_remote(remote);
        }
        // After the network: re-cutting may need chunks that were evicted.
        let journaled = drive.recover_journals()?;
        if journaled > 0 {
            tracing::info!(files = journaled, "cut what files had journaled before a crash into chunks");
        }
        let session = fuser::Session::new(PactFs::new(drive.clone()), mountpoint, &fuse_cfg)
            .map_err(|source| NodeError::Mount { mountpoint: mountpoint.to_path_buf(), source })?;
        Ok((store, drive, session, network))
    })();
    let (store, drive, mut session, network) = match started {
        Ok(s) => s,
        Err(e) => {
            ready(Err(e.to_string()));
            return Err(e);
        }
    };
    set_panic_policy(mountpoint);
    // Every unmount flushes first. fuser's unmounter makes the first try
    // (its mount then needs no cleanup at exit); after a refusal it forgets
    // the mount, so later tries are `unmount`'s.
    let mut unmounter = Some(session.unmount_callable());
    let flushing = &drive;
    let mut flush_and_unmount = move || {
        if let Err(e) = flushing.sync_all() {
            tracing::error!(cause = %e, "flush before unmount failed");
        }
        match unmounter.take() {
            Some(mut u) => u.unmount(),
            None => unmount(mountpoint),
        }
    };
    let (tx, rx) = mpsc::channel::<Event>();
    let session_tx = tx.clone();
    std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            let _ = session_tx.send(Event::Ended(session.run()));
        })
        .map_err(|e| NodeError::io(mountpoint, e))?;
    let ra_mount = mountpoint.to_path_buf();
    std::thread::spawn(move || raise_readahead(&ra_mount));
    let signal_tx = tx.clone();
    std::thread::spawn(move || {
        let name = wait_for_signal(&signals);
        let _ = signal_tx.send(Event::Stop(name));
    });
    let listener = control::bind(&home.control_socket())?;
    let control_tx = tx.clone();
    let control_store = store.clone();
    let mount_path = mountpoint.to_path_buf();
    let control_net = network.clone();
    // Weak: the drive goes at the end of this function, as before.
    let control_drive = Arc::downgrade(&drive);
    std::thread::spawn(move || {
        control::serve(listener, move |req| match req {
            control::Request::DurableStart { .. } => {
                // The kernel does not pass syncfs(2) on to a FUSE file
                // system, so the node flushes what the drive holds itself
                // (open files' dirty bytes cut and committed, the store
                // synced) before it looks at what is pending.
                let Some(drive) = control_drive.upgrade() else {
                    return control::Reply::err("the drive is stopping");
                };
                if let Err(e) = drive.sync_all() {
                    return control::Reply::err(format!("flushing the drive failed: {e}"));
                }
                control_net.control(&req).unwrap_or_else(|| control::Reply::err("unsupported"))
            }
            control::Request::Ping => control::Reply::ok(serde_json::json!({
                "pid": std::process::id(),
                "mountpoint": mount_path,
            })),
            control::Request::Stats => match control_store.stats() {
                Ok(s) => control::Reply::ok(serde_json::to_value(s).unwrap_or_default()),
                Err(e) => control::Reply::err(e),
            },
            control::Request::Shutdown => {
                let _ = control_tx.send(Event::Stop("shutdown"));
                control::Reply::ok(serde_json::Value::Null)
            }
            control::Request::Unmount { lazy } => {
                let (done, outcome) = mpsc::channel();
                if control_tx.send(Event::Unmount { lazy, done }).is_err() {
                    return control::Reply::err("the drive is stopping");
                }
                match outcome.recv() {
                    Ok(Ok(how)) => control::Reply::ok(serde_json::json!({
                        "detached": matches!(how, Unmounted::Detached),
                    })),
                    Ok(Err(why)) => control::Reply::err(why),
                    // The session ended first (umount(8), a signal): the
                    // node is on its way out, which the caller waits for.
                    Err(_) => control::Reply::ok(serde_json::json!({ "detached": false })),
                }
            }
            // The network's requests, and the ledger's (which the network owns).
            other => control_net.control(&other).unwrap_or_else(|| control::Reply::err("unsupported")),
        });
    });
    let (stop_maint, maint_rx) = mpsc::channel::<()>();
    let maint_store = store.clone();
    let maint_drive = Arc::downgrade(&drive);
    let maintenance = std::thread::spawn(move || {
        while let Err(mpsc::RecvTimeoutError::Timeout) = maint_rx.recv_timeout(MAINTENANCE_EVERY) {
            // Journaled bytes become chunks (and so get placed) within a
            // minute or two even in a file that stays open for days.
            if let Some(drive) = maint_drive.upgrade() {
                let files = drive.fold_journals(MAINTENANCE_EVERY);
                if files > 0 {
                    tracing::debug!(files, "cut journaled bytes into chunks");
                }
            }
            match maint_store.compact_packs() {
                Ok(0) => {}
                Ok(freed) => tracing::info!(freed, "compacted pack files"),
                Err(e) => tracing::warn!(cause = %e, "pack compaction failed"),
            }
        }
    });
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");
    ready(Ok(()));
    let mut result = Ok(());
    loop {
        match rx.recv() {
            Ok(Event::Stop(why)) => {
                tracing::info!(reason = why, "unmounting");
                if let Err(e) = flush_and_unmount() {
                    // Busy: detach it so the node can still exit cleanly; the
                    // kernel finishes the unmount when the last user leaves.
                    tracing::warn!(cause = %e, "unmount failed; detaching");
                    detach(mountpoint);
                }
            }
            Ok(Event::Unmount { lazy, done }) => {
                tracing::info!(lazy, "unmounting (pactfs umount)");
                let outcome = match flush_and_unmount() {
                    Ok(()) => Ok(Unmounted::Clean),
                    Err(e) if lazy => {
                        tracing::warn!(cause = %e, "unmount refused; detaching as asked");
                        detach(mountpoint);
                        Ok(Unmounted::Detached)
                    }
                    // Still mounted and served: whoever holds it goes on.
                    Err(e) => {
                        tracing::warn!(cause = %e, "unmount refused; the drive stays mounted");
                        let mnt = mountpoint.display();
                        Err(if e.raw_os_error() == Some(libc::EBUSY) {
                            format!(
                                "{mnt} is busy: a process has a file open or its working directory under it (`fuser -vm {mnt}` lists them); the drive stays mounted. `pactfs umount --lazy` detaches it now, and the node flushes and exits when the last of them lets go"
                            )
                        } else {
                            format!("{mnt} could not be unmounted ({e}); the drive stays mounted")
                        })
                    }
                };
                let _ = done.send(outcome);
            }
            Ok(Event::Ended(r)) => {
                if let Err(e) = r {
                    tracing::error!(cause = %e, "FUSE session ended with an error");
                    result = Err(NodeError::Mount { mountpoint: mountpoint.to_path_buf(), source: e });
                }
                break;
            }
            Err(_) => break,
        }
    }
    let _ = stop_maint.send(());
    let _ = maintenance.join();
    network.stop();
    drive.sync_all().map_err(|e| NodeError::Control(format!("final flush failed: {e}")))?;
    let _ = std::fs::remove_file(home.control_socket());
    drop(drive);
    drop(store);
    tracing::info!("stopped");
    // The home lock goes with the process, not before: threads that still
    // hold the store keep RocksDB's own lock until exit, and `pactfs umount`
    // waits for this lock to know the home is free.
    std::mem::forget(lock);
    result
}

/// The node's panic policy: a panic anywhere means state no thread can
/// trust, so log it, detach the mount (no dead "transport endpoint is not
/// connected" left behind; fsync'd data is safe in the store) and abort.
/// Continuing would leave the kernel waiting for replies that never come.
fn set_panic_policy(mountpoint: &Path) {
    let mnt = mountpoint.to_path_buf();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "node panicked: detaching the mount and aborting");
        default_hook(info);
        detach(&mnt);
        std::process::abort();
    }));
}

/// Kernel read-ahead on the mount, in KiB: one request as large as the
/// largest FUSE request, so a sequential reader costs one round trip per
/// MiB instead of eight.
const READ_AHEAD_KB: u32 = 1024;

/// Raises the mount's read-ahead (root only; best effort). Runs on its own
/// thread: the stat below waits until the session answers requests.
fn raise_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else { return };
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let knob = PathBuf::from(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"));
    if let Err(e) = std::fs::write(&knob, READ_AHEAD_KB.to_string()) {
        tracing::debug!(knob = %knob.display(), cause = %e, "read-ahead left at the kernel default");
    }
}

/// Unmounts `path`: umount(2) as root, else `fusermount3 -u`. Fails
/// (EBUSY) while a process has a file open or its working directory under
/// it, and the mount is then untouched.
fn unmount(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL in the mount point"))?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        return Err(err);
    }
    let out = std::process::Command::new("fusermount3").arg("-u").arg(path).output()?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    if said.contains("busy") {
        return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
    }
    Err(std::io::Error::other(said.trim().trim_start_matches("fusermount3: ").to_string()))
}

/// Lazily unmounts `path` (root only); used when a clean unmount is refused.
pub fn detach(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return };
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        let _ = std::process::Command::new("fusermount3").arg("-uz").arg(path).status();
    }
}

/// glibc gives each thread that allocates its own arena and keeps freed
/// chunk buffers in all of them: with the FUSE, sealing and prefetch
/// threads that doubled the resident memory of a streaming write.
pub(crate) fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

pub(crate) fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set; pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

pub(crate) fn wait_for_signal(set: &libc::sigset_t) -> &'static str {
    let mut sig = 0;
    // SAFETY: the set was initialised by block_stop_signals.
    unsafe { libc::sigwait(set, &mut sig) };
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "SIGHUP",
    }
}
