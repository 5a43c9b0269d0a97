//! The home's lock: one running node per home.

use super::{Home, NodeError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;

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
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)
            .map_err(|e| NodeError::io(&path, e))?;
        // SAFETY: flock on a descriptor this process owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let pid = text.trim().parse().ok();
            return Err(NodeError::AlreadyMounted { home: home.data_dir.clone(), pid });
        }
        Ok(HomeLock { file })
    }

    /// Records the pid of the process that now holds the lock.
    pub fn record_pid(&mut self, pid: u32) {
        let _ = self.file.set_len(0);
        let _ = self.file.rewind();
        let _ = writeln!(self.file, "{pid}");
    }
}
