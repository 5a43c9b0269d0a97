//! Payments that cannot be made when they fall due: a client that starts
//! while a provider it owes is down tries that provider again within
//! minutes, not at the next payment interval (a day by default).

use crate::cluster::*;
use crate::common::*;
use crate::node::*;
use serde_json::Value;

/// Distinct providers the client's ledger records a payment to.
fn paid_providers(home: &std::path::Path) -> Result<Vec<Value>, String> {
    let log = ask_json(home, &["log", "show", "--json"])?;
    let mut paid: Vec<Value> = log
        .as_array()
        .ok_or_else(|| format!("log show --json is not an array: {log}"))?
        .iter()
        .filter(|e| e["kind"] == "payment")
        .map(|e| e["event"]["provider"].clone())
        .collect();
    paid.sort_by_key(|v| v.to_string());
    paid.dedup();
    Ok(paid)
}

fn retried(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.wait_providers_known(c.providers.len());
    let files = write_files(&c.client, &[("owed", 61, 2 * MIB)]);
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable:\n{}", out.text);
    let promises = ask_json(c.client_home(), &["promises", "--json"]).unwrap_or_else(|e| panic!("promises:\n{e}"));
    let mut holders: Vec<String> = promises
        .as_array()
        .expect("array")
        .iter()
        .filter(|p| text(p, "kind") == "storage")
        .map(|p| text(p, "provider").to_owned())
        .collect();
    holders.sort();
    holders.dedup();
    // Not the seed: the client must still find the others at its restart.
    let victim = c.providers[1..]
        .iter()
        .position(|p| holders.contains(&p.peer_id))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no provider but the seed holds a promise: {promises}"));
    assert!(paid_providers(c.client_home()).expect("log show").is_empty(), "nothing was due before the restart");

    // The restarted client's first payment pass cannot reach the victim.
    c.providers[victim].stop();
    c.client.unmount();
    c.client.mount();
    poll("the restarted client to pay the providers it reaches", || {
        let paid = paid_providers(c.client_home())?;
        if paid.len() + 1 >= holders.len() { Ok(paid) } else { Err(format!("paid so far: {paid:?}")) }
    });
    c.providers[victim].restart_on_same_ports();
    let paid = poll("a payment to the provider that was down, well before the next interval", || {
        let paid = paid_providers(c.client_home())?;
        if paid.len() == holders.len() { Ok(paid) } else { Err(format!("paid so far: {paid:?}")) }
    });
    assert_eq!(paid.len(), holders.len(), "{paid:?}");
    assert_files(&files);
    c.shutdown();
}

#[test]
fn a_payment_missed_at_start_is_retried_market() {
    retried(Mode::Market);
}
