//! Repair with real processes: the client evicts its copies, then a
//! provider holding part of a tree is killed with SIGKILL; reads still
//! succeed from the survivors; past `repair_grace` its promises are marked
//! broken, its reputation drops, and its chunks are fetched from surviving
//! replicas and placed again on the others until every chunk is back at
//! the replication target.

use crate::cluster::*;
use crate::common::*;
use crate::node::*;
use serde_json::Value;

const FILES: &[(&str, u64, usize)] = &[("a", 31, 5 * MIB), ("d/b", 32, 3 * MIB), ("d/e/c", 33, 200)];

fn status(c: &Cluster) -> Value {
    ask_json(c.client_home(), &["status", "--json"]).unwrap_or_else(|e| panic!("status --json:\n{e}"))
}

fn json(c: &Cluster, args: &[&str]) -> Vec<Value> {
    let v = ask_json(c.client_home(), args).unwrap_or_else(|e| panic!("{args:?}:\n{e}"));
    v.as_array().cloned().unwrap_or_else(|| panic!("{args:?} is not an array: {v}"))
}

fn reputation_of(c: &Cluster, peer: &str) -> Option<f64> {
    json(c, &["market", "--json"]).iter().find(|a| a["provider"] == peer).and_then(|a| a["reputation"].as_f64())
}

fn kill_one_holder(mode: Mode) {
    let mut c =
        Cluster::start_with(mode, &vec![ProviderSpec::default(); PROVIDERS], "[market]\nrepair_grace = \"3s\"\n");
    c.wait_providers_known(PROVIDERS);
    let files = write_files(&c.client, FILES);
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable:\n{}", out.text);
    // The root the durable sync asked for is snapshotted after it started:
    // counted once its part is placed too.
    poll("the root taken after the durable sync to be placed, nothing left pending", || {
        let st = ask_json(c.client_home(), &["status", "--json"])?;
        let done = st["root"]["synced"] == true && num(&st, "pending_chunks") == 0;
        if done { Ok(()) } else { Err(st.to_string()) }
    });
    let chunks = num(&c.stats(), "chunks");
    c.assert_scrub_clean(chunks);

    // The provider holding the most chunks goes away without a word.
    let counts = c.provider_chunks(REPLICATION * chunks);
    let victim = (0..counts.len()).max_by_key(|&i| counts[i]).expect("providers");
    let peer = c.providers[victim].peer_id.clone();
    let before = reputation_of(&c, &peer).expect("the victim is in the market");
    let held: Vec<String> = json(&c, &["promises", "--json"])
        .iter()
        .filter(|p| p["provider"] == peer.as_str() && p["state"] == "active")
        .map(|p| text(p, "id").to_owned())
        .collect();
    assert!(!held.is_empty(), "the victim holds promises");
    // The client keeps no copy: reads and repair must fetch from the survivors.
    let ev = ask(c.client_home(), &["evict", "--json"]);
    assert_eq!(ev.code, Some(0), "evict:\n{}", ev.text);
    c.client.unmount();
    c.client.mount();
    c.wait_providers_known(PROVIDERS);
    c.providers[victim].kill9();

    // Reads keep working while repair runs.
    assert_files(&files);

    // Past the grace: its promises are broken, and repair brings every
    // chunk back to the target on the other providers.
    let st = poll("repair to bring every chunk back to the target", || {
        let st = status(&c);
        let done = num(&st, "pending_chunks") == 0
            && num(&st, "replicas") == REPLICATION * num(&st, "chunks")
            && num(&st, "agent.repair.chunks_remaining") == 0
            && num(&st, "agent.repair.chunks_repaired") > 0;
        if done { Ok(st) } else { Err(st.to_string()) }
    });
    assert_eq!(num(&st, "under_replicated_chunks"), 0, "{st}");
    let promises = json(&c, &["promises", "--json"]);
    for id in &held {
        let p = promises.iter().find(|p| p["id"] == id.as_str()).unwrap_or_else(|| panic!("promise {id} listed"));
        assert_eq!(text(p, "state"), "broken", "{p}");
        assert!(text(p, "reason").contains("unreachable"), "the reason says why: {p}");
    }
    let after = reputation_of(&c, &peer).expect("the victim is still in the market");
    assert!(after < before, "reputation drops: {before} -> {after}");
    let log = ask_json(c.client_home(), &["log", "show", "--json"]).unwrap_or_else(|e| panic!("{e}"));
    let entries = log.as_array().expect("log show --json is an array");
    for id in &held {
        assert!(
            entries.iter().any(|e| e["kind"] == "broken" && e["event"]["promise"] == id.as_str()),
            "the ledger records broken promise {id}"
        );
    }

    // The survivors hold every replica, all verified; the durable sync and
    // the attributes agree.
    // (The remount sealed a ledger range: a chunk more than before.)
    c.assert_scrub_clean(num(&st, "chunks"));
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable after repair:\n{}", out.text);
    for (path, data) in &files {
        if !data.is_empty() {
            let v = get_xattr(path, "user.pactfs.replicas").expect("replicas attribute");
            assert_eq!(String::from_utf8_lossy(&v), format!("{REPLICATION}/{REPLICATION}"), "{}", path.display());
        }
    }
    assert_files(&files);
    let text_out = ask(c.client_home(), &["status"]);
    assert!(text_out.text.contains("Repair:"), "status shows repair:\n{}", text_out.text);
    c.shutdown();
}

#[test]
fn repair_after_kill9_hybrid() {
    kill_one_holder(Mode::Hybrid);
}

#[test]
fn repair_after_kill9_market() {
    kill_one_holder(Mode::Market);
}
