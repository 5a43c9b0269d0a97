//! What it proves, in both network modes: the market's own entries (bids,
//! promises, receipts) from a real placement with five providers make a
//! log that `pactfs log verify` passes (exit 0, through the running node
//! and from the store once it stopped), and changing one byte of one entry
//! in the store's SST files on disk makes it fail (exit 1, status `bad`),
//! naming that entry as the first bad one.
//!
//! The contract relied on: `log verify --json` answers `{entries, status
//! ("ok"|"bad"), first_bad ({seq, reason} or null), node}`, exit 0 intact,
//! 1 broken; `log show --json` answers an array of entries with `seq`,
//! `kind` (`promise`, `receipt`, …) and `sig` (hex); the drive's store
//! lives in `<home>/db`, the ledger's SST data uncompressed.

use crate::cluster::*;
use crate::common::*;
use crate::market::{budget_toml, copy_tree};
use crate::node::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// `log verify --json` of `home`: exit code and report.
fn verify(home: &Path) -> (Option<i32>, Value, String) {
    let answer = ask(home, &["log", "verify", "--json"]);
    let report = answer.json.clone().unwrap_or_else(|| panic!("log verify --json answered no JSON:\n{}", answer.text));
    (answer.code, report, answer.text)
}

/// `log show --json` of `home`, which must succeed.
fn show(home: &Path) -> Vec<Value> {
    let json = ask_json(home, &["log", "show", "--json"]).unwrap_or_else(|e| panic!("log show --json:\n{e}"));
    json.as_array().cloned().unwrap_or_else(|| panic!("log show --json is not an array: {json}"))
}

fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd-length hex: {hex}");
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}

/// Every `(file, offset)` of `needle` in the SST files under `db`.
fn find_in_ssts(db: &Path, needle: &[u8]) -> Vec<(PathBuf, usize)> {
    let mut hits = Vec::new();
    for entry in fs::read_dir(db).unwrap_or_else(|e| panic!("read {}: {e}", db.display())) {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|x| x != "sst") {
            continue;
        }
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        hits.extend(
            bytes.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(at, _)| (path.clone(), at)),
        );
    }
    hits
}

fn market_ledger(mode: Mode) {
    let specs: Vec<ProviderSpec> = [2.0, 1.0, 4.0, 3.0, 5.0].iter().map(|&p| ProviderSpec::new(p, GIB)).collect();
    let mut c = Cluster::start_with(mode, &specs, &budget_toml(1000.0));
    c.wait_providers_known(c.providers.len());
    let copied = copy_tree(&c, "tree");
    let stats = c.wait_placed();
    let replicas = num(&stats, "replicas");
    let home = c.client_home().to_path_buf();

    // Through the running node: intact, and the market's entries are there.
    let (code, report, text) = verify(&home);
    assert_eq!((code, report["status"].as_str()), (Some(0), Some("ok")), "a fresh market log verifies:\n{text}");
    let entries = show(&home);
    let count = |kind: &str| entries.iter().filter(|e| e["kind"] == kind).count() as u64;
    assert!(count("promise") >= 3, "a promise per provider used at least: {} promise entries", count("promise"));
    assert!(count("receipt") >= replicas, "{} receipt entries for {replicas} replicas", count("receipt"));

    // Stopped (the stop flushes the ledger into its SST file): still intact.
    c.client.unmount();
    let (code, report, text) = verify(&home);
    assert_eq!((code, report["status"].as_str()), (Some(0), Some("ok")), "the stored log verifies:\n{text}");
    let entries = show(&home);

    // One byte of a receipt in the middle of the log, changed on disk.
    let receipts: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "receipt").collect();
    let victim = receipts[receipts.len() / 2];
    let seq = victim["seq"].as_u64().unwrap_or_else(|| panic!("an entry without seq: {victim}"));
    let sig = unhex(victim["sig"].as_str().unwrap_or_else(|| panic!("an entry without sig: {victim}")));
    let hits = find_in_ssts(&home.join("db"), &sig);
    assert_eq!(hits.len(), 1, "entry {seq}'s signature in the SST files of {}: {hits:?}", home.display());
    let (sst, at) = &hits[0];
    let mut bytes = fs::read(sst).expect("read the SST file");
    bytes[*at] ^= 0x01;
    fs::write(sst, &bytes).expect("write the SST file");

    let (code, report, text) = verify(&home);
    assert_eq!(code, Some(1), "a changed byte must fail verification:\n{text}");
    assert_eq!(report["status"], "bad", "{text}");
    assert_eq!(report["first_bad"]["seq"].as_u64(), Some(seq), "the changed entry is the first bad one:\n{text}");

    // A node started on the damaged log says the same, and the drive still reads.
    c.client.mount();
    let (code, report, text) = verify(&home);
    assert_eq!((code, report["first_bad"]["seq"].as_u64()), (Some(1), Some(seq)), "{text}");
    copied.assert_same();
    c.shutdown();
}

#[test]
fn market_ledger_hybrid() {
    market_ledger(Mode::Hybrid);
}

#[test]
fn market_ledger_market() {
    market_ledger(Mode::Market);
}
