//! The node's one ledger: where it lives, sealing it, and answering
//! `pactfs log verify` / `log show` (over the control socket, or straight
//! from the store when no node runs).
//!
//! A node has one ledger: in the drive's store when it mounts a drive,
//! else in its provider store. [`StoreLog`] is the ledger's `LogStore`
//! over the store's `ledger` column family. [`NodeLedger`] seals new
//! entries every [`SEAL_EVERY`] and on a clean stop: the blob is sealed
//! with the user's chunk key like file data (`chunk::seal`) and kept in
//! the same store as a referenced, pending chunk (`Store::keep_blob`), so
//! the placement agent places it and nothing collects it; then the
//! `Sealed` entry names it. A provider-only node keeps the blob in its
//! provider store, where no agent runs yet.

use super::{Home, NodeError, control, load_config, open_store_at};
use crate::chunk::{self, UserSecret};
use crate::ledger::{self, Event, Ledger, LedgerError, LogStore, VerifyCursor};
use crate::promise::{NodeKey, Signer};
use crate::store::{BlobRecord, Store, StoreError};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a running node seals new entries.
pub const SEAL_EVERY: Duration = Duration::from_secs(600);
/// Entries per blob at most (the ledger also caps a blob's bytes).
const SEAL_MAX_ENTRIES: usize = 16 * 1024;
/// Blobs per sealing round at most: a long unsealed log (a first seal of
/// an old log) is sealed over several rounds rather than all at once.
const SEAL_ROUNDS: usize = 16;
/// Entries checked per `log verify` page.
const VERIFY_PAGE: usize = 8192;
/// Entries per `log show` page at most.
const SHOW_PAGE: usize = 256;
/// JSON bytes of one `log show` reply at most: well under the control
/// socket's line limit, whatever evidence the entries carry.
const SHOW_REPLY_BYTES: usize = 512 * 1024;

/// The ledger's store: the `ledger` column family of a pactfs store.
pub struct StoreLog(pub Arc<Store>);

impl LogStore for StoreLog {
    fn last(&self) -> Result<Option<(u64, Vec<u8>)>, LedgerError> {
        self.0.ledger_last().map_err(ledger_error)
    }
    fn put_batch(&self, entries: &[(u64, &[u8])]) -> Result<(), LedgerError> {
        self.0.ledger_put(entries).map_err(ledger_error)
    }
    fn range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, LedgerError> {
        self.0.ledger_range(from, limit).map_err(ledger_error)
    }
    fn range_back(&self, before: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, LedgerError> {
        self.0.ledger_range_back(before, limit).map_err(ledger_error)
    }
}

fn ledger_error(e: StoreError) -> LedgerError {
    match e {
        StoreError::LedgerUnreadable { from, resume, detail } => LedgerError::Unreadable { from, resume, detail },
        e => LedgerError::Store(Box::new(e)),
    }
}

/// A home with no store yet has an empty log.
struct EmptyLog;

impl LogStore for EmptyLog {
    fn last(&self) -> Result<Option<(u64, Vec<u8>)>, LedgerError> {
        Ok(None)
    }
    fn put_batch(&self, _: &[(u64, &[u8])]) -> Result<(), LedgerError> {
        Err(LedgerError::Store("this home has no store to write a ledger to".into()))
    }
    fn range(&self, _: u64, _: usize) -> Result<Vec<(u64, Vec<u8>)>, LedgerError> {
        Ok(Vec::new())
    }
    fn range_back(&self, _: u64, _: usize) -> Result<Vec<(u64, Vec<u8>)>, LedgerError> {
        Ok(Vec::new())
    }
}

/// The running node's ledger, with what sealing needs.
pub struct NodeLedger {
    pub ledger: Arc<Ledger>,
    store: Arc<Store>,
    /// The user's secret, to seal blobs like file data; `None` leaves
    /// the log unsealed (a home without one).
    secret: Option<UserSecret>,
    /// One sealer at a time (the periodic task and the final seal).
    sealing: Mutex<()>,
}

impl NodeLedger {
    pub fn open(store: Arc<Store>, signer: Signer, secret: Option<UserSecret>) -> Result<NodeLedger, LedgerError> {
        let ledger = Arc::new(Ledger::open(Arc::new(StoreLog(store.clone())), signer)?);
        Ok(NodeLedger { ledger, store, secret, sealing: Mutex::new(()) })
    }

    /// Seals what is new into blobs; returns how many.
    pub fn seal(&self) -> Result<usize, NodeError> {
        let Some(secret) = &self.secret else { return Ok(0) };
        let _one = crate::lock(&self.sealing);
        let mut blobs = 0;
        while blobs < SEAL_ROUNDS {
            let Some((first, last, blob)) = self.ledger.take_unsealed(SEAL_MAX_ENTRIES)? else { break };
            seal_blob(&self.ledger, &self.store, secret, first, last, &blob)?;
            blobs += 1;
        }
        Ok(blobs)
    }

    /// On a clean stop: a last seal, then the ledger written out to its
    /// SST file.
    pub fn close(&self) {
        if let Err(e) = self.seal() {
            tracing::error!(cause = %e, "sealing the ledger at stop failed");
        }
        if let Err(e) = self.store.flush_ledger() {
            tracing::error!(cause = %e, "flushing the ledger at stop failed");
        }
    }

    /// Answers the `log` control requests.
    pub fn answer(&self, req: &control::Request) -> Option<Result<Value, String>> {
        answer(self.ledger.store(), &self.ledger.node(), || Ok(self.ledger.clone()), req)
    }
}

/// Stores one blob and appends the `Sealed` entry naming it.
fn seal_blob(
    ledger: &Ledger,
    store: &Store,
    secret: &UserSecret,
    first: u64,
    last: u64,
    blob: &[u8],
) -> Result<(), NodeError> {
    let (key, id, sealed) = chunk::seal(secret, blob);
    let record = BlobRecord { what: format!("ledger {first}..={last}"), key, len: blob.len() as u32 };
    store.keep_blob(&id, &sealed, &record)?;
    let seq = ledger.append(Event::Sealed { first, last, blob: id.0 })?;
    tracing::info!(first, last, seq, blob = %id.fmt_short(), bytes = sealed.len(), "ledger sealed");
    Ok(())
}

/// Answers `LogVerify`, `LogShow` (and, in test builds, `LedgerAppend`)
/// over `log` for `node`; `None` for other requests. `writable` opens
/// the ledger for appending, only when asked to.
fn answer(
    log: &dyn LogStore,
    node: &NodeKey,
    writable: impl FnOnce() -> Result<Arc<Ledger>, String>,
    req: &control::Request,
) -> Option<Result<Value, String>> {
    let text = |e: LedgerError| e.to_string();
    Some(match req {
        control::Request::LogVerify { from, prev, counting } => {
            verify_page(log, node, *from, prev.as_deref(), *counting)
        }
        control::Request::LogShow { since, from, limit } => show_page(log, *since, *from, *limit).map_err(text),
        #[cfg(feature = "fault-injection")]
        control::Request::LedgerAppend { count } => (|| {
            let ledger = writable()?;
            let mut appended = 0;
            while appended < *count {
                let n = (*count - appended).min(1000);
                ledger.append_many(debug_events(ledger.next_seq(), n)).map_err(text)?;
                appended += n;
            }
            Ok(json!({ "appended": appended, "next": ledger.next_seq() }))
        })(),
        _ => {
            let _ = writable;
            return None;
        }
    })
}

fn verify_page(
    log: &dyn LogStore,
    node: &NodeKey,
    from: u64,
    prev: Option<&str>,
    counting: bool,
) -> Result<Value, String> {
    let prev = match prev {
        None => [0; 32],
        Some(h) => parse_hash(h).ok_or_else(|| format!("bad prev hash {h:?}"))?,
    };
    let mut cursor = VerifyCursor { next: from, prev, counting };
    let page = ledger::verify_page(log, node, &mut cursor, VERIFY_PAGE).map_err(|e| e.to_string())?;
    let last = log.last().map_err(|e| e.to_string())?.map(|(seq, _)| seq);
    Ok(json!({
        "entries": page.entries,
        "first_bad": page.first_bad.map(|b| json!({ "seq": b.seq, "reason": b.why.to_string() })),
        "done": page.done,
        "next": cursor.next,
        "prev": ledger::hex(&cursor.prev),
        "counting": cursor.counting,
        "last": last,
        "node": ledger::hex(&node.0),
    }))
}

fn show_page(log: &dyn LogStore, since: Option<u64>, from: Option<u64>, limit: usize) -> Result<Value, LedgerError> {
    let from = match (from, since) {
        (Some(f), _) => f,
        (None, Some(t)) => ledger::first_since(log, t)?,
        (None, None) => 0,
    };
    let (page, mut next) = ledger::list(log, from, since, limit.clamp(1, SHOW_PAGE))?;
    let mut entries = Vec::with_capacity(page.len());
    let mut bytes = 0;
    for listed in &page {
        let v = ledger::view::entry_json(listed);
        bytes += v.to_string().len();
        if bytes > SHOW_REPLY_BYTES && !entries.is_empty() {
            next = Some(listed.seq);
            break;
        }
        entries.push(v);
    }
    Ok(json!({ "entries": entries, "next": next }))
}

fn parse_hash(h: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if h.len() != 64 || !h.is_ascii() {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The ledger of a home whose node is not running, for the `log`
/// commands (the caller holds the home lock).
///
/// Which store: the one whose ledger has entries, the drive's first
/// (a node that mounts keeps its ledger there, a provider-only node in
/// its provider store); a home with neither has an empty log.
pub struct OfflineLedger {
    store: Option<Arc<Store>>,
    seed: [u8; 32],
    node: NodeKey,
    /// Opened on the first append (test builds), then flushed on drop.
    ledger: Mutex<Option<Arc<Ledger>>>,
}

impl OfflineLedger {
    /// Opens the home's ledger store. With `create`, a home without any
    /// store gets its drive store (to append to).
    pub fn open(home: &Home, create: bool) -> Result<OfflineLedger, NodeError> {
        let seed = home.identity_seed()?;
        let node = Signer::from_seed(&seed).node_key();
        let cfg = load_config(home)?;
        let provider_dir = cfg.provider.data_dir.clone().unwrap_or_else(|| home.data_dir.join("provider"));
        let open_if_there = |dir: &Path| -> Result<Option<Arc<Store>>, NodeError> {
            // RocksDB's CURRENT file: a store was created here.
            if dir.join("db").join("CURRENT").exists() { Ok(Some(Arc::new(open_store_at(dir)?))) } else { Ok(None) }
        };
        let drive = open_if_there(&home.data_dir)?;
        let provider = open_if_there(&provider_dir)?;
        // An unreadable tail still counts as a log with entries.
        let has_entries =
            |s: &Option<Arc<Store>>| s.as_ref().is_some_and(|s| s.ledger_last().map_or(true, |l| l.is_some()));
        let store = match (has_entries(&drive), has_entries(&provider)) {
            (true, true) => {
                tracing::warn!(
                    provider = %provider_dir.display(),
                    "the provider store holds a ledger too (from provider-only runs): showing the drive's"
                );
                drive
            }
            (true, false) => drive,
            (false, true) => provider,
            (false, false) => match drive.or(provider) {
                Some(s) => Some(s),
                None if create => Some(Arc::new(open_store_at(&home.data_dir)?)),
                None => None,
            },
        };
        Ok(OfflineLedger { store, seed, node, ledger: Mutex::new(None) })
    }

    /// Answers a `log` request as the node would.
    pub fn call(&self, req: &control::Request) -> Result<Value, NodeError> {
        let log: Box<dyn LogStore> = match &self.store {
            Some(s) => Box::new(StoreLog(s.clone())),
            None => Box::new(EmptyLog),
        };
        let writable = || -> Result<Arc<Ledger>, String> {
            let store = self.store.clone().ok_or("no store")?;
            let mut slot = crate::lock(&self.ledger);
            if slot.is_none() {
                let ledger = Ledger::open(Arc::new(StoreLog(store)), Signer::from_seed(&self.seed));
                *slot = Some(Arc::new(ledger.map_err(|e| e.to_string())?));
            }
            slot.clone().ok_or_else(|| "no ledger".to_string())
        };
        match answer(&*log, &self.node, writable, req) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(NodeError::Control(e)),
            None => Err(NodeError::Control("not a ledger request".into())),
        }
    }
}

impl Drop for OfflineLedger {
    fn drop(&mut self) {
        // Appends end up in the SST file, as a node's do at its stop.
        let appended = self.ledger.get_mut().map(|l| l.is_some()).unwrap_or(true);
        if let (true, Some(store)) = (appended, &self.store)
            && let Err(e) = store.flush_ledger()
        {
            tracing::warn!(cause = %e, "flushing the ledger failed");
        }
    }
}

/// Made-up entries for tests (`pactfs debug ledger-append`): every kind
/// but `Sealed` in turn, and text that names the seq ("debug entry
/// 000123") in the kinds that carry text, so a test can find an entry's
/// bytes on disk.
#[cfg(feature = "fault-injection")]
pub fn debug_events(start: u64, count: u64) -> Vec<Event> {
    use crate::codec::Bytes;
    (start..start + count)
        .map(|seq| {
            let mut id = [0x5a; 32];
            id[..8].copy_from_slice(&seq.to_be_bytes());
            let peer = NodeKey([0x7e; 32]);
            let text = format!("debug entry {seq:06}");
            match seq % 12 {
                0 => {
                    Event::AskTaken { provider: peer, ask: id, price_per_gib_month: 1000, price_per_gib_retrieval: 500 }
                }
                1 => Event::Bid {
                    provider: peer,
                    promise: id,
                    chunks: 3,
                    bytes: 3 << 20,
                    price_per_gib_month: 1000,
                    duration_secs: 30 * 86_400,
                },
                2 => Event::Countered { provider: peer, promise: id, price_per_gib_month: 1200 },
                3 => Event::BidRefused { provider: peer, promise: id, reason: text },
                4 => Event::Promise {
                    id,
                    client: NodeKey([0x11; 32]),
                    provider: peer,
                    chunks: 3,
                    bytes: 3 << 20,
                    price_per_gib_month: 1000,
                    start: 1_700_000_000,
                    expiry: 1_702_592_000,
                    signed: Bytes(vec![0x42; 120]),
                },
                5 => Event::Receipt {
                    promise: id,
                    chunk: id,
                    provider: peer,
                    bytes: 1 << 20,
                    signed: Bytes(vec![1; 100]),
                },
                6 => Event::Payment {
                    client: NodeKey([0x11; 32]),
                    provider: peer,
                    amount: 10,
                    total: 10 * seq,
                    signed: Bytes(vec![2; 100]),
                },
                7 => Event::PaymentWithheld { provider: peer, promise: id, amount: 10, reason: text },
                8 => Event::Audit { promise: id, provider: peer, chunk: id, passed: true, detail: text },
                9 => Event::Broken { promise: id, provider: peer, reason: text, evidence: Bytes(vec![3; 64]) },
                10 => Event::Expired { promise: id },
                _ => Event::Renewed { old: id, new: [0x6b; 32] },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Bytes;
    use crate::ledger::{Bad, verify};

    fn refusal(seq: u64) -> Event {
        Event::BidRefused { provider: NodeKey([9; 32]), promise: [seq as u8; 32], reason: format!("sst test {seq:04}") }
    }

    fn sst_files(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out: Vec<_> = std::fs::read_dir(dir.join("db"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sst"))
            .collect();
        out.sort();
        out
    }

    /// Where `needle` occurs in the store's SST files: (file, offset).
    fn find_in_ssts(dir: &Path, needle: &[u8]) -> Vec<(std::path::PathBuf, usize)> {
        let mut hits = Vec::new();
        for path in sst_files(dir) {
            let bytes = std::fs::read(&path).unwrap();
            for at in 0..bytes.len().saturating_sub(needle.len() - 1) {
                if &bytes[at..at + needle.len()] == needle {
                    hits.push((path.clone(), at));
                }
            }
        }
        hits
    }

    /// A byte changed inside the RocksDB SST file on disk reaches the
    /// ledger's check, which names the entry it belongs to.
    #[test]
    fn a_byte_flipped_in_an_sst_file_names_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed(&[4; 32]);
        let node = signer.node_key();
        let victim = 137u64;
        let victim_sig = {
            let store = Arc::new(Store::open(dir.path(), 0, 0).unwrap());
            let ledger = Ledger::open(Arc::new(StoreLog(store.clone())), signer).unwrap();
            for batch in 0..4u64 {
                ledger.append_many((batch * 50..batch * 50 + 50).map(refusal).collect()).unwrap();
            }
            let (_, bytes) = store.ledger_range(victim, 1).unwrap().remove(0);
            store.flush_ledger().unwrap();
            ledger::decode_stored(&bytes).unwrap().sig.0
        };
        // Closed. The entry's signature is in one SST file, once.
        let hits = find_in_ssts(dir.path(), &victim_sig);
        assert_eq!(hits.len(), 1, "signature of entry {victim} in the SST files: {hits:?}");
        let (path, at) = &hits[0];
        let mut bytes = std::fs::read(path).unwrap();
        bytes[at + 20] ^= 0x04;
        std::fs::write(path, &bytes).unwrap();

        let store = Arc::new(Store::open(dir.path(), 0, 0).unwrap());
        let log = StoreLog(store.clone());
        let report = verify(&log, &node, |_| {}).unwrap();
        assert_eq!(report.entries, 200);
        let bad = report.first_bad.expect("the flipped byte must be found");
        assert_eq!((bad.seq, &bad.why), (victim, &Bad::BadSignature));
        // The node still opens its ledger and goes on; the damage stays named.
        let ledger = Ledger::open(Arc::new(StoreLog(store)), Signer::from_seed(&[4; 32])).unwrap();
        assert_eq!(ledger.append(refusal(200)).unwrap(), 200);
        let report = verify(&log, &node, |_| {}).unwrap();
        assert_eq!((report.entries, report.first_bad.map(|b| b.seq)), (201, Some(victim)));
    }

    /// Sealing keeps the blob in the store, readable with the kept key,
    /// and the `Sealed` entry names it; fsck counts it as referenced.
    #[test]
    fn sealing_keeps_the_blob_as_a_pending_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 0, 0).unwrap());
        let secret = UserSecret::from_bytes([5; 32]);
        let nl = NodeLedger::open(store.clone(), Signer::from_seed(&[4; 32]), Some(secret)).unwrap();
        assert_eq!(nl.seal().unwrap(), 0, "nothing to seal in an empty log");
        nl.ledger.append_many((0..30).map(refusal).collect()).unwrap();
        nl.ledger
            .append(Event::Broken {
                promise: [1; 32],
                provider: NodeKey([2; 32]),
                reason: "kept".into(),
                evidence: Bytes(vec![7; 1000]),
            })
            .unwrap();
        assert_eq!(nl.seal().unwrap(), 1);
        assert_eq!(nl.seal().unwrap(), 0, "only the seal is new: nothing to seal");
        let (listed, _) = nl.ledger.entries(None, Some(31), 10).unwrap();
        let Event::Sealed { first, last, blob } = listed[0].entry.as_ref().unwrap().body.event.clone() else {
            panic!("entry 31 is the seal: {listed:?}")
        };
        assert_eq!((first, last), (0, 30));
        let blobs = store.blobs().unwrap();
        assert_eq!(blobs.len(), 1);
        let (id, record) = &blobs[0];
        assert_eq!(id.0, blob);
        let plain = chunk::open(id, &record.key, store.chunk_body(id).unwrap()).unwrap();
        let (owner, entries) = ledger::decode_blob(&plain).unwrap();
        assert_eq!(owner, nl.ledger.node());
        assert_eq!(entries, store.ledger_range(0, 31).unwrap());
        assert!(store.pending_ids(None, 10).unwrap().contains(id), "the blob waits for placement");
        assert!(store.fsck(false).unwrap().clean());
        nl.close();
        assert!(!sst_files(dir.path()).is_empty());
    }
}
