//! The pactfs home: where the config, the keys and the data live, and
//! `pactfs init`, which creates them.

use super::NodeError;
use crate::chunk::UserSecret;
use ed25519_dalek::SigningKey;
use ring::rand::{SecureRandom, SystemRandom};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where one pactfs home keeps its files.
#[derive(Clone, Debug)]
pub struct Home {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
}

impl Home {
    /// Everything in one directory (`--home DIR` or `PACTFS_HOME`).
    pub fn single(dir: &Path) -> Home {
        Home { config_dir: dir.to_path_buf(), data_dir: dir.to_path_buf() }
    }

    /// The XDG-style split under a user's home directory.
    pub fn split(user_home: &Path) -> Home {
        Home { config_dir: user_home.join(".config/pactfs"), data_dir: user_home.join(".local/share/pactfs") }
    }

    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }
    pub fn identity_file(&self) -> PathBuf {
        self.config_dir.join("identity.key")
    }
    pub fn secret_file(&self) -> PathBuf {
        self.config_dir.join("user.secret")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.data_dir.join("pactfs.lock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.data_dir.join("pactfs.pid")
    }
    pub fn control_socket(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }
    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join("pactfs.log")
    }

    /// Creates the home with a commented default config, a node identity
    /// and a user secret. Refuses to overwrite existing keys.
    pub fn init(&self) -> Result<SigningKey, NodeError> {
        let rng = SystemRandom::new();
        let mut seed = [0u8; 32];
        rng.fill(&mut seed).map_err(|_| NodeError::Random)?;
        let mut secret = [0u8; 32];
        rng.fill(&mut secret).map_err(|_| NodeError::Random)?;
        self.init_with(seed, secret)
    }

    /// [`Home::init`] with given keys (`init --restore`).
    pub fn init_with(&self, seed: [u8; 32], secret: [u8; 32]) -> Result<SigningKey, NodeError> {
        for key in [self.identity_file(), self.secret_file()] {
            if key.exists() {
                return Err(NodeError::KeysExist(key));
            }
        }
        for dir in [&self.config_dir, &self.data_dir] {
            fs::create_dir_all(dir).map_err(|e| NodeError::io(dir, e))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| NodeError::io(dir, e))?;
        }
        if !self.config_file().exists() {
            write_durable(&self.config_file(), crate::config::DEFAULT_CONFIG_TOML.as_bytes(), 0o600)?;
        }
        let identity = SigningKey::from_bytes(&seed);
        write_durable(&self.identity_file(), &seed, 0o600)?;
        write_durable(&self.secret_file(), &secret, 0o600)?;
        Ok(identity)
    }

    pub fn identity(&self) -> Result<SigningKey, NodeError> {
        Ok(SigningKey::from_bytes(&read_key(&self.identity_file())?))
    }

    /// The identity's 32-byte seed (the libp2p key and the signing key).
    pub fn identity_seed(&self) -> Result<[u8; 32], NodeError> {
        read_key(&self.identity_file())
    }

    pub fn user_secret(&self) -> Result<UserSecret, NodeError> {
        Ok(UserSecret::from_bytes(read_key(&self.secret_file())?))
    }
}

fn read_key(path: &Path) -> Result<[u8; 32], NodeError> {
    let bytes = fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => NodeError::NotInitialised(path.to_path_buf()),
        _ => NodeError::io(path, e),
    })?;
    bytes.try_into().map_err(|b: Vec<u8>| NodeError::BadKey { path: path.to_path_buf(), len: b.len() })
}

/// Writes a file so that it is either absent or complete after a crash:
/// temp file, fsync, link into place (never over an existing file), fsync
/// the directory.
pub fn write_durable(path: &Path, bytes: &[u8], mode: u32) -> Result<(), NodeError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().map_or("pactfs".into(), |n| n.to_string_lossy())));
    let _ = fs::remove_file(&tmp);
    let mut f =
        OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(|e| NodeError::io(&tmp, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| NodeError::io(&tmp, e))?;
    let linked = fs::hard_link(&tmp, path).map_err(|e| NodeError::io(path, e));
    let _ = fs::remove_file(&tmp);
    linked?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| NodeError::io(dir, e))?;
    Ok(())
}
