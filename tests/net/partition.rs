//! A partition: every provider goes down at once (SIGKILL). The drive keeps
//! working from its local data, new writes stay pending and pinned, no
//! promise is broken within `repair_grace`, and once the providers come
//! back (same homes, same ports) the pending data is placed and nothing
//! written on either side of the outage is lost, across a remount too.

use crate::cluster::*;
use crate::common::*;
use crate::node::*;
use serde_json::Value;
use std::fs;

const BEFORE: &[(&str, u64, usize)] = &[("a", 41, 4 * MIB), ("d/b", 42, 300 * 1024)];
const DURING: &[(&str, u64, usize)] = &[("new/c", 43, 3 * MIB), ("new/small", 44, 10)];

fn status(c: &Cluster) -> Value {
    ask_json(c.client_home(), &["status", "--json"]).unwrap_or_else(|e| panic!("status --json:\n{e}"))
}

fn promise_states(c: &Cluster) -> Vec<String> {
    let v = ask_json(c.client_home(), &["promises", "--json"]).unwrap_or_else(|e| panic!("{e}"));
    v.as_array().expect("promises --json is an array").iter().map(|p| text(p, "state").to_owned()).collect()
}

fn partition(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.wait_providers_known(PROVIDERS);
    let mut files = write_files(&c.client, BEFORE);
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable:\n{}", out.text);
    let placed_before = num(&status(&c), "chunks");

    for p in &mut c.providers {
        p.kill9();
    }
    // The client notices (reachability probes) but breaks nothing within the grace.
    poll("the client to notice that no provider answers", || {
        let st = status(&c);
        let gone = st["agent"]["repair"]["providers_unreachable"].as_array().map_or(0, Vec::len);
        if gone > 0 { Ok(()) } else { Err(st.to_string()) }
    });

    // The drive works from local data: reads, writes, renames, a rewrite.
    assert_files(&files);
    files.extend(write_files(&c.client, DURING));
    let renamed = c.client.path("d/b-renamed");
    fs::rename(c.client.path("d/b"), &renamed).expect("rename during the partition");
    let (_, data) = files.remove(1);
    files.push((renamed, data));
    let mut a = files[0].1.clone();
    a[1000..1100].fill(0x5a);
    write_synced(&files[0].0, &a);
    files[0].1 = a;
    run("sync", &[], None);
    assert_files(&files);
    let st = status(&c);
    assert!(num(&st, "pending_chunks") > 0, "new writes wait for providers: {st}");
    assert!(num(&st, "chunks") > placed_before, "{st}");
    let new_c = c.client.path("new/c");
    let replicas = get_xattr(&new_c, "user.pactfs.replicas").expect("replicas attribute");
    assert_eq!(String::from_utf8_lossy(&replicas), format!("0/{REPLICATION}"), "nothing placed while partitioned");
    assert!(promise_states(&c).iter().all(|s| s == "active"), "no promise breaks within the grace");

    // The providers come back where they were.
    for p in &mut c.providers {
        p.restart_on_same_ports();
    }
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable after the partition:\n{}", out.text);
    assert_files(&files);
    // `sync --durable` covers the chunks pending when it started; the root
    // it asks for is snapshotted after, and its part placed like any chunk.
    let st = poll("the root taken after the durable sync to be placed, nothing left pending", || {
        let st = status(&c);
        let done =
            st["root"]["synced"] == true && num(&st, "pending_chunks") == 0 && num(&st, "under_replicated_chunks") == 0;
        if done { Ok(st) } else { Err(st.to_string()) }
    });
    assert!(promise_states(&c).iter().all(|s| s != "broken"), "no promise broke");
    c.assert_scrub_clean(num(&st, "chunks"));

    // And across a remount.
    c.client.unmount();
    c.client.mount();
    assert_files(&files);
    c.shutdown();
}

#[test]
fn partition_hybrid() {
    partition(Mode::Hybrid);
}

#[test]
fn partition_market() {
    partition(Mode::Market);
}
