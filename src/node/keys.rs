//! The key file: the node identity and the user secret in one file, all a
//! new machine needs (with the providers) to get the drive back.
//!
//! ```text
//! "pactfs-keys\n" | codec::encode(KEYS_V1, KeyFile { identity seed, user secret })
//! ```
//!
//! `pactfs init --restore` makes a home from it and marks the home as to
//! be restored: its first mount finds the newest root and rebuilds the
//! store from the snapshot before it mounts.

use super::NodeError;
use super::home::{Home, write_durable};
use crate::codec;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"pactfs-keys\n";
const KEYS_V1: u8 = 1;
const MAX_KEY_FILE: usize = 256;
/// In the data directory while the home waits for its restore.
const RESTORE_MARKER: &str = "restore.pending";

#[derive(Serialize, Deserialize)]
struct KeyFile {
    identity: [u8; 32],
    secret: [u8; 32],
}

impl Home {
    /// The marker of a home made by `init --restore` and not yet restored.
    pub fn restore_marker(&self) -> PathBuf {
        self.data_dir.join(RESTORE_MARKER)
    }

    pub fn restore_pending(&self) -> bool {
        self.restore_marker().exists()
    }

    /// The restore is done: the home mounts normally from now on.
    pub fn restore_done(&self) -> Result<(), NodeError> {
        let marker = self.restore_marker();
        fs::remove_file(&marker).map_err(|e| NodeError::io(&marker, e))?;
        if let Ok(d) = fs::File::open(&self.data_dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Writes this home's keys to `out` (0600), never over an existing file.
    pub fn export_keys(&self, out: &Path) -> Result<(), NodeError> {
        if out.exists() {
            return Err(NodeError::KeysExist(out.to_path_buf()));
        }
        let file = KeyFile { identity: self.identity_seed()?, secret: *self.user_secret()?.as_bytes() };
        let bytes = [MAGIC, &codec::encode(KEYS_V1, &file)].concat();
        write_durable(out, &bytes, 0o600)
    }

    /// Makes a new home with the keys in `keyfile`, to be restored at its
    /// first mount. Returns the identity's public key.
    pub fn init_restore(&self, keyfile: &Path) -> Result<[u8; 32], NodeError> {
        let bytes = fs::read(keyfile).map_err(|e| NodeError::io(keyfile, e))?;
        let bad = |why: String| NodeError::BadKeyFile { path: keyfile.to_path_buf(), why };
        let body = bytes.strip_prefix(MAGIC).ok_or_else(|| bad("not a pactfs key file".into()))?;
        let file: KeyFile = codec::decode(KEYS_V1, body, MAX_KEY_FILE).map_err(|e| bad(e.to_string()))?;
        let identity = self.init_with(file.identity, file.secret)?;
        write_durable(&self.restore_marker(), b"", 0o600)?;
        Ok(identity.verifying_key().to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_export_to_a_private_file_and_restore_into_a_new_home() {
        let dir = tempfile::tempdir().unwrap();
        let a = Home::single(&dir.path().join("a"));
        a.init().unwrap();
        let out = dir.path().join("keys");
        a.export_keys(&out).unwrap();
        assert_eq!(fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(a.export_keys(&out), Err(NodeError::KeysExist(_))), "never overwrites");

        let b = Home::single(&dir.path().join("b"));
        assert!(!b.restore_pending());
        b.init_restore(&out).unwrap();
        assert!(b.restore_pending());
        assert_eq!(b.identity_seed().unwrap(), a.identity_seed().unwrap());
        assert_eq!(b.user_secret().unwrap().as_bytes(), a.user_secret().unwrap().as_bytes());
        assert!(b.init_restore(&out).is_err(), "keys exist");
        b.restore_done().unwrap();
        assert!(!b.restore_pending());

        // Damaged or foreign files are refused with the reason.
        let c = Home::single(&dir.path().join("c"));
        let mut bytes = fs::read(&out).unwrap();
        bytes.truncate(bytes.len() - 1);
        let short = dir.path().join("short");
        fs::write(&short, &bytes).unwrap();
        assert!(matches!(c.init_restore(&short), Err(NodeError::BadKeyFile { .. })));
        let foreign = dir.path().join("foreign");
        fs::write(&foreign, b"hello").unwrap();
        assert!(matches!(c.init_restore(&foreign), Err(NodeError::BadKeyFile { .. })));
        assert!(!c.identity_file().exists());
    }
}
