//! The kernel's flags for this drive's mount (`ro`, `noatime`,
//! `strictatime`, `nodiratime`). They decide whether a read writes the
//! access time, and a remount (`mount -o remount,ro DIR`) changes them
//! without a word to the daemon: they are read from
//! `/proc/self/mountinfo`, found by the mount's source (`pactfs:<data
//! dir>`, unique per home), and read again only when the kernel says the
//! mount table changed (the file polls `POLLPRI`), so a check costs one
//! `poll(2)`.

use std::sync::Mutex;

/// When a read writes the access time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AtimeRule {
    /// `relatime`, the default: when the access time is not newer than
    /// the last change, or a day old.
    #[default]
    Relative,
    /// `noatime`, or a read-only mount: never.
    Never,
    /// `strictatime`: at every read.
    Strict,
}

/// What the mount's flags ask of the drive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub read_only: bool,
    pub atime: AtimeRule,
    /// `nodiratime`: listings leave a directory's access time.
    pub no_dir_atime: bool,
}

impl Flags {
    /// The rule for a read of a file (`dir` false) or a listing.
    pub fn atime_rule(&self, dir: bool) -> AtimeRule {
        if self.read_only || (dir && self.no_dir_atime) { AtimeRule::Never } else { self.atime }
    }
}

/// The flags of one mount, kept current.
pub struct MountFlags {
    source: String,
    state: Mutex<State>,
}

struct State {
    /// `/proc/self/mountinfo`, kept open to be polled. Opened before the
    /// mount is made, so the mount itself shows as a change.
    file: Option<std::fs::File>,
    /// As last read; `None` if the mount was not in the table then.
    flags: Option<Flags>,
    read: bool,
}

impl MountFlags {
    /// Follows the mount whose source is `source` (the FUSE fsname).
    pub fn new(source: String) -> MountFlags {
        let file = std::fs::File::open("/proc/self/mountinfo").ok();
        if file.is_none() {
            tracing::debug!("no /proc/self/mountinfo: mount flags are not followed (relatime, read-write)");
        }
        MountFlags { source, state: Mutex::new(State { file, flags: None, read: false }) }
    }

    /// The flags as the kernel has them now (the defaults when they cannot
    /// be read).
    pub fn get(&self) -> Flags {
        let mut st = crate::lock(&self.state);
        let State { file, flags, read: done } = &mut *st;
        let Some(f) = file.as_mut() else { return Flags::default() };
        if !*done || changed(f) {
            *flags = read(f).and_then(|text| parse(&text, &self.source));
            *done = true;
        }
        flags.unwrap_or_default()
    }
}

/// Whether the mount table changed since the last call (the poll itself
/// acknowledges the change).
fn changed(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLPRI, revents: 0 };
    // SAFETY: one valid pollfd, for the length of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLPRI | libc::POLLERR) != 0
}

fn read(mut file: &std::fs::File) -> Option<String> {
    use std::io::{Read, Seek};
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The flags of the first mount in `mountinfo` whose source is `source`.
/// A line: `id parent major:minor root mountpoint options [optional...] -
/// fstype source super-options`, with space, tab, newline and backslash
/// escaped in octal.
pub fn parse(mountinfo: &str, source: &str) -> Option<Flags> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let mut fs = fs.split(' ');
        let (_fstype, src) = (fs.next()?, fs.next()?);
        if unescape(src) != source {
            return None;
        }
        let options = mount.split(' ').nth(5)?;
        let mut flags = Flags { atime: AtimeRule::Strict, ..Flags::default() };
        for opt in options.split(',') {
            match opt {
                "ro" => flags.read_only = true,
                "noatime" => flags.atime = AtimeRule::Never,
                "relatime" => flags.atime = AtimeRule::Relative,
                "nodiratime" => flags.no_dir_atime = true,
                _ => {}
            }
        }
        Some(flags)
    })
}

fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
45 22 0:40 / /mnt/a rw,nosuid,nodev,noatime shared:7 - fuse.pactfs pactfs:/home/u/.pactfs rw,user_id=0
46 22 0:41 / /mnt/b ro,nosuid,nodev,relatime,nodiratime - fuse.pactfs pactfs:/var/my\\040drive rw
47 22 0:42 / /mnt/c rw,nosuid,nodev - fuse.pactfs pactfs:/strict rw
";

    #[test]
    fn flags_come_from_the_mount_with_our_source() {
        let a = parse(INFO, "pactfs:/home/u/.pactfs").unwrap();
        assert_eq!(a, Flags { read_only: false, atime: AtimeRule::Never, no_dir_atime: false });
        let b = parse(INFO, "pactfs:/var/my drive").unwrap();
        assert_eq!(b, Flags { read_only: true, atime: AtimeRule::Relative, no_dir_atime: true });
        assert_eq!(b.atime_rule(false), AtimeRule::Never, "read-only writes no access time");
        // Neither relatime nor noatime shown: strictatime.
        assert_eq!(parse(INFO, "pactfs:/strict").unwrap().atime, AtimeRule::Strict);
        assert_eq!(parse(INFO, "pactfs:/elsewhere"), None);
        assert_eq!(parse("garbage\n\n- -\n", "pactfs:/strict"), None);
    }

    #[test]
    fn unescape_reads_octal_and_leaves_the_rest() {
        assert_eq!(unescape("a\\040b\\134c\\0"), "a b\\c\\0");
    }
}
