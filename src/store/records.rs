//! Stored records: the typed keys and versioned values of each column family.
//!
//! Keys are fixed-width big-endian so scans come out ordered. Values go
//! through `codec` with a version byte; a new layout adds a new version and a
//! migration rather than changing the meaning of an old one.

use crate::chunk::{ChunkId, ChunkKey, ManifestEntry};
use crate::codec::{self, CodecError};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Current layout version of every record below.
pub const RECORD_V1: u8 = 1;

/// Largest inode record: a symlink target is at most PATH_MAX.
const INODE_LIMIT: usize = 8 * 1024;
const SMALL_LIMIT: usize = 4 * 1024;

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

/// A point in time as stored: seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Stamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Stamp {
    pub fn now() -> Stamp {
        Stamp::from(SystemTime::now())
    }
}

impl From<SystemTime> for Stamp {
    fn from(t: SystemTime) -> Stamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Stamp { secs: d.as_secs() as i64, nanos: d.subsec_nanos() },
            Err(e) => {
                let d = e.duration();
                if d.subsec_nanos() == 0 {
                    Stamp { secs: -(d.as_secs() as i64), nanos: 0 }
                } else {
                    Stamp { secs: -(d.as_secs() as i64) - 1, nanos: 1_000_000_000 - d.subsec_nanos() }
                }
            }
        }
    }
}

impl From<Stamp> for SystemTime {
    fn from(s: Stamp) -> SystemTime {
        if s.secs >= 0 {
            UNIX_EPOCH + Duration::new(s.secs as u64, s.nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(s.secs.unsigned_abs()) + Duration::from_nanos(u64::from(s.nanos))
        }
    }
}

/// An inode: the attributes `stat` shows. A file's bytes live in its
/// manifest; a symlink's target lives here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub ino: u64,
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (07777).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    pub rdev: u32,
    /// Parent directory of a directory (for ".."); unused for other kinds.
    pub parent: u64,
    pub atime: Stamp,
    pub mtime: Stamp,
    pub ctime: Stamp,
    pub crtime: Stamp,
    pub symlink: Option<Vec<u8>>,
    /// Bytes of a file its chunks cover (holes excluded): what `st_blocks`
    /// reports, so `du` of a sparse file is honest.
    pub allocated: u64,
}

/// A directory entry's value: the child and its kind (for readdir).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dirent {
    pub ino: u64,
    pub kind: Kind,
}

/// Where a chunk stands in the market. Every chunk starts `Pending` and
/// pinned locally; later layers move it to placed with its promises.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub pending: bool,
    pub pinned: bool,
    pub replicas: u8,
    pub promises: Vec<[u8; 32]>,
}

impl Placement {
    pub fn new_pending() -> Placement {
        Placement { pending: true, pinned: true, replicas: 0, promises: Vec::new() }
    }
}

/// The index entry of one chunk: how many manifest entries use it, where
/// its sealed bytes are, and its placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub refs: u64,
    pub pack: u32,
    /// Byte offset of the sealed body within the pack file.
    pub offset: u64,
    pub len: u32,
    pub placement: Placement,
}

/// Space accounting of one pack file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRecord {
    /// Bytes of chunk bodies ever appended.
    pub total: u64,
    /// Bytes of bodies still referenced by the index.
    pub live: u64,
}

/// A chunk kept for its own sake rather than as part of a file (a sealed
/// ledger range). The record is the chunk's one reference: while it
/// exists the chunk is never released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    /// What the blob is, for people and `fsck` ("ledger 0..=199").
    #[serde(with = "codec::string")]
    pub what: String,
    /// The convergent key it was sealed with, as a file chunk's.
    pub key: ChunkKey,
    /// Its plaintext length.
    pub len: u32,
}

pub fn ino_key(ino: u64) -> [u8; 8] {
    ino.to_be_bytes()
}

pub fn dirent_key(parent: u64, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&parent.to_be_bytes());
    k.extend_from_slice(name);
    k
}

/// One manifest entry per key, so a commit rewrites only what changed.
pub fn manifest_key(ino: u64, offset: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&ino.to_be_bytes());
    k[8..].copy_from_slice(&offset.to_be_bytes());
    k
}

/// A file's journal records, oldest first: the manifest key's layout.
pub fn journal_key(ino: u64, seq: u64) -> [u8; 16] {
    manifest_key(ino, seq)
}

pub fn xattr_key(ino: u64, name: &[u8]) -> Vec<u8> {
    dirent_key(ino, name)
}

pub fn pack_key(pack: u32) -> [u8; 4] {
    pack.to_be_bytes()
}

pub fn pack_index_key(pack: u32, offset: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&pack.to_be_bytes());
    k[4..].copy_from_slice(&offset.to_be_bytes());
    k
}

/// Key of one replica: chunk id, then the holder's node key.
pub fn replica_key(id: &ChunkId, holder: &[u8; 32]) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&id.0);
    k[32..].copy_from_slice(holder);
    k
}

pub fn parse_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

pub fn parse_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(RECORD_V1, value)
}

pub fn decode_inode(bytes: &[u8]) -> Result<Inode, CodecError> {
    codec::decode(RECORD_V1, bytes, INODE_LIMIT)
}

pub fn decode_dirent(bytes: &[u8]) -> Result<Dirent, CodecError> {
    codec::decode(RECORD_V1, bytes, SMALL_LIMIT)
}

pub fn decode_manifest_entry(bytes: &[u8]) -> Result<ManifestEntry, CodecError> {
    codec::decode(RECORD_V1, bytes, SMALL_LIMIT)
}

pub fn decode_chunk(bytes: &[u8]) -> Result<ChunkRecord, CodecError> {
    codec::decode(RECORD_V1, bytes, 1024 * 1024)
}

pub fn decode_pack(bytes: &[u8]) -> Result<PackRecord, CodecError> {
    codec::decode(RECORD_V1, bytes, SMALL_LIMIT)
}

pub fn decode_blob(bytes: &[u8]) -> Result<BlobRecord, CodecError> {
    codec::decode(RECORD_V1, bytes, SMALL_LIMIT)
}

/// A journal record holds at most this many bytes of file data (the drive
/// folds a file's journal long before: `fs::data::journal::JOURNAL_MAX`).
pub const JOURNAL_RECORD_BYTES: usize = 32 * 1024 * 1024;
/// Ranges in one journal record: random 4 KiB writes over 32 MiB.
pub const JOURNAL_RANGES: usize = JOURNAL_RECORD_BYTES / 4096;

/// One `fsync`'s worth of a file's dirty bytes (`journal.rs`): the ranges
/// written since the previous record, and the file's size and times then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub size: u64,
    pub mtime: Option<Stamp>,
    pub ctime: Option<Stamp>,
    #[serde(deserialize_with = "codec::bounded_seq::<_, _, JOURNAL_RANGES>")]
    pub ranges: Vec<JournalRange>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRange {
    pub offset: u64,
    #[serde(with = "codec::bytes")]
    pub bytes: Vec<u8>,
}

pub fn decode_journal(bytes: &[u8]) -> Result<JournalRecord, CodecError> {
    codec::decode(RECORD_V1, bytes, JOURNAL_RECORD_BYTES + 1024 * 1024)
}

pub fn decode_chunk_id(bytes: &[u8]) -> Option<ChunkId> {
    Some(ChunkId(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_before_and_after_epoch() {
        for t in [
            UNIX_EPOCH + Duration::new(981173106, 5),
            UNIX_EPOCH - Duration::new(10, 250),
            UNIX_EPOCH - Duration::from_secs(3),
            UNIX_EPOCH,
        ] {
            assert_eq!(SystemTime::from(Stamp::from(t)), t);
        }
    }

    #[test]
    fn keys_sort_numerically() {
        assert!(ino_key(2) < ino_key(256));
        assert!(pack_index_key(1, 500) < pack_index_key(2, 0));
        assert!(dirent_key(1, b"zz") < dirent_key(2, b"a"));
    }
}
