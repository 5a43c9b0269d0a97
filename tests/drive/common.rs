//! Harness for the drive tests: a `Drive` guard that owns a pactfs home, mounts
//! it with the real binary (a real FUSE mount) and always cleans up, even on a
//! panic; helpers that run external commands with their output kept for the
//! failure message; deterministic test data; and a tree builder and comparer.
//!
//! Nothing here sleeps as a means of synchronisation: waits poll a condition
//! with a generous bound and say what never happened.

use std::ffi::CString;
use std::fs::{self, File, FileTimes};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

pub const PACTFS: &str = env!("CARGO_BIN_EXE_pactfs");
pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * KIB;
pub const GIB: u64 = 1024 * 1024 * 1024;
/// Test data changes every `BLOCK` bytes, so a misplaced block or chunk shows.
pub const BLOCK: usize = 4096;
/// Bound for one external command (a debug daemon under a loaded CI machine is slow).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(900);
/// Bound for waits on a condition (a mount going away, a process exiting).
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(120);

/// One pactfs home in a temp dir, mounted at `<home>/mnt` by `mount()`.
///
/// `Drop` unmounts (fusermount3, then lazy umount), kills the daemon and waits
/// for it, on success and panic alike; on panic it first prints the daemon log.
pub struct Drive {
    /// The temp dir; taken out (kept on disk) if a mount could not be removed.
    home_dir: Option<TempDir>,
    pub home: PathBuf,
    pub mnt: PathBuf,
    pub config: PathBuf,
    /// Daemon of the current mount at `mnt`, from the `Pid:` line.
    pid: Option<i32>,
    /// Mounts a test expected to be refused; cleaned in `Drop` if they happened.
    extra_mounts: Vec<(PathBuf, Option<i32>)>,
    /// Output of every pactfs command run so far, shown on failure.
    history: Vec<String>,
}

impl Drive {
    /// A fresh home with `pactfs init` run in it.
    pub fn new() -> Drive {
        Drive::new_in(&std::env::temp_dir())
    }

    /// A fresh home under `parent` (a small file system, say).
    pub fn new_in(parent: &Path) -> Drive {
        let dir = tempfile::Builder::new().prefix("pactfs-test-").tempdir_in(parent).expect("create temp home");
        let home = dir.path().canonicalize().expect("canonicalize temp home");
        let mnt = home.join("mnt");
        fs::create_dir(&mnt).expect("create mount point");
        let mut drive = Drive {
            home_dir: Some(dir),
            config: home.join("config.toml"),
            home,
            mnt,
            pid: None,
            extra_mounts: Vec::new(),
            history: Vec::new(),
        };
        let out = drive.pactfs_ok(&["init"]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let config =
            key_value(&stdout, "Config").unwrap_or_else(|| panic!("init printed no `Config:` line:\n{stdout}"));
        assert_eq!(Path::new(&config), drive.config, "with --home the config file lives in the home");
        assert!(drive.config.is_file(), "init printed Config: {config} but it is not a file");
        assert!(key_value(&stdout, "Node key").is_some(), "init printed no `Node key:` line:\n{stdout}");
        drive
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// The last pactfs command with its output, for assertion messages.
    pub fn last_command(&self) -> &str {
        self.history.last().map_or("", String::as_str)
    }

    /// Runs `pactfs --home H ARGS`, without checking the exit status.
    pub fn pactfs(&mut self, args: &[&str]) -> Output {
        let mut command = Command::new(PACTFS);
        command.arg("--home").arg(&self.home).args(args).env_remove("PACTFS_HOME");
        let out = output_of(&mut command);
        self.history.push(describe(&command, &out));
        out
    }

    /// Runs `pactfs --home H ARGS` and asserts exit 0.
    pub fn pactfs_ok(&mut self, args: &[&str]) -> Output {
        let out = self.pactfs(args);
        assert!(out.status.success(), "pactfs {args:?} failed:\n{}", self.history.last().unwrap());
        out
    }

    pub fn mount(&mut self) {
        self.mount_with(&[]);
    }

    /// `pactfs mount <home>/mnt EXTRA`: returns once the mount is live.
    pub fn mount_with(&mut self, extra: &[&str]) {
        assert!(self.pid.is_none(), "mount_with: the drive is already mounted");
        let mnt = self.mnt.to_str().expect("utf-8 temp path").to_owned();
        let mut args = vec!["mount", mnt.as_str()];
        args.extend_from_slice(extra);
        let out = self.pactfs_ok(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(pid) = key_value(&stdout, "Pid") {
            self.pid = Some(pid.parse().unwrap_or_else(|_| panic!("bad `Pid:` line in:\n{stdout}")));
        }
        let mounted =
            key_value(&stdout, "Mounted").unwrap_or_else(|| panic!("mount printed no `Mounted:` line:\n{stdout}"));
        assert_eq!(Path::new(&mounted), self.mnt, "`Mounted:` names the absolute mount point");
        let pid = self.pid.unwrap_or_else(|| panic!("mount printed no `Pid:` line:\n{stdout}"));
        assert!(
            is_mounted(&self.mnt),
            "`pactfs mount` returned but {} is not in /proc/self/mountinfo",
            self.mnt.display()
        );
        assert!(!process_gone(pid), "`pactfs mount` returned but daemon pid {pid} is not running");
    }

    /// Tries `pactfs mount MNT` (for refusals); whatever it mounted is cleaned in `Drop`.
    pub fn try_mount_at(&mut self, mnt: &Path) -> Output {
        fs::create_dir_all(mnt).expect("create second mount point");
        let out = self.pactfs(&["mount", mnt.to_str().unwrap()]);
        let pid = key_value(&String::from_utf8_lossy(&out.stdout), "Pid").and_then(|p| p.parse().ok());
        self.extra_mounts.push((mnt.to_path_buf(), pid));
        out
    }

    /// `pactfs umount`: asserts success, that the mount is gone and the daemon exited.
    pub fn unmount(&mut self) {
        self.unmount_as("umount");
    }

    /// As [`Drive::unmount`], through the subcommand `verb` (an alias).
    pub fn unmount_as(&mut self, verb: &str) {
        let pid = self.pid.expect("unmount: the drive is not mounted");
        let mnt = self.mnt.to_str().unwrap().to_owned();
        self.pactfs_ok(&[verb, &mnt]);
        assert!(!is_mounted(&self.mnt), "`pactfs umount` returned but {mnt} is still in /proc/self/mountinfo");
        wait_for(&format!("daemon pid {pid} to exit after `pactfs umount`"), WAIT_TIMEOUT, || process_gone(pid));
        self.pid = None;
    }

    /// SIGKILL the daemon, wait until it is dead, then remove the dead mount.
    pub fn kill9(&mut self) {
        let pid = self.pid.take().expect("kill9: the drive is not mounted");
        // SAFETY: plain syscall on a pid we were given by `pactfs mount`.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_for(&format!("daemon pid {pid} to die after SIGKILL"), WAIT_TIMEOUT, || process_gone(pid));
        assert!(force_unmount(&self.mnt), "could not remove the dead mount at {}", self.mnt.display());
    }

    /// Records that the node died by itself (a test made it fail) and waits
    /// until it is gone; unlike `kill9` this expects no mount to be left.
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    pub fn node_died(&mut self) -> i32 {
        let pid = self.pid.take().expect("node_died: the drive is not mounted");
        wait_for(&format!("daemon pid {pid} to exit"), WAIT_TIMEOUT, || process_gone(pid));
        pid
    }

    /// `pactfs stats --json`, parsed.
    pub fn stats(&mut self) -> serde_json::Value {
        let out = self.pactfs_ok(&["stats", "--json"]);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stats --json is not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
    }

    /// One integer field of `stats --json`.
    pub fn stat(&mut self, field: &str) -> u64 {
        let stats = self.stats();
        stats
            .get(field)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("stats --json has no integer `{field}`: {stats}"))
    }

    /// Sets `key = value` (value is TOML, e.g. `"10GiB"` with quotes) in `[section]` of config.toml.
    pub fn set_config(&self, section: &str, key: &str, value: &str) {
        let text = fs::read_to_string(&self.config).expect("read config.toml");
        let setting = format!("{key} = {value}");
        let (mut lines, mut in_section, mut done) = (Vec::new(), false, false);
        for line in text.lines() {
            let code = line.split('#').next().unwrap_or("").trim();
            if code.starts_with('[') {
                if in_section && !done {
                    lines.push(setting.clone());
                    done = true;
                }
                in_section = code == format!("[{section}]");
            } else if in_section && !done && code.split('=').next().map(str::trim) == Some(key) {
                lines.push(setting.clone());
                done = true;
                continue;
            }
            lines.push(line.to_owned());
        }
        if !done && in_section {
            lines.push(setting);
        } else if !done {
            lines.extend([String::new(), format!("[{section}]"), setting]);
        }
        fs::write(&self.config, lines.join("\n") + "\n").expect("write config.toml");
    }

    fn dump_diagnostics(&self) {
        eprintln!("==== pactfs home: {}", self.home.display());
        for entry in &self.history {
            eprintln!("{entry}");
        }
        let log = self.home.join("pactfs.log");
        match fs::read_to_string(&log) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(200);
                eprintln!("==== last {} lines of {}:", lines.len() - from, log.display());
                for line in &lines[from..] {
                    eprintln!("{line}");
                }
            }
            Err(err) => eprintln!("==== no daemon log at {}: {err}", log.display()),
        }
    }
}

impl Drop for Drive {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        if panicking {
            self.dump_diagnostics();
        }
        let mut mounts = std::mem::take(&mut self.extra_mounts);
        mounts.push((self.mnt.clone(), self.pid.take()));
        let mut stuck = Vec::new();
        for (mnt, pid) in mounts {
            if is_mounted(&mnt) && !force_unmount(&mnt) {
                stuck.push(mnt.display().to_string());
            }
            if let Some(pid) = pid.filter(|&pid| !process_gone(pid)) {
                // SAFETY: plain syscall on the daemon's pid.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let start = Instant::now();
                while !process_gone(pid) && start.elapsed() < WAIT_TIMEOUT {
                    thread::sleep(Duration::from_millis(10));
                }
                if !process_gone(pid) {
                    stuck.push(format!("daemon pid {pid}"));
                }
            }
        }
        if !stuck.is_empty() {
            // Never let TempDir's recursive delete walk into a live mount.
            let kept = self.home_dir.take().map(TempDir::keep);
            let message = format!("Drive cleanup left behind {stuck:?} (home kept at {kept:?})");
            if panicking {
                eprintln!("{message}");
            } else {
                panic!("{message}");
            }
        }
    }
}

/// The value of a stable `Key: value` line.
pub fn key_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix(':').map(|v| v.trim().to_owned()))
}

/// Whether `mnt` is a mount point in /proc/self/mountinfo.
pub fn is_mounted(mnt: &Path) -> bool {
    let table = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let want = mnt.as_os_str().as_bytes();
    table.lines().any(|line| line.split(' ').nth(4).is_some_and(|field| unescape_octal(field) == want))
}

fn unescape_octal(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            out.push(u8::from_str_radix(&field[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// A process counts as gone once it no longer runs (a zombie nobody reaps is gone).
pub fn process_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
            matches!(state, Some('Z' | 'X' | 'x'))
        }
    }
}

/// `fusermount3 -u`, then `umount -l`, then `fusermount3 -uz`; true once the mount is gone.
pub fn force_unmount(mnt: &Path) -> bool {
    let attempts: [(&str, &[&str]); 3] = [("fusermount3", &["-u"]), ("umount", &["-l"]), ("fusermount3", &["-uz"])];
    for (program, args) in attempts {
        if !is_mounted(mnt) {
            return true;
        }
        let mut command = Command::new(program);
        command.args(args).arg(mnt);
        let _ = output_within(&mut command, Duration::from_secs(60));
    }
    !is_mounted(mnt)
}

/// Polls `condition` until it holds; panics after `timeout` naming what never happened.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    while !condition() {
        assert!(start.elapsed() < timeout, "waited {timeout:?}, but this never happened: {what}");
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Waits until the wall clock has passed the second after `unix_seconds`, so a
/// timestamp taken now differs even on a file system with one-second times.
pub fn wait_clock_past(unix_seconds: i64) {
    wait_for("the clock to move past a recorded timestamp", WAIT_TIMEOUT, || {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 > unix_seconds
    });
}

/// Runs PROGRAM ARGS (in `cwd`) and asserts exit 0, showing stdout/stderr otherwise.
pub fn run(program: &str, args: &[&str], cwd: Option<&Path>) -> Output {
    let mut command = Command::new(program);
    command.args(args);
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    run_command(&mut command)
}

/// Runs a prepared command and asserts exit 0.
pub fn run_command(command: &mut Command) -> Output {
    let out = output_of(command);
    assert!(out.status.success(), "command failed:\n{}", describe(command, &out));
    out
}

/// Runs a command to completion (stdin empty) and returns its output, exit status unchecked.
pub fn output_of(command: &mut Command) -> Output {
    output_within(command, COMMAND_TIMEOUT).unwrap_or_else(|err| panic!("{err}"))
}

/// Like `output_of` but reports a timeout as `Err`. Output goes to files, not pipes,
/// so a daemon that inherits them cannot keep us waiting.
pub fn output_within(command: &mut Command, timeout: Duration) -> Result<Output, String> {
    let mut stdout = tempfile::tempfile().expect("temp file for stdout");
    let mut stderr = tempfile::tempfile().expect("temp file for stderr");
    command
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().expect("clone fd"))
        .stderr(stderr.try_clone().expect("clone fd"));
    let mut child = command.spawn().map_err(|err| format!("cannot start {}: {err}", show(command)))?;
    let pid = child.id() as i32;
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let status = match done_rx.recv_timeout(timeout) {
        Ok(status) => status.map_err(|err| format!("waiting for {}: {err}", show(command)))?,
        Err(_) => {
            // SAFETY: our own child, not yet reaped (the waiter thread holds it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = done_rx.recv();
            return Err(format!("{} did not finish within {timeout:?}", show(command)));
        }
    };
    let read_all = |file: &mut File| {
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_end(&mut bytes)).expect("read command output");
        bytes
    };
    Ok(Output { status, stdout: read_all(&mut stdout), stderr: read_all(&mut stderr) })
}

pub fn show(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

pub fn describe(command: &Command, out: &Output) -> String {
    format!(
        "$ {}\n[{}]\n--- stdout:\n{}--- stderr:\n{}",
        show(command),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `p.to_str()` for argument lists (all test paths are UTF-8 temp paths).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// `statvfs(2)` of a path.
pub fn statvfs(path: &Path) -> libc::statvfs {
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs only writes into the zeroed struct we pass.
    let mut buf: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut buf) };
    assert_eq!(rc, 0, "statvfs {}: {}", path.display(), std::io::Error::last_os_error());
    buf
}

/// `getxattr(2)`: the value of attribute `name` of `path` (following symlinks).
pub fn get_xattr(path: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let (c_path, c_name) = (CString::new(path.as_os_str().as_bytes()).unwrap(), CString::new(name).unwrap());
    // Ask for the size, then read; a value that grew in between is read again.
    loop {
        // SAFETY: valid NUL-terminated strings; a null buffer of size 0 asks for the size.
        let size = unsafe { libc::getxattr(c_path.as_ptr(), c_name.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: the buffer is `buf.len()` bytes long.
        let got = unsafe { libc::getxattr(c_path.as_ptr(), c_name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) {
            return Err(err);
        }
    }
}

/// `setxattr(2)` with `flags` (0, XATTR_CREATE or XATTR_REPLACE).
pub fn set_xattr(path: &Path, name: &str, value: &[u8], flags: i32) -> std::io::Result<()> {
    let (c_path, c_name) = (CString::new(path.as_os_str().as_bytes()).unwrap(), CString::new(name).unwrap());
    // SAFETY: valid NUL-terminated strings and a buffer of `value.len()` bytes.
    let rc = unsafe { libc::setxattr(c_path.as_ptr(), c_name.as_ptr(), value.as_ptr().cast(), value.len(), flags) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// `removexattr(2)`.
pub fn remove_xattr(path: &Path, name: &str) -> std::io::Result<()> {
    let (c_path, c_name) = (CString::new(path.as_os_str().as_bytes()).unwrap(), CString::new(name).unwrap());
    // SAFETY: valid NUL-terminated strings.
    let rc = unsafe { libc::removexattr(c_path.as_ptr(), c_name.as_ptr()) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// `listxattr(2)`: the attribute names of `path`.
pub fn list_xattrs(path: &Path) -> Vec<String> {
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a null buffer of size 0 asks for the size.
    let size = unsafe { libc::listxattr(c_path.as_ptr(), std::ptr::null_mut(), 0) };
    assert!(size >= 0, "listxattr {}: {}", path.display(), std::io::Error::last_os_error());
    let mut buf = vec![0u8; size as usize];
    // SAFETY: the buffer is `buf.len()` bytes long.
    let got = unsafe { libc::listxattr(c_path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(got >= 0, "listxattr {}: {}", path.display(), std::io::Error::last_os_error());
    buf.truncate(got as usize);
    buf.split(|b| *b == 0).filter(|n| !n.is_empty()).map(|n| String::from_utf8_lossy(n).into_owned()).collect()
}

/// Fills `buf` with the test data of stream `seed` at byte `offset`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = 0;
    while pos < buf.len() {
        let abs = offset + pos as u64;
        let within = (abs % BLOCK as u64) as usize;
        let n = (BLOCK - within).min(buf.len() - pos);
        let block = block_bytes(seed, abs / BLOCK as u64);
        buf[pos..pos + n].copy_from_slice(&block[within..within + n]);
        pos += n;
    }
}

/// `len` bytes of test data of stream `seed`: xorshift, reseeded per 4 KiB block.
pub fn test_data(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    fill(seed, 0, &mut data);
    data
}

fn block_bytes(seed: u64, block_idx: u64) -> [u8; BLOCK] {
    let mut state = splitmix64(seed ^ splitmix64(block_idx.wrapping_add(0x5EED))) | 1;
    let mut out = [0; BLOCK];
    for word in out.chunks_exact_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.copy_from_slice(&state.to_le_bytes());
    }
    out
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Compares bytes without printing megabytes: lengths and the first differing offset.
pub fn assert_bytes_eq(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!("{what}: got {} bytes, expected {}; first differing byte at {first:?}", got.len(), want.len());
    }
}

pub fn assert_file(path: &Path, want: &[u8]) {
    let got = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_bytes_eq(&path.display().to_string(), &got, want);
}

/// Writes a file and fsyncs it and its parent directory.
pub fn write_synced(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut file = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    file.sync_all().unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
    sync_dir(path.parent().unwrap());
}

pub fn sync_dir(dir: &Path) {
    File::open(dir).and_then(|d| d.sync_all()).unwrap_or_else(|e| panic!("fsync dir {}: {e}", dir.display()));
}

/// Sets atime and mtime (seconds, nanoseconds) of a file or directory (not following symlinks' targets: call on real entries).
pub fn set_times(path: &Path, secs: u64, nanos: u32) {
    let time = UNIX_EPOCH + Duration::new(secs, nanos);
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.set_times(FileTimes::new().set_accessed(time).set_modified(time))
        .unwrap_or_else(|e| panic!("set times of {}: {e}", path.display()));
}

/// Sizes at the edges, each with why it is interesting.
pub const TREE_FILES: &[(&str, usize)] = &[
    ("empty", 0),                         // no chunk at all
    ("one", 1),                           // smallest non-empty file
    ("page_minus", 4095),                 // one below a page / FUSE block
    ("page", 4096),                       // exactly one page
    ("page_plus", 4097),                  // one above a page
    ("a/chunk_min_minus", 256 * KIB - 1), // one below chunk_min: still one chunk
    ("a/chunk_min", 256 * KIB),           // exactly chunk_min
    ("a/b/avg_plus", MIB + 1),            // just above chunk_avg
    ("a/b/c/max_plus", 5 * MIB),          // above chunk_max: at least two chunks
];
/// Several chunks of every size; left out of trees built with `with_big = false`.
pub const TREE_BIG: (&str, usize) = ("a/b/c/big", 20 * MIB);

/// Builds the standard tree under `root` (which must not exist): nested dirs,
/// files at `TREE_FILES` sizes, a 0600 and a 0755 file, a 0700 dir, symlinks,
/// a hard link, an empty dir, and distinct nanosecond mtimes everywhere.
/// Returns `(relative path, kind)` with kind `f`, `d` or `l`, sorted.
pub fn make_tree(root: &Path, with_big: bool) -> Vec<(String, char)> {
    let mut entries: Vec<(String, char)> = Vec::new();
    for dir in ["", "a", "a/b", "a/b/c", "emptydir", "private"] {
        fs::create_dir(root.join(dir)).unwrap_or_else(|e| panic!("mkdir {dir}: {e}"));
        fs::set_permissions(root.join(dir), fs::Permissions::from_mode(if dir == "private" { 0o700 } else { 0o755 }))
            .unwrap();
        if !dir.is_empty() {
            entries.push((dir.to_owned(), 'd'));
        }
    }
    let mut files: Vec<(&str, usize)> = TREE_FILES.to_vec();
    if with_big {
        files.push(TREE_BIG);
    }
    files.extend([("a/secret", 100), ("a/b/script.sh", 300), ("private/note", 10)]);
    for (seed, (rel, size)) in files.iter().enumerate() {
        fs::write(root.join(rel), test_data(seed as u64 + 1, *size)).unwrap_or_else(|e| panic!("write {rel}: {e}"));
        let mode = match *rel {
            "a/secret" => 0o600,
            "a/b/script.sh" => 0o755,
            _ => 0o644,
        };
        fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
        entries.push((rel.to_string(), 'f'));
    }
    fs::hard_link(root.join("page_plus"), root.join("a/hard")).expect("hard link");
    entries.push(("a/hard".into(), 'f'));
    symlink("one", root.join("link_to_one")).expect("symlink");
    symlink("../../../page", root.join("a/b/c/link_up")).expect("symlink");
    entries.extend([("link_to_one".into(), 'l'), ("a/b/c/link_up".into(), 'l')]);
    // Files first, then directories deepest first, so later steps do not move dir mtimes.
    for (idx, (rel, _)) in files.iter().enumerate() {
        set_times(&root.join(rel), 1_500_000_000 + idx as u64 * 1000, 123_456_789 - idx as u32);
    }
    for (idx, dir) in ["a/b/c", "a/b", "a", "emptydir", "private", ""].iter().enumerate() {
        set_times(&root.join(dir), 1_400_000_000 + idx as u64 * 1000, 987_654_321 - idx as u32);
    }
    entries.sort();
    entries
}

/// What `compare_trees` checks beyond names, kinds, modes, owners and contents.
#[derive(Clone, Copy)]
pub struct Compare {
    pub mtimes: bool,
    pub nlink: bool,
}

/// Walks two trees and asserts they match; lists every difference found.
pub fn compare_trees(want_root: &Path, got_root: &Path, check: Compare) {
    let (want, got) = (walk(want_root), walk(got_root));
    let mut problems = Vec::new();
    if want != got {
        problems.push(format!("entries differ:\n  expected {want:?}\n  got      {got:?}"));
    }
    for rel in want.iter().filter(|rel| got.contains(rel)) {
        let (w_path, g_path) = (want_root.join(rel), got_root.join(rel));
        let (w, g) = (fs::symlink_metadata(&w_path).unwrap(), fs::symlink_metadata(&g_path).unwrap());
        let kind = |m: &fs::Metadata| m.mode() & libc::S_IFMT;
        if kind(&w) != kind(&g) {
            problems.push(format!("{rel}: file type {:o} != {:o}", kind(&g), kind(&w)));
            continue;
        }
        if w.file_type().is_symlink() {
            if fs::read_link(&w_path).ok() != fs::read_link(&g_path).ok() {
                problems.push(format!(
                    "{rel}: symlink target {:?} != {:?}",
                    fs::read_link(&g_path).ok(),
                    fs::read_link(&w_path).ok()
                ));
            }
            continue;
        }
        if w.mode() & 0o7777 != g.mode() & 0o7777 {
            problems.push(format!("{rel}: mode {:o} != {:o}", g.mode() & 0o7777, w.mode() & 0o7777));
        }
        if (w.uid(), w.gid()) != (g.uid(), g.gid()) {
            problems.push(format!("{rel}: owner {}:{} != {}:{}", g.uid(), g.gid(), w.uid(), w.gid()));
        }
        if check.mtimes && (w.mtime(), w.mtime_nsec()) != (g.mtime(), g.mtime_nsec()) {
            problems.push(format!(
                "{rel}: mtime {}.{:09} != {}.{:09}",
                g.mtime(),
                g.mtime_nsec(),
                w.mtime(),
                w.mtime_nsec()
            ));
        }
        if w.is_file() {
            if check.nlink && w.nlink() != g.nlink() {
                problems.push(format!("{rel}: nlink {} != {}", g.nlink(), w.nlink()));
            }
            if w.len() != g.len() {
                problems.push(format!("{rel}: size {} != {}", g.len(), w.len()));
            }
            match fs::read(&g_path) {
                Ok(bytes) if bytes == fs::read(&w_path).unwrap() => {}
                Ok(bytes) => problems.push(format!("{rel}: contents differ ({} bytes read)", bytes.len())),
                Err(err) => problems.push(format!("{rel}: read failed: {err}")),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} differs from {}:\n{}",
        got_root.display(),
        want_root.display(),
        problems.join("\n")
    );
}

/// Relative paths of everything under `root`, sorted, not following symlinks.
pub fn walk(root: &Path) -> Vec<String> {
    fn visit(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
            let path = entry.path();
            out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                visit(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    visit(root, root, &mut out);
    out.sort();
    out
}

/// `lseek(2)`, for the `SEEK_DATA` and `SEEK_HOLE` cases.
pub fn seek(file: &std::fs::File, off: i64, whence: libc::c_int) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: lseek on an open descriptor touches no memory of ours.
    let at = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if at < 0 { Err(std::io::Error::last_os_error()) } else { Ok(at as u64) }
}

/// `fallocate(2)` on an open file.
pub fn fallocate(file: &std::fs::File, mode: libc::c_int, off: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on an open descriptor touches no memory of ours.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}
