//! The ledger's own tests, over an in-memory [`LogStore`] whose stored
//! bytes the tests can damage directly. The RocksDB side (a byte flipped
//! inside an SST file) is tested in `node::ledger`.

use super::*;
use crate::codec::Bytes;
use crate::promise::Signed;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// A log in memory, for tests of the ledger and of its users in this
/// crate. `unreadable` makes a window of seqs fail as RocksDB reports
/// corruption; `fail_writes` makes writes fail as a full disk does.
#[derive(Default)]
pub(crate) struct MemLog {
    pub map: Mutex<BTreeMap<u64, Vec<u8>>>,
    pub unreadable: Mutex<Option<Range<u64>>>,
    pub fail_writes: AtomicBool,
}

impl MemLog {
    pub fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Vec<u8>>> {
        self.map.lock().unwrap()
    }
}

impl LogStore for MemLog {
    fn last(&self) -> Result<Option<(u64, Vec<u8>)>, LedgerError> {
        Ok(self.entries().iter().next_back().map(|(k, v)| (*k, v.clone())))
    }

    fn put_batch(&self, entries: &[(u64, &[u8])]) -> Result<(), LedgerError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(LedgerError::Store("no space left on device".into()));
        }
        let mut map = self.entries();
        for (seq, bytes) in entries {
            map.insert(*seq, bytes.to_vec());
        }
        Ok(())
    }

    fn range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, LedgerError> {
        let bad = self.unreadable.lock().unwrap().clone();
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for (k, v) in self.entries().range(from..).take(limit) {
            if let Some(bad) = bad.as_ref().filter(|b| b.contains(k)) {
                let from = out.last().map_or(from, |(s, _)| s + 1);
                return Err(LedgerError::Unreadable { from, resume: Some(bad.end), detail: "bad block".into() });
            }
            out.push((*k, v.clone()));
        }
        Ok(out)
    }

    fn range_back(&self, before: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, LedgerError> {
        Ok(self.entries().range(..before).rev().take(limit).map(|(k, v)| (*k, v.clone())).collect())
    }
}

fn signer(n: u8) -> Signer {
    Signer::from_seed(&[n; 32])
}

/// Deterministic events of every kind but `Sealed` (which has rules of
/// its own), differing per `i`.
fn sample_event(i: u64) -> Event {
    let id = |salt: u8| {
        let mut a = [salt; 32];
        a[..8].copy_from_slice(&i.to_be_bytes());
        a
    };
    let key = |salt: u8| NodeKey(id(salt));
    match i % 12 {
        0 => Event::AskTaken {
            provider: key(1),
            ask: id(2),
            price_per_gib_month: 1000 + i,
            price_per_gib_retrieval: 500,
        },
        1 => Event::Bid {
            provider: key(1),
            promise: id(3),
            chunks: 7,
            bytes: 7 << 20,
            price_per_gib_month: 1200,
            duration_secs: 30 * 86_400,
        },
        2 => Event::Countered { provider: key(1), promise: id(3), price_per_gib_month: 1500 },
        3 => Event::BidRefused { provider: key(1), promise: id(3), reason: format!("full, entry {i}") },
        4 => Event::Promise {
            id: id(4),
            client: key(5),
            provider: key(1),
            chunks: 7,
            bytes: 7 << 20,
            price_per_gib_month: 1200,
            start: 1_700_000_000,
            expiry: 1_700_000_000 + 30 * 86_400,
            signed: Bytes(vec![0x11; 150]),
        },
        5 => Event::Receipt {
            promise: id(4),
            chunk: id(6),
            provider: key(1),
            bytes: 1 << 20,
            signed: Bytes(vec![7; 90]),
        },
        6 => {
            Event::Payment { client: key(5), provider: key(1), amount: 250, total: 250 * i, signed: Bytes(vec![8; 80]) }
        }
        7 => Event::PaymentWithheld { provider: key(1), promise: id(4), amount: 250, reason: format!("audit {i}") },
        8 => {
            Event::Audit { promise: id(4), provider: key(1), chunk: id(6), passed: i % 24 == 8, detail: "slice".into() }
        }
        9 => Event::Broken { promise: id(4), provider: key(1), reason: "lost".into(), evidence: Bytes(vec![9; 40]) },
        10 => Event::Expired { promise: id(4) },
        _ => Event::Renewed { old: id(4), new: id(7) },
    }
}

/// A ledger of `n` sample entries over a fresh in-memory log.
fn ledger_with(n: u64) -> (Arc<MemLog>, Ledger) {
    let log = Arc::new(MemLog::default());
    let ledger = Ledger::open(log.clone(), signer(1)).unwrap();
    ledger.append_many((0..n).map(sample_event).collect()).unwrap();
    (log, ledger)
}

fn report(log: &MemLog) -> VerifyReport {
    verify(log, &signer(1).node_key(), |_| {}).unwrap()
}

fn first_bad(log: &MemLog) -> Option<BadEntry> {
    report(log).first_bad
}

fn stored(log: &MemLog, seq: u64) -> Vec<u8> {
    log.entries()[&seq].clone()
}

fn decoded(log: &MemLog, seq: u64) -> Signed<Entry> {
    decode_stored(&stored(log, seq)).unwrap()
}

#[test]
fn every_kind_round_trips_and_verifies() {
    let (log, ledger) = ledger_with(24);
    assert_eq!(report(&log), VerifyReport { entries: 24, first_bad: None });
    let (listed, next) = ledger.entries(None, None, 100).unwrap();
    assert_eq!(next, None, "one page holds the whole log");
    assert_eq!(listed.len(), 24);
    let mut kinds = std::collections::HashSet::new();
    for (i, l) in listed.iter().enumerate() {
        let e = l.entry.as_ref().unwrap();
        assert_eq!(e.body.event, sample_event(i as u64));
        assert_eq!(e.body.seq, i as u64);
        assert_eq!(l.hash, Some(hash_stored(&stored(&log, i as u64))));
        let summary = e.body.event.summary();
        assert!(!summary.is_empty() && !summary.contains('\n'), "{summary:?}");
        kinds.insert(e.body.event.kind());
        let json = view::entry_json(l);
        for field in ["seq", "at", "time", "kind", "summary", "node", "prev", "hash", "sig", "event"] {
            assert!(json.get(field).is_some(), "no {field} in {json}");
        }
    }
    assert_eq!(kinds.len(), 12, "each kind has its own name");
    assert_eq!(decoded(&log, 0).body.prev, [0; 32], "entry 0 chains to zeros");
    assert_eq!(decoded(&log, 5).body.prev, hash_stored(&stored(&log, 4)));
}

#[test]
fn flipping_any_byte_of_an_entry_names_that_entry() {
    let (log, _ledger) = ledger_with(6);
    let good = log.entries().clone();
    let victim = 3;
    for at in 0..good[&victim].len() {
        for mask in [0x01u8, 0x80] {
            let mut damaged = good.clone();
            damaged.get_mut(&victim).unwrap()[at] ^= mask;
            *log.entries() = damaged;
            let bad = first_bad(&log).unwrap_or_else(|| panic!("byte {at} ^ {mask:#x} went unnoticed"));
            assert_eq!(bad.seq, victim, "byte {at} ^ {mask:#x}: {:?}", bad.why);
        }
    }
}

#[test]
fn a_truncated_entry_is_named() {
    let (log, _ledger) = ledger_with(6);
    let good = log.entries().clone();
    for len in 0..good[&2].len() {
        let mut damaged = good.clone();
        damaged.get_mut(&2).unwrap().truncate(len);
        *log.entries() = damaged;
        let bad = first_bad(&log).unwrap();
        assert_eq!(bad.seq, 2, "cut to {len} bytes");
        assert!(matches!(bad.why, Bad::Undecodable(_)), "cut to {len} bytes: {:?}", bad.why);
    }
}

#[test]
fn a_removed_entry_is_a_gap() {
    let (log, _ledger) = ledger_with(10);
    log.entries().remove(&4);
    let r = report(&log);
    assert_eq!(r.entries, 9);
    assert_eq!(r.first_bad, Some(BadEntry { seq: 4, why: Bad::Missing { next_stored: 5 } }));
    // The first entry gone is a gap at 0.
    let (log, _ledger) = ledger_with(3);
    log.entries().remove(&0);
    assert_eq!(first_bad(&log).map(|b| b.seq), Some(0));
}

/// What the module doc says verify cannot see: a log cut at its tail is
/// a shorter log that still verifies.
#[test]
fn a_cut_tail_still_verifies() {
    let (log, _ledger) = ledger_with(10);
    log.entries().split_off(&7);
    assert_eq!(report(&log), VerifyReport { entries: 7, first_bad: None });
}

#[test]
fn swapped_entries_are_named() {
    let (log, _ledger) = ledger_with(8);
    let (two, five) = (stored(&log, 2), stored(&log, 5));
    log.entries().insert(2, five);
    log.entries().insert(5, two);
    assert_eq!(first_bad(&log), Some(BadEntry { seq: 2, why: Bad::WrongSeq { found: 5 } }));
}

#[test]
fn an_entry_signed_by_another_key_is_named() {
    let (log, _ledger) = ledger_with(6);
    let good = log.entries().clone();
    // Re-signed by another key, still naming this node.
    let body = decoded(&log, 3).body;
    log.entries().insert(3, encode_stored(&signer(2).sign(body.clone())));
    assert_eq!(first_bad(&log), Some(BadEntry { seq: 3, why: Bad::BadSignature }));
    // Re-signed by another key that it names.
    let mut theirs = body.clone();
    theirs.node = signer(2).node_key();
    log.entries().insert(3, encode_stored(&signer(2).sign(theirs)));
    assert_eq!(first_bad(&log), Some(BadEntry { seq: 3, why: Bad::WrongNode { found: signer(2).node_key() } }));
    // Rewritten and re-signed with the node's own key: the entry itself
    // is good, but the next one no longer chains to it.
    *log.entries() = good;
    let mut rewritten = body;
    rewritten.event = Event::Expired { promise: [0xee; 32] };
    log.entries().insert(3, encode_stored(&signer(1).sign(rewritten)));
    assert_eq!(first_bad(&log), Some(BadEntry { seq: 4, why: Bad::BrokenChain }));
    // Another node's whole log is not this node's.
    let (log, _ledger) = ledger_with(3);
    let bad = verify(&*log, &signer(2).node_key(), |_| {}).unwrap().first_bad.unwrap();
    assert_eq!(bad.seq, 0);
}

#[test]
fn reopening_continues_the_chain() {
    let (log, ledger) = ledger_with(5);
    drop(ledger);
    let ledger = Ledger::open(log.clone(), signer(1)).unwrap();
    assert_eq!(ledger.next_seq(), 5);
    assert_eq!(ledger.append_many((5..10).map(sample_event).collect()).unwrap(), 5..10);
    assert_eq!(report(&log), VerifyReport { entries: 10, first_bad: None });
    assert_eq!(decoded(&log, 5).body.prev, hash_stored(&stored(&log, 4)));
    assert!(decoded(&log, 5).body.at >= decoded(&log, 4).body.at, "time never goes back");

    // A damaged tail: the node goes on, chaining onto the damaged bytes,
    // and verify names only the damage.
    log.entries().get_mut(&9).unwrap()[40] ^= 0x10;
    drop(ledger);
    let ledger = Ledger::open(log.clone(), signer(1)).unwrap();
    assert_eq!(ledger.append(sample_event(10)).unwrap(), 10);
    assert_eq!(decoded(&log, 10).body.prev, hash_stored(&stored(&log, 9)));
    let r = report(&log);
    assert_eq!((r.entries, r.first_bad.map(|b| b.seq)), (11, Some(9)));
}

#[test]
fn appends_from_many_threads_make_one_chain() {
    let log = Arc::new(MemLog::default());
    let ledger = Arc::new(Ledger::open(log.clone(), signer(1)).unwrap());
    let seqs: Vec<u64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let ledger = ledger.clone();
                s.spawn(move || (0..50).map(|i| ledger.append(sample_event(t * 50 + i)).unwrap()).collect::<Vec<_>>())
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..200).collect::<Vec<_>>(), "every append got its own seq");
    assert_eq!(report(&log), VerifyReport { entries: 200, first_bad: None });
}

#[test]
fn refused_appends_leave_the_chain_whole() {
    let (log, ledger) = ledger_with(3);
    let huge = Event::Broken {
        promise: [1; 32],
        provider: NodeKey([2; 32]),
        reason: "too much evidence".into(),
        evidence: Bytes(vec![0; ENTRY_LIMIT]),
    };
    assert!(matches!(ledger.append(huge), Err(LedgerError::TooLarge { .. })));
    // A batch is all or nothing.
    let batch = vec![sample_event(3), Event::Sealed { first: 5, last: 9, blob: [0; 32] }];
    assert!(matches!(ledger.append_many(batch), Err(LedgerError::SealOutOfOrder { .. })));
    assert_eq!(ledger.next_seq(), 3);
    log.fail_writes.store(true, Ordering::SeqCst);
    assert!(matches!(ledger.append(sample_event(3)), Err(LedgerError::Store(_))));
    log.fail_writes.store(false, Ordering::SeqCst);
    assert_eq!(ledger.append(sample_event(3)).unwrap(), 3);
    assert_eq!(report(&log), VerifyReport { entries: 4, first_bad: None });
}

#[test]
fn sealing_takes_what_follows_the_last_seal() {
    let (log, ledger) = ledger_with(10);
    let (first, last, blob) = ledger.take_unsealed(100).unwrap().unwrap();
    assert_eq!((first, last), (0, 9));
    let (node, entries) = decode_blob(&blob).unwrap();
    assert_eq!(node, signer(1).node_key());
    assert_eq!(entries, log.entries().iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>());
    assert_eq!(ledger.append(Event::Sealed { first, last, blob: [0xb1; 32] }).unwrap(), 10);
    assert_eq!(ledger.take_unsealed(100).unwrap(), None, "the seal alone is not sealed again");
    // The same range again is refused.
    let again = ledger.append(Event::Sealed { first: 0, last: 9, blob: [0xb1; 32] });
    assert!(matches!(again, Err(LedgerError::SealOutOfOrder { expected: 10, .. })), "{again:?}");
    ledger.append_many((11..14).map(sample_event).collect()).unwrap();
    // At most max_entries per blob; the rest waits for the next one.
    let (first, last, _) = ledger.take_unsealed(2).unwrap().unwrap();
    assert_eq!((first, last), (10, 11));
    assert!(matches!(
        ledger.append(Event::Sealed { first: 10, last: 14, blob: [0; 32] }),
        Err(LedgerError::SealOutOfOrder { .. })
    ));
    ledger.append(Event::Sealed { first, last, blob: [0xb2; 32] }).unwrap();
    // A reopened ledger finds the last seal.
    drop(ledger);
    let ledger = Ledger::open(log.clone(), signer(1)).unwrap();
    let (first, last, _) = ledger.take_unsealed(100).unwrap().unwrap();
    assert_eq!((first, last), (12, 14));
    assert_eq!(report(&log), VerifyReport { entries: 15, first_bad: None });
}

#[test]
fn since_finds_the_first_entry_at_or_after_a_time() {
    // Entries written by hand, with times of our choosing.
    let log = MemLog::default();
    let s = signer(1);
    let mut prev = [0; 32];
    let times = [100, 100, 105, 110, 110, 110, 200, 300];
    for (seq, at) in times.iter().enumerate() {
        let entry = Entry { seq: seq as u64, prev, at: *at, node: s.node_key(), event: sample_event(seq as u64) };
        let bytes = encode_stored(&s.sign(entry));
        prev = hash_stored(&bytes);
        log.put(seq as u64, &bytes).unwrap();
    }
    for (since, want) in [(0, 0), (100, 0), (101, 2), (110, 3), (111, 6), (300, 7), (301, 8)] {
        assert_eq!(first_since(&log, since).unwrap(), want, "since {since}");
    }
    // Pages of two, from the first entry at 105 on: each entry once.
    let mut seen = Vec::new();
    let mut from = first_since(&log, 105).unwrap();
    loop {
        let (page, next) = list(&log, from, Some(105), 2).unwrap();
        seen.extend(page.iter().map(|l| l.seq));
        match next {
            Some(n) => from = n,
            None => break,
        }
    }
    assert_eq!(seen, vec![2, 3, 4, 5, 6, 7]);
}

#[test]
fn verify_in_pages_resumes_and_counts_past_the_first_bad_entry() {
    let (log, _ledger) = ledger_with(50);
    log.entries().get_mut(&17).unwrap()[60] ^= 1;
    log.entries().get_mut(&30).unwrap()[60] ^= 1;
    let node = signer(1).node_key();
    let mut cursor = VerifyCursor::start();
    let (mut entries, mut bad) = (0, Vec::new());
    loop {
        let page = verify_page(&*log, &node, &mut cursor, 7).unwrap();
        entries += page.entries;
        bad.extend(page.first_bad.map(|b| b.seq));
        if page.done {
            break;
        }
    }
    assert_eq!((entries, bad), (50, vec![17]), "only the first bad entry is named");
    assert_eq!(report(&log).first_bad.map(|b| b.seq), Some(17));
}

#[test]
fn entries_the_store_cannot_read_are_named() {
    let (log, ledger) = ledger_with(100);
    *log.unreadable.lock().unwrap() = Some(50..60);
    let r = report(&log);
    assert_eq!(r.entries, 90);
    let bad = r.first_bad.unwrap();
    assert_eq!(bad.seq, 50);
    assert!(matches!(bad.why, Bad::Unreadable { resume: Some(60), .. }), "{:?}", bad.why);
    // Damage earlier in the same page still comes first.
    log.entries().get_mut(&20).unwrap()[60] ^= 1;
    assert_eq!(first_bad(&log).map(|b| b.seq), Some(20));
    // log show lists the readable entries, then the damage, then the rest.
    let (listed, next) = ledger.entries(None, Some(45), 100).unwrap();
    assert_eq!(next, None);
    let seqs: Vec<u64> = listed.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, [45, 46, 47, 48, 49, 50].into_iter().chain(60..100).collect::<Vec<_>>());
    assert!(listed[5].entry.is_err() && listed[5].hash.is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Garbage never panics the decoders, verify or show.
    #[test]
    fn garbage_never_panics(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6)) {
        for v in &values {
            let _ = decode_stored(v);
            let _ = decode_blob(v);
            let mut versioned = vec![LEDGER_V1];
            versioned.extend_from_slice(v);
            let _ = decode_stored(&versioned);
        }
        let log = MemLog::default();
        for (seq, v) in values.iter().enumerate() {
            log.put(seq as u64, v).unwrap();
        }
        let r = report(&log);
        prop_assert_eq!(r.entries, values.len() as u64);
        prop_assert!(values.is_empty() || r.first_bad.map(|b| b.seq) == Some(0));
        let (listed, _) = list(&log, 0, None, 10).unwrap();
        for l in &listed {
            let _ = view::entry_json(l);
        }
        let _ = first_since(&log, 1000);
        // A ledger opens on garbage and chains onto it.
        let ledger = Ledger::open(Arc::new(log), signer(1)).unwrap();
        prop_assert_eq!(ledger.next_seq(), values.len() as u64);
    }

    /// Random damage to a good entry: never a panic, and if anything is
    /// named it is that entry.
    #[test]
    fn damage_to_a_good_entry_is_named(at in 0usize..400, mask in 1u8..=255, cut in proptest::option::of(0usize..400)) {
        let (log, _ledger) = ledger_with(4);
        {
            let mut map = log.entries();
            let v = map.get_mut(&2).unwrap();
            let at = at % v.len();
            v[at] ^= mask;
            if let Some(cut) = cut {
                v.truncate(cut % v.len());
            }
        }
        prop_assert_eq!(first_bad(&log).map(|b| b.seq), Some(2));
    }
}
