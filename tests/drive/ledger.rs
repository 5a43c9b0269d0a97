//! `pactfs log verify` and `pactfs log show` against real homes: through a
//! running node's control socket, and from the store when none runs; a
//! byte changed inside the RocksDB SST file on disk is named by entry.
//! Entries come from the test-only `pactfs debug ledger-append`.

use crate::common::*;
use serde_json::Value;
#[cfg(feature = "fault-injection")]
use std::{
    fs,
    path::{Path, PathBuf},
};

/// `log verify` with its exit code and `Key: value` answer.
fn verify(d: &mut Drive) -> (Option<i32>, String) {
    let out = d.pactfs(&["log", "verify"]);
    (out.status.code(), stdout_of(&out))
}

/// `log show --json ARGS`, parsed; asserts exit 0.
fn show_json(d: &mut Drive, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["log", "show", "--json"];
    args.extend_from_slice(extra);
    let out = d.pactfs_ok(&args);
    let parsed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("log show --json is not JSON ({e}):\n{}", d.last_command()));
    parsed.as_array().unwrap_or_else(|| panic!("log show --json is not an array:\n{}", d.last_command())).clone()
}

/// Every `(file, offset)` of `needle` in the SST files of the store at `data`.
#[cfg(feature = "fault-injection")]
fn find_in_ssts(data: &Path, needle: &[u8]) -> Vec<(PathBuf, usize)> {
    let mut hits = Vec::new();
    for entry in fs::read_dir(data.join("db")).expect("read the store's db directory") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "sst") {
            continue;
        }
        let bytes = fs::read(&path).unwrap();
        hits.extend(
            bytes.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(at, _)| (path.clone(), at)),
        );
    }
    hits
}

#[test]
fn a_fresh_home_has_an_empty_intact_log() {
    let mut d = Drive::new();
    let (code, out) = verify(&mut d);
    assert_eq!(code, Some(0), "{}", d.last_command());
    assert_eq!(key_value(&out, "Entries").as_deref(), Some("0"), "{out}");
    assert_eq!(key_value(&out, "Status").as_deref(), Some("ok"), "{out}");
    assert!(show_json(&mut d, &[]).is_empty());
    assert!(!d.home.join("db").exists(), "reading the log must not create a store");
    let bad = d.pactfs(&["log", "show", "--since", "last tuesday"]);
    assert_eq!(bad.status.code(), Some(2), "{}", d.last_command());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since"), "{}", d.last_command());
}

/// The whole life: entries appended through a mounted node, verified and
/// listed over its socket, sealed into a kept blob at unmount, then a
/// byte flipped in the SST file: verify names that entry (exit 1) with
/// and without a node running, show still lists it, fsck is clean.
#[cfg(feature = "fault-injection")]
#[test]
fn log_verify_names_an_entry_changed_on_disk() {
    let mut d = Drive::new();
    d.mount();
    let out = d.pactfs_ok(&["debug", "ledger-append", "200"]);
    assert_eq!(key_value(&stdout_of(&out), "Next").as_deref(), Some("200"), "{}", d.last_command());
    let (code, out) = verify(&mut d);
    assert_eq!(code, Some(0), "a fresh log verifies:\n{}", d.last_command());
    assert_eq!(key_value(&out, "Entries").as_deref(), Some("200"), "{out}");
    let entries = show_json(&mut d, &[]);
    assert_eq!(entries.len(), 200);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i as u64, "{e}");
        for field in ["at", "time", "kind", "summary", "node", "prev", "hash", "sig", "event"] {
            assert!(!e[field].is_null(), "entry {i} has no {field}: {e}");
        }
    }
    // The victim: a refused bid whose reason names it (seq % 12 == 3).
    let victim = 123;
    assert_eq!(entries[victim]["kind"], "bid_refused");
    assert_eq!(entries[victim]["event"]["reason"], "debug entry 000123");
    d.unmount();

    // The stop sealed the log into a kept blob and wrote the SST file.
    let (code, out) = verify(&mut d);
    assert_eq!(code, Some(0), "{}", d.last_command());
    assert_eq!(key_value(&out, "Entries").as_deref(), Some("201"), "200 entries and the seal:\n{out}");
    let text = stdout_of(&d.pactfs_ok(&["log", "show"]));
    let last = text.lines().last().unwrap_or("");
    assert!(last.contains("sealed") && last.contains("entries 0..=199"), "the last entry is the seal: {last:?}");
    assert_eq!(show_json(&mut d, &["--since", "1h"]).len(), 201);
    assert_eq!(show_json(&mut d, &["--since", "4102444800"]).len(), 0, "nothing after 2100");
    assert_eq!(d.stat("pending_chunks"), 1, "the sealed blob waits for placement");
    assert_eq!(d.pactfs(&["fsck"]).status.code(), Some(0), "the kept blob is referenced:\n{}", d.last_command());

    let hits = find_in_ssts(&d.home, b"debug entry 000123");
    assert_eq!(hits.len(), 1, "entry {victim}'s text in the SST files: {hits:?}");
    let (sst, at) = &hits[0];
    let mut bytes = fs::read(sst).unwrap();
    bytes[*at] ^= 0x01; // "debug" -> "eebug": still text, no longer what was signed
    fs::write(sst, &bytes).unwrap();

    let (code, out) = verify(&mut d);
    assert_eq!(code, Some(1), "a changed byte must fail verification:\n{}", d.last_command());
    assert_eq!(key_value(&out, "Status").as_deref(), Some("bad"), "{out}");
    assert_eq!(key_value(&out, "First bad entry").as_deref(), Some("123"), "{out}");
    assert!(key_value(&out, "Reason").is_some_and(|r| r.contains("signature")), "{out}");
    let out = d.pactfs(&["log", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", d.last_command());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["status"].as_str(), report["first_bad"]["seq"].as_u64()), (Some("bad"), Some(123)), "{report}");
    assert_eq!(report["entries"], 201);
    let entries = show_json(&mut d, &[]);
    assert_eq!(entries.len(), 201);
    assert_eq!(entries[victim]["event"]["reason"], "eebug entry 000123", "show lists what is stored");

    // A node started on the damaged log runs, and says the same.
    d.mount();
    let (code, out) = verify(&mut d);
    assert_eq!(code, Some(1), "{}", d.last_command());
    assert_eq!(key_value(&out, "First bad entry").as_deref(), Some("123"), "{out}");
    d.pactfs_ok(&["debug", "ledger-append", "5"]);
    assert_eq!(show_json(&mut d, &["--since", "1h"]).len(), 206);
    d.unmount();
}
