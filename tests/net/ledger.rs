//! A provider-only node keeps its one ledger in its provider store: the
//! entries appended over its socket are sealed into that store at its
//! stop, and the `log` commands find them there when it no longer runs.

#![cfg(feature = "fault-injection")]

use crate::node::{Mode, Provider, ask};

#[test]
fn a_provider_keeps_its_ledger_in_its_provider_store() {
    let mut p = Provider::start("p0", Mode::Market, &[]);
    let appended = ask(&p.home, &["debug", "ledger-append", "30"]);
    assert_eq!(appended.code, Some(0), "{}", appended.text);
    let running = ask(&p.home, &["log", "verify", "--json"]);
    assert_eq!(running.code, Some(0), "{}", running.text);
    let report = running.json.unwrap_or_else(|| panic!("not JSON:\n{}", running.text));
    assert_eq!((report["entries"].as_u64(), report["status"].as_str()), (Some(30), Some("ok")), "{report}");
    p.stop();

    assert!(p.home.join("provider").join("db").is_dir(), "the provider store holds the ledger");
    assert!(!p.home.join("db").exists(), "a provider-only node has no drive store");
    let stopped = ask(&p.home, &["log", "verify", "--json"]);
    assert_eq!(stopped.code, Some(0), "{}", stopped.text);
    assert_eq!(
        stopped.json.as_ref().map(|r| r["entries"].clone()),
        Some(31.into()),
        "30 and the seal:\n{}",
        stopped.text
    );
    let shown = ask(&p.home, &["log", "show", "--json"]);
    let entries = shown.json.as_ref().and_then(|j| j.as_array().cloned()).unwrap_or_default();
    assert_eq!(entries.len(), 31, "{}", shown.text);
    assert_eq!(entries[30]["kind"], "sealed", "{}", shown.text);
    assert_eq!((entries[30]["event"]["first"].as_u64(), entries[30]["event"]["last"].as_u64()), (Some(0), Some(29)));
}
