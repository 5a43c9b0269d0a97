//! The local store: RocksDB for the index, pack files for chunk bodies.
//!
//! Column families (keys big-endian, values versioned through `codec`):
//!
//! | cf          | key                    | value            |
//! |-------------|------------------------|------------------|
//! | `meta`      | name                   | counters         |
//! | `inodes`    | ino                    | [`Inode`]        |
//! | `dirents`   | parent ino, name       | [`Dirent`]       |
//! | `xattrs`    | ino, name              | raw value        |
//! | `manifests` | ino, offset            | one manifest entry |
//! | `chunks`    | chunk id               | [`ChunkRecord`]  |
//! | `packs`     | pack no                | [`PackRecord`]   |
//! | `pack_index`| pack no, body offset   | chunk id         |
//! | `pending`   | chunk id               | (empty): the placement queue |
//! | `bodies`    | chunk id               | sealed body of a small chunk |
//! | `replicas`  | chunk id, holder key   | the holder's signed receipt |
//! | `promises`  | promise id             | the market's promise record |
//! | `market`    | prefixed key           | nonces seen, cheques, spend |
//! | `ledger`    | seq                    | one stored ledger entry, as the ledger encoded it |
//! | `blobs`     | chunk id               | [`BlobRecord`]: a kept blob (a sealed ledger range) |
//! | `journal`   | ino, seq               | [`JournalRecord`]: bytes an fsync made durable before a commit (`journal.rs`) |
//!
//! The `ledger` column family is uncompressed and its bytes are opaque
//! here (`ledger.rs`): the ledger layer signs, chains and checks them, and
//! reads them with RocksDB's block checksums off, so that a changed byte
//! reaches that check, which names the entry. `blobs` holds one reference
//! on each kept chunk, in place of a manifest entry: such a chunk is never
//! released, and it is queued for placement like file data (`blobs.rs`).
//!
//! Every change to the namespace or to a file's chunks is one [`Txn`]: one
//! RocksDB write batch, so a crash never leaves half an operation. Chunk
//! reference counts change only inside a `Txn`, under the store's writer
//! lock; a chunk whose count reaches zero leaves the index and its pack's
//! live bytes at once, and compaction later returns the disk space.
//!
//! Invariant: this module knows nothing of FUSE or the network.

mod blobs;
mod journal;
mod ledger;
mod local;
mod market;
mod packs;
mod placement;
pub mod records;
mod snapshot;
mod txn;

pub use local::{Evicted, REMOTE_PACK};
pub use packs::Packs;
pub use records::{
    BlobRecord, ChunkRecord, Dirent, Inode, JournalRange, JournalRecord, Kind, PackRecord, Placement, Stamp,
};
pub use snapshot::SNAPSHOT_CFS;
pub use txn::Txn;

use crate::chunk::{ChunkId, ManifestEntry};
use crate::codec::CodecError;
use rocksdb::{ColumnFamilyDescriptor, DB, DBCompressionType, IteratorMode, Options, WriteBatch, WriteOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

pub const ROOT_INO: u64 = 1;

const CFS: [&str; 16] = [
    "meta",
    "inodes",
    "dirents",
    "xattrs",
    "manifests",
    "chunks",
    "packs",
    "pack_index",
    "pending",
    "bodies",
    "replicas",
    "promises",
    "market",
    "ledger",
    "blobs",
    "journal",
];
/// Sealed bodies up to this size live in the `bodies` column family rather
/// than a pack: an fsync of a small file then costs one WAL sync, not two.
pub const INLINE_MAX: usize = 64 * 1024;
/// The pack number a [`ChunkRecord`] names when its body is inline.
pub const INLINE_PACK: u32 = 0;
const META_NEXT_INO: &[u8] = b"next_ino";
const META_FORMAT: &[u8] = b"format";
/// On-disk layout of the store as a whole; bumped when the set of column
/// families or a key layout changes. 2 added `ledger` and `blobs` (created
/// on open of a format 1 store, which is then marked 2: an older build
/// would fail on the unknown column families anyway, now it says why).
/// 3: a chunk record may name no local body (`local::REMOTE_PACK`), which
/// an older build would read as a missing pack. 4 added `journal` (created
/// on open, like 2's).
const FORMAT_VERSION: u64 = 4;

/// What can go wrong in the store. Callers act on the kind: `Io` and `Db`
/// are environmental (disk full, permissions), `Corrupt` means the index or
/// a pack holds bytes that do not decode or verify.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },
    /// The index names a chunk the store does not hold.
    #[error("chunk {0} is not in the local store")]
    ChunkMissing(ChunkId),
    /// The chunk is placed and its body was evicted: fetch it from a holder.
    #[error("chunk {0} is not cached locally")]
    NotLocal(ChunkId),
    /// The store was written by a newer pactfs.
    #[error("store format {found} is newer than this build's {expected}")]
    Format { found: u64, expected: u64 },
    /// RocksDB reports corruption in the ledger's column family: the
    /// entries from `from` up to `resume` (exclusive; `None`: from `from`
    /// on) cannot be read.
    #[error("ledger entries from {from} {} cannot be read: {detail}", match resume { Some(r) => format!("to {r}"), None => "on".to_string() })]
    LedgerUnreadable { from: u64, resume: Option<u64>, detail: String },
}

impl StoreError {
    pub fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io { path: path.to_path_buf(), source }
    }

    fn corrupt(what: &str, e: CodecError) -> StoreError {
        StoreError::Corrupt { what: what.to_string(), detail: e.to_string() }
    }

    /// The OS error behind this failure, if any (ENOSPC stays ENOSPC).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            StoreError::Io { source, .. } => source.raw_os_error(),
            StoreError::Db(e) if e.to_string().contains("No space left") => Some(libc::ENOSPC),
            _ => None,
        }
    }
}

/// The open store of one pactfs home.
pub struct Store {
    db: DB,
    packs: Packs,
    writer: Mutex<()>,
    next_ino: AtomicU64,
    /// Live bytes of stored chunk bodies (what `df` counts as used).
    used_bytes: AtomicU64,
    /// Chunk bodies appended by this process (dedup'd chunks not counted).
    chunks_written: AtomicU64,
    data_dir: PathBuf,
    /// When each chunk's body was last read (a tick), for eviction.
    recency: Mutex<std::collections::HashMap<ChunkId, u64>>,
    tick: AtomicU64,
    /// The RocksDB sequence number up to which the WAL is known synced, and
    /// the lock one syncer holds while the others wait to share its sync.
    wal_synced: AtomicU64,
    wal_syncing: Mutex<()>,
    /// The next journal record's sequence number (`journal.rs`).
    journal_seq: AtomicU64,
}

impl Store {
    /// Opens (creating if needed) the store under `data_dir`, with a root
    /// directory owned by `root_uid`/`root_gid` on first use.
    pub fn open(data_dir: &Path, root_uid: u32, root_gid: u32) -> Result<Store, StoreError> {
        let db_path = data_dir.join("db");
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_total_wal_size(256 << 20);
        opts.set_keep_log_file_num(4);
        opts.increase_parallelism(2);
        let cfs = CFS.iter().map(|n| ColumnFamilyDescriptor::new(*n, cf_options(n)));
        let db = DB::open_cf_descriptors(&opts, &db_path, cfs)?;
        if let Some(missing) = CFS.iter().find(|n| db.cf_handle(n).is_none()) {
            return Err(StoreError::Corrupt {
                what: "store".into(),
                detail: format!("column family {missing} missing"),
            });
        }
        let packs = Packs::open(&data_dir.join("packs"))?;
        let store = Store {
            db,
            packs,
            writer: Mutex::new(()),
            next_ino: AtomicU64::new(ROOT_INO + 1),
            used_bytes: AtomicU64::new(0),
            recency: Mutex::default(),
            tick: AtomicU64::new(1),
            chunks_written: AtomicU64::new(0),
            data_dir: data_dir.to_path_buf(),
            wal_synced: AtomicU64::new(0),
            wal_syncing: Mutex::new(()),
            journal_seq: AtomicU64::new(1),
        };
        store.check_format()?;
        store.load_counters()?;
        store.journal_seq.store(store.journal_seq_after_open()?, Ordering::SeqCst);
        store.ensure_root(root_uid, root_gid)?;
        Ok(store)
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // Every name in CFS was checked present at open, and only names
        // from CFS are passed here, so this cannot fail on any input.
        self.db.cf_handle(name).expect("column family checked at open") // ok: invariant from open
    }

    fn check_format(&self) -> Result<(), StoreError> {
        let meta = self.cf("meta");
        match self.db.get_cf(meta, META_FORMAT)? {
            Some(v) => {
                let found = records::parse_u64(&v).unwrap_or(u64::MAX);
                if found > FORMAT_VERSION {
                    return Err(StoreError::Format { found, expected: FORMAT_VERSION });
                }
                if found < FORMAT_VERSION {
                    // Opening created the column families it lacked.
                    tracing::info!(from = found, to = FORMAT_VERSION, "store format upgraded");
                    let mut wo = WriteOptions::default();
                    wo.set_sync(true);
                    self.db.put_cf_opt(meta, META_FORMAT, FORMAT_VERSION.to_be_bytes(), &wo)?;
                }
            }
            None => {
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                self.db.put_cf_opt(meta, META_FORMAT, FORMAT_VERSION.to_be_bytes(), &wo)?;
            }
        }
        Ok(())
    }

    fn load_counters(&self) -> Result<(), StoreError> {
        let mut next = ROOT_INO + 1;
        if let Some(v) = self.db.get_cf(self.cf("meta"), META_NEXT_INO)? {
            next = next.max(records::parse_u64(&v).unwrap_or(0));
        }
        // The counter is written with every create, but take the highest
        // inode too in case an older layout did not.
        if let Some(Ok((k, _))) = self.db.iterator_cf(self.cf("inodes"), IteratorMode::End).next() {
            next = next.max(records::parse_u64(&k).unwrap_or(0) + 1);
        }
        self.next_ino.store(next, Ordering::SeqCst);
        let mut used = 0;
        for item in self.db.iterator_cf(self.cf("packs"), IteratorMode::Start) {
            let (_, v) = item?;
            used += records::decode_pack(&v).map_err(|e| StoreError::corrupt("pack record", e))?.live;
        }
        self.used_bytes.store(used, Ordering::SeqCst);
        Ok(())
    }

    fn ensure_root(&self, uid: u32, gid: u32) -> Result<(), StoreError> {
        if self.inode(ROOT_INO)?.is_some() {
            return Ok(());
        }
        let now = Stamp::now();
        let root = Inode {
            ino: ROOT_INO,
            kind: Kind::Dir,
            perm: 0o755,
            uid,
            gid,
            size: 0,
            nlink: 2,
            rdev: 0,
            parent: ROOT_INO,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            symlink: None,
            allocated: 0,
        };
        let mut txn = self.begin();
        txn.put_inode(&root);
        txn.commit(true)
    }

    /// Starts a transaction, taking the writer lock until it commits or drops.
    pub fn begin(&self) -> Txn<'_> {
        let guard = crate::lock(&self.writer);
        Txn::new(self, guard)
    }

    /// A fresh inode number, never handed out before.
    pub fn alloc_ino(&self) -> u64 {
        self.next_ino.fetch_add(1, Ordering::SeqCst)
    }

    pub fn inode(&self, ino: u64) -> Result<Option<Inode>, StoreError> {
        match self.db.get_pinned_cf(self.cf("inodes"), records::ino_key(ino))? {
            Some(v) => Ok(Some(records::decode_inode(&v).map_err(|e| StoreError::corrupt("inode", e))?)),
            None => Ok(None),
        }
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<Dirent>, StoreError> {
        match self.db.get_pinned_cf(self.cf("dirents"), records::dirent_key(parent, name))? {
            Some(v) => Ok(Some(records::decode_dirent(&v).map_err(|e| StoreError::corrupt("dirent", e))?)),
            None => Ok(None),
        }
    }

    /// All entries of directory `parent`, in name order.
    pub fn read_dir(&self, parent: u64) -> Result<Vec<(Vec<u8>, Dirent)>, StoreError> {
        self.scan_ino("dirents", parent, |name, v| {
            Ok((name.to_vec(), records::decode_dirent(v).map_err(|e| StoreError::corrupt("dirent", e))?))
        })
    }

    /// Decodes every entry of `cf` under the inode prefix `ino`, in key
    /// order; `decode` gets the key past the prefix and the value.
    fn scan_ino<T>(
        &self,
        cf: &str,
        ino: u64,
        mut decode: impl FnMut(&[u8], &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for item in self.prefix_iter(cf, &ino.to_be_bytes()) {
            let (k, v) = item?;
            out.push(decode(&k[8..], &v)?);
        }
        Ok(out)
    }

    /// The entries of `cf` whose keys start with `prefix`, in key order.
    /// Bounded at both ends so that RocksDB never steps over deleted keys
    /// outside the prefix: after a mass delete (`rm -rf`) an unbounded seek
    /// walks the whole run of tombstones that follows, on every lookup.
    pub(crate) fn prefix_iter(&self, cf: &str, prefix: &[u8]) -> rocksdb::DBIterator<'_> {
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_range(rocksdb::PrefixRange(prefix));
        self.db.iterator_cf_opt(self.cf(cf), ro, IteratorMode::Start)
    }

    /// Adds to `batch` the deletion of every manifest entry of `ino`, as
    /// point deletes: every range tombstone in the memtable is
    /// re-fragmented on each later read of the column family, which made
    /// each unlink of an `rm -rf` slower than the last.
    pub(crate) fn delete_manifest(&self, batch: &mut WriteBatch, ino: u64) -> Result<(), StoreError> {
        for item in self.prefix_iter("manifests", &ino.to_be_bytes()) {
            batch.delete_cf(self.cf("manifests"), item?.0);
        }
        Ok(())
    }

    /// True when directory `parent` has at least one entry.
    pub fn dir_has_entries(&self, parent: u64) -> Result<bool, StoreError> {
        match self.prefix_iter("dirents", &parent.to_be_bytes()).next() {
            Some(item) => item.map(|_| true).map_err(StoreError::from),
            None => Ok(false),
        }
    }

    /// A file's manifest, in offset order.
    pub fn manifest(&self, ino: u64) -> Result<Vec<ManifestEntry>, StoreError> {
        self.scan_ino("manifests", ino, |_, v| {
            records::decode_manifest_entry(v).map_err(|e| StoreError::corrupt("manifest entry", e))
        })
    }

    pub fn xattr(&self, ino: u64, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf("xattrs"), records::xattr_key(ino, name))?)
    }

    pub fn xattr_names(&self, ino: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        self.scan_ino("xattrs", ino, |name, _| Ok(name.to_vec()))
    }

    pub fn chunk(&self, id: &ChunkId) -> Result<Option<ChunkRecord>, StoreError> {
        match self.db.get_pinned_cf(self.cf("chunks"), id.0)? {
            Some(v) => Ok(Some(records::decode_chunk(&v).map_err(|e| StoreError::corrupt("chunk record", e))?)),
            None => Ok(None),
        }
    }

    /// The sealed bytes of a chunk, as stored (the caller verifies them
    /// against the id before use).
    pub fn chunk_body(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
        let rec = self.chunk(id)?.ok_or(StoreError::ChunkMissing(*id))?;
        let body = self.read_body(id, &rec)?;
        self.touch(id);
        Ok(body)
    }

    pub(crate) fn read_body(&self, id: &ChunkId, rec: &ChunkRecord) -> Result<Vec<u8>, StoreError> {
        if !rec.is_local() {
            return Err(StoreError::NotLocal(*id));
        }
        if rec.pack == INLINE_PACK {
            return self.db.get_cf(self.cf("bodies"), id.0)?.ok_or(StoreError::ChunkMissing(*id));
        }
        self.packs.read(rec.pack, rec.offset, rec.len)
    }

    /// Appends a sealed body to a pack ahead of the transaction that will
    /// index it, so that the copy happens outside the caller's locks. Small
    /// bodies (inline) and chunks already stored return `None`; pass the
    /// result to [`Txn::add_chunk_at`]. A body appended but never indexed
    /// is dead space that compaction returns.
    pub fn pre_append(&self, id: &ChunkId, sealed: &[u8]) -> Result<Option<(u32, u64)>, StoreError> {
        if sealed.len() <= INLINE_MAX || self.chunk(id)?.is_some() {
            return Ok(None);
        }
        Ok(Some(self.packs.append(id, sealed)?))
    }

    /// Makes every committed change durable: pack bodies first, then the
    /// RocksDB WAL that names them. Concurrent callers share one WAL sync
    /// (a provider storing many uploads at once had paid one fsync per
    /// upload): one syncs everything committed so far while the others
    /// wait, and whoever is then covered returns without another.
    pub fn sync(&self) -> Result<(), StoreError> {
        // A commit's bodies were appended before it: every body of a commit
        // up to `wanted` is covered by the pack sync below.
        let wanted = self.db.latest_sequence_number();
        if self.wal_synced.load(Ordering::Acquire) >= wanted {
            return self.packs.sync();
        }
        let _one_at_a_time = crate::lock(&self.wal_syncing);
        if self.wal_synced.load(Ordering::Acquire) >= wanted {
            return self.packs.sync();
        }
        let covers = self.db.latest_sequence_number();
        self.packs.sync()?;
        self.db.flush_wal(true)?;
        self.wal_synced.fetch_max(covers, Ordering::Release);
        Ok(())
    }

    /// Reads large chunk bodies around the page cache (a provider's store:
    /// see `Packs::set_direct_reads`).
    pub fn set_direct_reads(&self, on: bool) {
        self.packs.set_direct_reads(on);
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    pub fn chunks_written(&self) -> u64 {
        self.chunks_written.load(Ordering::Relaxed)
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }
}

pub(crate) type WriterGuard<'a> = MutexGuard<'a, ()>;

/// Options of one column family. The ledger's is uncompressed, so the
/// bytes on disk are the entries' own bytes.
fn cf_options(name: &str) -> Options {
    let mut opts = Options::default();
    if name == "ledger" {
        opts.set_compression_type(DBCompressionType::None);
    }
    opts
}

mod fsck;
mod scan;
mod summary;
pub use scan::{FsckReport, Stats};
pub use summary::{PendingSummary, ReplicaSummary};
