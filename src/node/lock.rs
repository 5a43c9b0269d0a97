//! The home's lock: one running node per home.

use super::{Home, NodeError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How long to wait for a lock holder that has died but not yet exited.
const DYING_HOLDER_WAIT: Duration = Duration::from_secs(10);

/// True while `pid` runs; a zombie (or a process exiting) counts as gone.
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Held for as long as a node (or an offline command) uses the home. An
/// advisory `flock` on `pactfs.lock`, which also records the holder's pid.
/// The lock follows the open file across `fork`, so a daemonising parent
/// can take it and hand it to its child.
pub struct HomeLock {
    file: File,
}

impl HomeLock {
    pub fn acquire(home: &Home) -> Result<HomeLock, NodeError> {
        let path = home.lock_file();
        std::fs::create_dir_all(&home.data_dir).map_err(|e| NodeError::io(&home.data_dir, e))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| NodeError::io(&path, e))?;
        let started = Instant::now();
        loop {
            // SAFETY: flock on a descriptor this process owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                let mut lock = HomeLock { file };
                lock.record_pid(std::process::id());
                return Ok(lock);
            }
            let mut text = String::new();
            let _ = file.rewind();
            let _ = file.read_to_string(&mut text);
            let pid: Option<u32> = text.trim().parse().ok();
            // A holder that is already dead (killed, its threads still
            // tearing down) lets go within moments: wait for that rather
            // than call the home mounted.
            let dying = pid.is_some_and(|p| !pid_alive(p as i32));
            if !dying || started.elapsed() > DYING_HOLDER_WAIT {
                return Err(NodeError::AlreadyMounted { home: home.data_dir.clone(), pid });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Records the pid of the process that now holds the lock.
    pub fn record_pid(&mut self, pid: u32) {
        let _ = self.file.set_len(0);
        let _ = self.file.rewind();
        let _ = writeln!(self.file, "{pid}");
    }
}
