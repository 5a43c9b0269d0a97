//! Audits with real processes: four providers hold a tree; one rots on
//! disk (a byte flipped in every KiB of its stored chunks, done by the
//! test while it is stopped), one loses its pack files (deleted on disk),
//! one answers audits with forged proofs (`forge-proof`, a fault switch of
//! test builds), one stays honest. `pactfs audit --now` passes the honest
//! one's promises and breaks the others', each with evidence in the
//! ledger and its payment withheld; `pactfs reputation` shows the three
//! scores dropped and why.

use crate::cluster::*;
use crate::common::*;
use crate::node::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;

fn json(c: &Cluster, args: &[&str]) -> Value {
    ask_json(c.client_home(), args).unwrap_or_else(|e| panic!("{args:?}:\n{e}"))
}

fn audits(mode: Mode) {
    let mut specs = vec![ProviderSpec::default(); 4];
    specs[3].faults = "forge-proof";
    let mut c = Cluster::start_with(mode, &specs, "");
    c.wait_usable_asks(4);
    write_files(&c.client, &[("a", 101, 6 * MIB), ("d/b", 102, 3 * MIB), ("d/c", 103, 2 * MIB)]);
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable:\n{}", out.text);

    // Honest first: every promise passes. A provider an audit cannot reach
    // yet is not failed; audit until all four have answered.
    let by_provider = |list: &Value| -> BTreeMap<String, Vec<bool>> {
        let mut m: BTreeMap<String, Vec<bool>> = BTreeMap::new();
        for a in list.as_array().expect("array") {
            m.entry(text(a, "provider").to_owned()).or_default().push(a["passed"] == true);
        }
        m
    };
    let (honest, rotten, deleted, forger) = (
        c.providers[0].peer_id.clone(),
        c.providers[1].peer_id.clone(),
        c.providers[2].peer_id.clone(),
        c.providers[3].peer_id.clone(),
    );
    let mut seen: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    let mut failed_exit = false;
    let list = poll("every provider to answer an audit", || {
        let round = ask(c.client_home(), &["audit", "--now", "--json"]);
        let list = round.json.clone().ok_or_else(|| round.text.clone())?;
        failed_exit |= round.code == Some(1);
        for (p, r) in by_provider(&list) {
            seen.entry(p).or_default().extend(r);
        }
        let all = [&honest, &rotten, &deleted, &forger].iter().all(|p| seen.contains_key(*p));
        if all { Ok(list) } else { Err(list.to_string()) }
    });
    for p in [&honest, &rotten, &deleted] {
        assert!(seen[p].iter().all(|ok| *ok), "an honest provider passes: {seen:?} {list}");
    }
    assert!(seen[&forger].iter().all(|ok| !ok), "forged proofs are refused: {seen:?}");
    assert!(failed_exit, "a failed audit: exit 1");

    // Then rot and loss on disk, under the promises held now (repair of
    // the forger's chunks may later add fresh copies under new promises).
    // A round of placement puts its chunks on `replication` of the four
    // providers, so P2 or P3 may hold only metadata (small snapshot parts
    // kept inline, which rotting packs does not touch) until the forger's
    // chunks are repaired onto it: wait until both hold file data.
    let data_of = |promises: &Value, who: &str| -> Vec<String> {
        promises
            .as_array()
            .expect("array")
            .iter()
            .filter(|p| p["kind"] == "storage" && p["state"] == "active")
            .filter(|p| p["provider"] == who && num(p, "metadata") == 0)
            .map(|p| text(p, "id").to_owned())
            .collect()
    };
    poll("P2 and P3 to hold file data under promises", || {
        let promises = json(&c, &["promises", "--json"]);
        let both = !data_of(&promises, &rotten).is_empty() && !data_of(&promises, &deleted).is_empty();
        if both { Ok(()) } else { Err(promises.to_string()) }
    });
    let promises = json(&c, &["promises", "--json"]);
    let before: BTreeSet<String> = promises
        .as_array()
        .expect("array")
        .iter()
        .filter(|p| p["kind"] == "storage" && p["state"] == "active")
        .filter(|p| p["provider"] == rotten.as_str() || p["provider"] == deleted.as_str())
        .map(|p| text(p, "id").to_owned())
        .collect();
    let rep_before = json(&c, &["reputation", "--json"]);
    c.providers[1].stop();
    assert!(rot_packs(&c.providers[1].home) > 0, "P2 has packs to rot");
    c.providers[2].stop();
    for p in pack_files(&c.providers[2].home) {
        fs::remove_file(&p).expect("delete a pack file");
    }
    c.providers[1].restart_on_same_ports();
    c.providers[2].restart_on_same_ports();
    c.wait_providers_known(4);
    // A restarted provider may not be reachable yet in a round (an audit
    // that cannot be delivered is not a failure): audit until every
    // promise P2 and P3 held has an answer.
    let mut results: BTreeMap<String, Value> = BTreeMap::new();
    let list = poll("every promise of P2 and P3 to be audited after the damage", || {
        let round = ask(c.client_home(), &["audit", "--now", "--json"]);
        let list = round.json.clone().ok_or_else(|| round.text.clone())?;
        for a in list.as_array().into_iter().flatten() {
            results.insert(text(a, "promise").to_owned(), a.clone());
        }
        if before.iter().all(|p| results.contains_key(p)) { Ok(list) } else { Err(list.to_string()) }
    });
    let seen = by_provider(&list);
    assert!(seen.get(&honest).is_none_or(|r| r.iter().all(|ok| *ok)), "the honest provider passes: {list}");
    let audited: Vec<&Value> = before.iter().filter_map(|p| results.get(p)).collect();
    for a in audited {
        // A chunk small enough to live inline in the provider's RocksDB (the
        // client's own small blobs: a snapshot part, a ledger range) is
        // untouched by rotting or deleting pack files.
        let inline = num(a, "offset") + num(a, "len") <= 64 * 1024;
        assert!(a["passed"] == false || inline, "rot and loss are caught: {a}");
    }

    // Broken, with evidence, unpaid, and the reputations say so.
    let bad: BTreeSet<&String> = [&rotten, &deleted, &forger].into_iter().collect();
    let promises = json(&c, &["promises", "--json"]);
    let broken: Vec<&Value> = promises.as_array().expect("array").iter().filter(|p| p["state"] == "broken").collect();
    assert!(!broken.is_empty(), "{promises}");
    for p in &broken {
        assert!(bad.contains(&text(p, "provider").to_owned()), "only cheats break: {p}");
        assert!(text(p, "reason").contains("audit"), "{p}");
    }
    let log = json(&c, &["log", "show", "--json"]);
    let entries = log.as_array().expect("array");
    for p in &broken {
        let id = text(p, "id");
        let b = entries
            .iter()
            .find(|e| e["kind"] == "broken" && e["event"]["promise"] == id)
            .unwrap_or_else(|| panic!("the ledger records {id} broken"));
        assert!(text(&b["event"], "evidence").len() > 64, "with evidence: {b}");
        assert!(
            entries.iter().any(|e| e["kind"] == "payment_withheld" && e["event"]["promise"] == id),
            "payment withheld for {id}"
        );
        assert!(
            entries
                .iter()
                .any(|e| e["kind"] == "audit" && e["event"]["promise"] == id && e["event"]["passed"] == false),
            "the failed audit of {id} is in the ledger"
        );
    }
    // (Passed audits before the damage count as kept, so a cheat's score
    // need not fall below 0.5; one broken promise weighs four kept ones.)
    let rep = json(&c, &["reputation", "--json"]);
    let list = rep.as_array().expect("array");
    let score_of = |who: &str| list.iter().find(|r| r["provider"] == who).and_then(|r| r["score"].as_f64());
    let honest_score = score_of(&honest).expect("the honest provider has a record");
    assert!(honest_score > 0.75, "the honest provider is trusted: {rep}");
    let before_of = |who: &str| {
        rep_before.as_array().and_then(|l| l.iter().find(|r| r["provider"] == who)).and_then(|r| r["score"].as_f64())
    };
    for r in list {
        let who = text(r, "provider").to_owned();
        if bad.contains(&who) {
            let score = r["score"].as_f64().expect("score");
            assert!(score < honest_score, "{who} is below the honest provider: {r}");
            if who != forger {
                let was = before_of(&who).expect("a record before the damage");
                assert!(score < was, "{who}'s reputation dropped: {was} -> {score}: {r}");
            }
            assert!(!r["broken"].as_array().expect("broken").is_empty(), "with the evidence behind it: {r}");
        }
    }
    let table = ask(c.client_home(), &["reputation"]);
    assert!(table.text.contains("SCORE"), "{}", table.text);
    c.shutdown();
}

#[test]
fn audits_hybrid() {
    audits(Mode::Hybrid);
}

#[test]
fn audits_market() {
    audits(Mode::Market);
}
