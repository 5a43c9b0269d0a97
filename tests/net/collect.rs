//! Collection with real processes and short promises (40 s, renewed 12 s
//! before the end): deleting files lets the promises of their chunks lapse
//! (not renewed, nothing paid past their term) and the providers drop
//! those chunks, while every chunk a remaining file still references
//! (shared with a deleted twin or a deleted file with the same start) is
//! renewed, kept at the replication target and reads back byte-exact.

use crate::cluster::*;
use crate::common::*;
use crate::node::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;

fn json(c: &Cluster, args: &[&str]) -> Value {
    ask_json(c.client_home(), args).unwrap_or_else(|e| panic!("{args:?}:\n{e}"))
}

fn promise_ids(c: &Cluster) -> BTreeSet<String> {
    json(c, &["promises", "--json"]).as_array().expect("array").iter().map(|p| text(p, "id").to_owned()).collect()
}

/// The promises first made for file data: not those of the metadata
/// (snapshot parts lapse by design once a newer root supersedes them),
/// nor renewals (which extend promises already counted).
fn data_promise_ids(c: &Cluster) -> BTreeSet<String> {
    json(c, &["promises", "--json"])
        .as_array()
        .expect("array")
        .iter()
        .filter(|p| num(p, "metadata") == 0 && p["renews"].is_null())
        .map(|p| text(p, "id").to_owned())
        .collect()
}

fn collect(mode: Mode) {
    let spec = ProviderSpec { terms: "min_duration = \"5s\"", ..ProviderSpec::default() };
    // Promises of 40 s, renewed in their last 12: long enough that the
    // second file's promises are not due for renewal before the durable
    // sync after its delete has replaced the root that still names it.
    let mut c = Cluster::start_with(
        mode,
        &vec![spec; PROVIDERS],
        "[market]\npromise_duration = \"40s\"\nrenew_window = \"12s\"\n",
    );
    c.wait_providers_known(PROVIDERS);
    // First the data that stays, placed on its own: the promises made for
    // it cover nothing else whatever the timing of the agent's passes (a
    // promise covering only a deleted file's chunks rightly lapses).
    let keep = test_data(51, 6 * MIB);
    write_synced(&c.client.path("keep"), &keep);
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable:\n{}", out.text);
    let shared_promises = data_promise_ids(&c);
    assert!(!shared_promises.is_empty(), "keep went under promises of its own");
    let promise_ids_before = promise_ids(&c);
    // Then what shares its chunks (a twin, a file with the same start) and
    // data of its own, placed under promises of their own.
    let mut prefix = keep[..3 * MIB].to_vec();
    prefix.extend(test_data(52, 2 * MIB));
    for (name, data) in [("twin", &keep), ("prefix", &prefix), ("gone", &test_data(53, 3 * MIB))] {
        write_synced(&c.client.path(name), data);
    }
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable:\n{}", out.text);
    // The new data's promises, not those of the metadata placed after it
    // (snapshot parts lapse once superseded, sealed ledger ranges are kept).
    let gone_promises: BTreeSet<String> = data_promise_ids(&c).difference(&promise_ids_before).cloned().collect();
    assert!(!gone_promises.is_empty(), "the new files' own chunks went under new promises");

    for name in ["twin", "prefix", "gone"] {
        fs::remove_file(c.client.path(name)).unwrap_or_else(|e| panic!("rm {name}: {e}"));
    }
    run("sync", &[], None);
    // The root published by the last durable sync still names the deleted
    // files, and what a kept root names stays held; a durable sync now
    // publishes a root without them, which releases the older one.
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable after the deletes:\n{}", out.text);
    let keep_chunks = num(&c.stats(), "chunks");
    assert!(keep_chunks >= 3, "keep is several chunks: {}", c.stats());

    // The promises of the deleted data lapse; those of shared chunks are
    // renewed; the providers end up holding exactly keep's replicas.
    poll("the deleted files' own promises to expire without renewal", || {
        let all = json(&c, &["promises", "--json"]);
        let list = all.as_array().expect("array");
        let states: Vec<&str> =
            list.iter().filter(|p| gone_promises.contains(text(p, "id"))).map(|p| text(p, "state")).collect();
        if states.iter().all(|s| *s == "expired") { Ok(()) } else { Err(format!("{states:?}")) }
    });
    poll("the first promises to be renewed and then expire", || {
        let all = json(&c, &["promises", "--json"]);
        let states: Vec<&str> = all
            .as_array()
            .expect("array")
            .iter()
            .filter(|p| shared_promises.contains(text(p, "id")))
            .map(|p| text(p, "state"))
            .collect();
        if states.iter().all(|s| *s == "renewed") { Ok(()) } else { Err(format!("{states:?}")) }
    });
    // The providers end up holding exactly what the client still
    // references (keep's chunks and the metadata snapshot parts of the
    // moment), each on REPLICATION of them: nothing deleted lingers past
    // its promise, nothing referenced is dropped.
    let st = poll("the providers to hold exactly the client's referenced chunks", || {
        let st = json(&c, &["status", "--json"]);
        let held: u64 = c.providers.iter_mut().map(Provider::chunks).sum();
        let want = REPLICATION * num(&st, "chunks");
        if num(&st, "pending_chunks") == 0 && num(&st, "replicas") == want && held == want {
            Ok(st)
        } else {
            Err(format!("providers hold {held}, want {want}: {st}"))
        }
    });
    let all = json(&c, &["promises", "--json"]);
    assert!(all.as_array().expect("array").iter().all(|p| p["state"] != "broken"), "nothing broke: {all}");
    c.assert_scrub_clean(num(&st, "chunks"));
    assert_file(&c.client.path("keep"), &keep);
    c.shutdown();
}

#[test]
fn collect_hybrid() {
    collect(Mode::Hybrid);
}

#[test]
fn collect_market() {
    collect(Mode::Market);
}
