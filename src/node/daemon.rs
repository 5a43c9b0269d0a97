//! Running the node in the background: fork, detach, and tell the parent
//! when the mount is live (or why it is not), so `pactfs mount` returns
//! only once the drive can be used.

use super::NodeError;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// What the parent learns from the child.
pub enum Outcome {
    /// The child mounted; it runs on as `pid`.
    Ready { pid: i32 },
    /// The child failed before the mount was live.
    Failed(String),
}

/// The child's end of the readiness pipe.
pub struct Notifier(File);

impl Notifier {
    pub fn ready(mut self) {
        let _ = self.0.write_all(b"OK\n");
    }
    pub fn failed(mut self, why: &str) {
        let _ = writeln!(self.0, "ERR {why}");
    }
}

/// Forks. In the parent, waits for the child's word and returns it. In the
/// child (detached, stdio to `log`), returns `None` and the notifier; the
/// caller runs the node and reports through it.
///
/// Must be called before the process starts any thread.
pub fn fork_detached(log: &Path) -> Result<Result<Outcome, Notifier>, NodeError> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two new descriptors into the array on success.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(NodeError::io(Path::new("pipe"), std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned here only.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let log_file = OpenOptions::new().create(true).append(true).open(log).map_err(|e| NodeError::io(log, e))?;
    // SAFETY: the process is single-threaded here (documented precondition),
    // so the child may run arbitrary code after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(NodeError::io(Path::new("fork"), std::io::Error::last_os_error()));
    }
    if pid > 0 {
        drop(write_end);
        let mut answer = String::new();
        let _ = File::from(read_end).read_to_string(&mut answer);
        let outcome = match answer.lines().next() {
            Some("OK") => Outcome::Ready { pid },
            Some(line) => Outcome::Failed(line.trim_start_matches("ERR ").to_string()),
            None => Outcome::Failed(format!("the node exited before mounting; see {}", log.display())),
        };
        return Ok(Ok(outcome));
    }
    drop(read_end);
    // SAFETY: plain syscalls on descriptors this process owns.
    unsafe {
        libc::setsid();
        let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if devnull >= 0 {
            libc::dup2(devnull, 0);
            libc::close(devnull);
        }
        libc::dup2(log_file.as_raw_fd(), 1);
        libc::dup2(log_file.as_raw_fd(), 2);
    }
    Ok(Err(Notifier(File::from(write_end))))
}
