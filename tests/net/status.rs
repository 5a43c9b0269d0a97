//! What a user sees of the market, with real providers: `sync --durable`
//! returns once every chunk is on `REPLICATION` providers, the mount's
//! `user.pactfs.*` attributes agree with `promises`, `status` and `market`;
//! and with no budget, `sync --durable` says so and exits 1 until the
//! budget is raised (a config reload, no restart).

use crate::cluster::*;
use crate::common::*;
use crate::node::*;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// (path under the mount, seed, size).
const FILES: &[(&str, u64, usize)] = &[
    ("empty", 21, 0),             // no chunk: durable by definition
    ("small", 22, 100),           // one inline chunk
    ("dir/three", 23, 3 * MIB),   // a few chunks
    ("dir/sub/six", 24, 6 * MIB), // more than one chunk_max
];

fn xattr(path: &Path, name: &str) -> String {
    let value = get_xattr(path, name).unwrap_or_else(|e| panic!("getxattr {name} on {}: {e}", path.display()));
    String::from_utf8(value).expect("utf-8 attribute value")
}

fn status(c: &Cluster) -> Value {
    ask_json(c.client_home(), &["status", "--json"]).unwrap_or_else(|e| panic!("status --json:\n{e}"))
}

/// Waits until `market --json` lists every provider of the cluster with a
/// usable ask, and returns it.
fn wait_market(c: &Cluster) -> Vec<Value> {
    let want: BTreeSet<String> = c.providers.iter().map(|p| p.peer_id.clone()).collect();
    poll("market --json to list every provider with a usable ask", || {
        let asks = ask_json(c.client_home(), &["market", "--json"])?;
        let list = asks.as_array().cloned().ok_or_else(|| format!("not an array: {asks}"))?;
        let usable: BTreeSet<String> = list
            .iter()
            .filter(|a| a["excluded"].is_null())
            .filter_map(|a| a["provider"].as_str().map(str::to_owned))
            .collect();
        if usable == want { Ok(list) } else { Err(asks.to_string()) }
    })
}

fn durable(mode: Mode) {
    let c = Cluster::start(mode);
    // The providers are found first, so that `sync --durable` meets a
    // formed market rather than "no providers known".
    let asks = wait_market(&c);
    for a in &asks {
        assert!(a["price_per_gib_month"].as_u64() > Some(0), "a provider asks a price: {a}");
        assert!(a["free_bytes"].as_u64() > Some(0), "a fresh provider has room: {a}");
        for key in ["price_per_gib_retrieval", "min_duration", "max_duration", "expires"] {
            assert!(a[key].is_u64(), "market --json: no integer {key} in {a}");
        }
        assert!(a["reputation"].is_number() && a["newcomer"].is_boolean(), "{a}");
    }
    let files = write_files(&c.client, FILES);
    // A directory first: its files' chunks (walked), then the whole drive.
    let dir = c.client.path("dir");
    let out = ask(c.client_home(), &["sync", "--durable", dir.to_str().expect("utf-8 path")]);
    assert_eq!(out.code, Some(0), "sync --durable DIR:\n{}", out.text);
    // (How many of them were still pending depends on how fast the agent
    // is: no count is asserted, only the outcome.)
    assert!(key_value(&out.text, "Chunks").is_some_and(|n| n.parse::<u64>().is_ok()), "{}", out.text);
    for (path, _) in files.iter().filter(|(p, _)| p.starts_with(&dir)) {
        assert_eq!(xattr(path, "user.pactfs.replicas"), format!("{REPLICATION}/{REPLICATION}"), "{}", path.display());
    }
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable must return once all is placed:\n{}", out.text);
    assert_eq!(key_value(&out.text, "Durable").as_deref(), Some("yes"), "{}", out.text);
    // Without PATH it also waited for the metadata root taken after it:
    // a restore elsewhere would see all of it.
    let root = key_value(&out.text, "Root").unwrap_or_default();
    assert!(root.starts_with("published"), "the root is published when the sync returns:\n{}", out.text);

    // Nothing pending any more (the root's own parts included), and every
    // chunk at the target.
    let st = status(&c);
    assert!(st["root"]["synced"] == true, "the newest root covers the sync: {st}");
    let again = ask_json(c.client_home(), &["sync", "--durable", "--json"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again["durable"], true, "{again}");
    assert_eq!(again["remaining"], 0, "{again}");
    assert_eq!(again["root"]["published"], true, "{again}");
    assert!(num(&again, "root.seq") >= num(&st, "root.seq"), "{again} {st}");
    assert_eq!(num(&st, "pending_chunks"), 0, "{st}");
    assert_eq!(num(&st, "pending_bytes"), 0, "{st}");
    assert_eq!(num(&st, "under_replicated_chunks"), 0, "{st}");
    assert_eq!(num(&st, "replication_target"), REPLICATION, "{st}");
    let chunks = num(&st, "chunks");
    assert!(chunks >= 4, "the files cut into at least 4 chunks: {st}");
    assert_eq!(num(&st, "placed_chunks"), chunks, "{st}");
    assert_eq!(num(&st, "replicas"), REPLICATION * chunks, "{st}");
    assert!(st["agent"]["blocked"].is_null(), "nothing is blocked: {st}");
    assert!(num(&st, "agent.promises_active") >= REPLICATION, "{st}");

    // Every promise id a file names is an active promise, and a file's
    // replicas sit with at least REPLICATION distinct providers.
    let promises = ask_json(c.client_home(), &["promises", "--json"]).unwrap_or_else(|e| panic!("{e}"));
    let by_id: HashMap<String, &Value> = promises
        .as_array()
        .expect("promises --json is an array")
        .iter()
        .map(|p| (text(p, "id").to_owned(), p))
        .collect();
    let providers: BTreeSet<String> = c.providers.iter().map(|p| p.peer_id.clone()).collect();
    for (path, data) in &files {
        let replicas = xattr(path, "user.pactfs.replicas");
        assert_eq!(replicas, format!("{REPLICATION}/{REPLICATION}"), "{}", path.display());
        let ids = xattr(path, "user.pactfs.promises");
        if data.is_empty() {
            assert_eq!(ids, "", "an empty file is stored under no promise");
            continue;
        }
        let mut holders = BTreeSet::new();
        for id in ids.split(',') {
            assert_eq!(id.len(), 64, "a promise id is 32 bytes of hex: {ids}");
            let p = by_id
                .get(id)
                .unwrap_or_else(|| panic!("{}: promise {id} not in promises --json: {promises}", path.display()));
            assert_eq!(text(p, "state"), "active", "{p}");
            assert!(num(p, "chunks") >= 1 && num(p, "bytes") >= 1, "{p}");
            assert!(num(p, "expiry") > num(p, "start"), "{p}");
            holders.insert(text(p, "provider").to_owned());
        }
        assert!(holders.len() as u64 >= REPLICATION, "{}: providers {holders:?}", path.display());
        assert!(holders.is_subset(&providers), "{}: {holders:?} not all cluster providers", path.display());
    }
    assert_files(&files);

    // The same facts for people.
    let text_out = ask(c.client_home(), &["status"]);
    assert_eq!(text_out.code, Some(0), "{}", text_out.text);
    assert!(text_out.text.contains("Blocked:") && text_out.text.contains("Under target:"), "{}", text_out.text);
    for (args, header) in [(&["promises"][..], "PRICE/GIB-MONTH"), (&["market"][..], "REPUTATION")] {
        let table = ask(c.client_home(), args);
        assert_eq!(table.code, Some(0), "{}", table.text);
        assert!(table.text.contains(header), "{}", table.text);
    }
    c.shutdown();
}

fn budget_blocked(mode: Mode) {
    let c = Cluster::start(mode);
    // [budget] reloads while the node runs.
    c.client.set_config("budget", "credits_per_month", "0");
    poll("the client to take the zero budget (status: budget_per_month 0)", || {
        let st = status(&c);
        if num(&st, "agent.budget_per_month") == 0 { Ok(()) } else { Err(st.to_string()) }
    });
    wait_market(&c);
    let files = write_files(&c.client, &FILES[1..3]);
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(1), "no budget: sync --durable must answer no:\n{}", out.text);
    assert_eq!(key_value(&out.text, "Durable").as_deref(), Some("no"), "{}", out.text);
    assert!(out.text.contains("budget"), "the reason names the budget:\n{}", out.text);
    let st = status(&c);
    assert!(num(&st, "pending_chunks") > 0, "{st}");
    let blocked = st["agent"]["blocked"].as_str().unwrap_or_else(|| panic!("status shows blocked: {st}"));
    assert!(blocked.contains("budget"), "{st}");
    assert_eq!(num(&st, "agent.promises_active"), 0, "no promise fits a zero budget: {st}");
    for (path, _) in &files {
        assert_eq!(xattr(path, "user.pactfs.replicas"), format!("0/{REPLICATION}"), "{}", path.display());
    }

    // A budget again: the same command now finishes.
    c.client.set_config("budget", "credits_per_month", "1000");
    poll("the client to take the budget back (status: budget_per_month 1000 credits)", || {
        let st = status(&c);
        if num(&st, "agent.budget_per_month") == 1_000_000 { Ok(()) } else { Err(st.to_string()) }
    });
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "with a budget, sync --durable finishes:\n{}", out.text);
    for (path, _) in &files {
        assert_eq!(xattr(path, "user.pactfs.replicas"), format!("{REPLICATION}/{REPLICATION}"), "{}", path.display());
    }
    c.shutdown();
}

#[test]
fn sync_durable_and_status_hybrid() {
    durable(Mode::Hybrid);
}

#[test]
fn sync_durable_and_status_market() {
    durable(Mode::Market);
}

#[test]
fn sync_durable_blocked_by_budget_hybrid() {
    budget_blocked(Mode::Hybrid);
}

#[test]
fn sync_durable_blocked_by_budget_market() {
    budget_blocked(Mode::Market);
}
