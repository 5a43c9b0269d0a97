//! Lazy retrieval with real processes: placed chunks evicted from the
//! client's cache come back from providers, verified, on read; a holder
//! whose stored bytes rotted on disk is caught and the next one serves;
//! the client's own rotten copies are fetched again from holders;
//! with every holder gone an evicted file reads EIO while local data still
//! reads; `[storage] cache_size` bounds the local copies.

use crate::cluster::*;
use crate::common::*;
use crate::node::*;
use serde_json::Value;
use std::fs;

fn json(c: &Cluster, args: &[&str]) -> Value {
    ask_json(c.client_home(), args).unwrap_or_else(|e| panic!("{args:?}:\n{e}"))
}

/// Evicts the whole drive; returns the answer.
fn evict_all(c: &Cluster) -> Value {
    let out = ask(c.client_home(), &["evict", "--json"]);
    assert_eq!(out.code, Some(0), "evict:\n{}", out.text);
    out.json.clone().expect("evict --json")
}

/// Unmounts and mounts the client again: the kernel's page cache and the
/// drive's plaintext cache start empty, so reads reach the store.
fn remount(c: &mut Cluster, providers: usize) {
    c.client.unmount();
    c.client.mount();
    c.wait_providers_known(providers);
}

fn cold_read(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.wait_providers_known(PROVIDERS);
    let mut files =
        write_files(&c.client, &[("tree/a", 61, 3 * MIB), ("tree/b/c", 62, 200 * 1024), ("tree/d", 63, 10)]);
    files.extend(write_files(&c.client, &[("big", 64, 100 * MIB)]));
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable:\n{}", out.text);
    let chunks = num(&c.stats(), "chunks");

    let ev = evict_all(&c);
    assert_eq!(num(&ev, "pending"), 0, "{ev}");
    assert!(num(&ev, "changed") > 0 && num(&ev, "bytes") >= 100 * MIB as u64, "{ev}");
    let st = c.stats();
    assert!(num(&st, "local_bytes") < MIB as u64, "little is local after evict: {st}");

    remount(&mut c, PROVIDERS);
    assert_files(&files);
    let st = c.stats();
    // (The remount sealed a ledger range: one chunk more, local and pending.)
    assert_eq!(num(&st, "local_chunks"), num(&st, "chunks"), "every chunk read is local again: {st}");
    assert!(num(&st, "chunks") >= chunks, "{st}");
    let promises = json(&c, &["promises", "--json"]);
    let retrievals = promises.as_array().expect("array").iter().filter(|p| p["kind"] == "retrieval").count();
    assert!(retrievals > 0, "reads went under retrieval promises: {promises}");
    assert!(promises.as_array().expect("array").iter().all(|p| p["state"] != "broken"), "{promises}");
    c.shutdown();
}

fn rotten_holder(mode: Mode) {
    // Three providers and replication 3: each holds every chunk.
    let mut c = Cluster::start_with(mode, &vec![ProviderSpec::default(); 3], "");
    c.wait_providers_known(3);
    let files = write_files(&c.client, &[("f", 71, 20 * MIB)]);
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable:\n{}", out.text);
    evict_all(&c);
    // Two of the three holders rot: every chunk has one good copy left.
    let mut rotten = Vec::new();
    for p in &mut c.providers[1..] {
        p.stop();
        assert!(rot_packs(&p.home) > 0, "{} has packs to rot", p.name);
        p.restart_on_same_ports();
        rotten.push(p.peer_id.clone());
    }
    remount(&mut c, 3);
    // The restarted holders reachable (their asks heard), so that the
    // reads meet them rather than only the good holder.
    c.wait_usable_asks(3);
    assert_files(&files);
    let promises = json(&c, &["promises", "--json"]);
    let broken: Vec<&Value> = promises.as_array().expect("array").iter().filter(|p| p["state"] == "broken").collect();
    if broken.is_empty() {
        let reputation = json(&c, &["reputation", "--json"]);
        panic!("a rotten holder's promise breaks: {promises}\nreputation: {reputation}");
    }
    for p in &broken {
        assert!(rotten.contains(&text(p, "provider").to_owned()), "only rotten holders broke: {p}");
    }
    c.shutdown();
}

/// The client's own disk rots: every local body of a placed chunk, pinned
/// or not, is dropped on read and fetched again from a holder, and the
/// fetched copy is kept (the files read with every provider gone after).
fn rotten_local_copy(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.wait_providers_known(PROVIDERS);
    let files = write_files(&c.client, &[("rot/plain", 75, 6 * MIB), ("rot/pinned", 76, 3 * MIB + 17)]);
    let pinned = files[1].0.to_str().expect("utf-8 path").to_owned();
    let out = ask(c.client_home(), &["pin", &pinned, "--json"]);
    assert_eq!(out.code, Some(0), "pin:\n{}", out.text);
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable:\n{}", out.text);
    c.client.unmount();
    assert!(rot_packs(&c.client.home) > 0, "the client has packs to rot");
    c.client.mount();
    c.wait_providers_known(PROVIDERS);
    assert_files(&files);
    let promises = json(&c, &["promises", "--json"]);
    let retrievals = promises.as_array().expect("array").iter().filter(|p| p["kind"] == "retrieval").count();
    assert!(retrievals > 0, "the rotten copies came back under retrieval promises: {promises}");
    assert!(
        promises.as_array().expect("array").iter().all(|p| p["state"] != "broken"),
        "no holder is blamed: {promises}"
    );

    for p in &mut c.providers {
        p.kill9();
    }
    c.client.unmount();
    c.client.mount();
    assert_files(&files);
    c.shutdown();
}

fn all_holders_gone(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.wait_providers_known(PROVIDERS);
    let placed = write_files(&c.client, &[("placed", 81, 2 * MIB)]);
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable:\n{}", out.text);
    evict_all(&c);
    for p in &mut c.providers {
        p.kill9();
    }
    let local = write_files(&c.client, &[("local", 82, 2 * MIB)]);
    c.client.unmount();
    c.client.mount();
    let err = fs::read(&placed[0].0).expect_err("an evicted file with no holder left cannot be read");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_files(&local);
    c.shutdown();
}

fn cache_limit(mode: Mode) {
    let mut c = Cluster::start(mode);
    // [storage] is read at start.
    c.client.set_config("storage", "cache_size", "\"8MiB\"");
    remount(&mut c, PROVIDERS);
    let files = write_files(&c.client, &[("a", 91, 12 * MIB), ("b", 92, 12 * MIB)]);
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable:\n{}", out.text);
    poll("the cache to come down to its 8 MiB", || {
        let st = c.stats();
        if num(&st, "local_bytes") <= 8 * MIB as u64 { Ok(()) } else { Err(st.to_string()) }
    });
    assert_files(&files);
    poll("the cache to stay within its 8 MiB after reading everything back", || {
        let st = c.stats();
        if num(&st, "local_bytes") <= 8 * MIB as u64 { Ok(()) } else { Err(st.to_string()) }
    });
    c.shutdown();
}

#[test]
fn cold_read_hybrid() {
    cold_read(Mode::Hybrid);
}

#[test]
fn cold_read_market() {
    cold_read(Mode::Market);
}

#[test]
fn rotten_local_copy_hybrid() {
    rotten_local_copy(Mode::Hybrid);
}

#[test]
fn rotten_local_copy_market() {
    rotten_local_copy(Mode::Market);
}

#[test]
fn rotten_holder_hybrid() {
    rotten_holder(Mode::Hybrid);
}

#[test]
fn rotten_holder_market() {
    rotten_holder(Mode::Market);
}

#[test]
fn all_holders_gone_hybrid() {
    all_holders_gone(Mode::Hybrid);
}

#[test]
fn all_holders_gone_market() {
    all_holders_gone(Mode::Market);
}

#[test]
fn cache_limit_hybrid() {
    cache_limit(Mode::Hybrid);
}

#[test]
fn cache_limit_market() {
    cache_limit(Mode::Market);
}
