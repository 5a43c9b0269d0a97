//! Restore on a new machine: home A writes a tree, syncs durably and
//! publishes its root; A's node stops and its local store is deleted; home
//! B, made with `init --restore` from A's exported keys and bootstrapped to
//! the providers, mounts and reads the whole tree back from the providers,
//! byte for byte (`diff -r`), with modes, times and links.

use crate::cluster::*;
use crate::common::*;
use crate::node::*;
use serde_json::Value;
use std::fs;

fn restore_from_providers(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.wait_providers_known(PROVIDERS);
    let src = tempfile::tempdir().expect("temp dir");
    let tree = src.path().join("tree");
    make_tree(&tree, true);
    let mnt = c.client.mnt.clone();
    let out = run("cp", &["-a", &format!("{}/.", s(&tree)), s(&mnt)], None);
    assert!(out.status.success(), "cp -a into the mount: {}", describe_out(&out));
    run("sync", &[], None);
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable:\n{}", out.text);
    let root = poll("the client publishes a root taken after the durable sync", || {
        let st = ask_json(c.client_home(), &["status", "--json"])?;
        let root: Value = st["root"].clone();
        if num(&root, "seq") > 0 && root["synced"] == true { Ok(root) } else { Err(format!("{st}")) }
    });
    assert!(num(&root, "parts") >= 1, "{root}");

    let keys = src.path().join("keys");
    let out = ask(c.client_home(), &["key", "export", "--out", s(&keys)]);
    assert_eq!(out.code, Some(0), "key export:\n{}", out.text);
    let out = ask(c.client_home(), &["key", "export", "--out", s(&keys)]);
    assert_eq!(out.code, Some(2), "a second export never overwrites:\n{}", out.text);

    // A's machine is gone: node stopped, local store deleted.
    c.client.unmount();
    for dir in ["db", "packs", "provider"] {
        let _ = fs::remove_dir_all(c.client_home().join(dir));
    }

    let mut b = Drive::new();
    fs::remove_file(b.home.join("identity.key")).expect("remove B's own key");
    fs::remove_file(b.home.join("user.secret")).expect("remove B's own secret");
    let seed = vec![c.providers[0].tcp.clone()];
    fs::write(&b.config, node_toml(mode, None, &seed, "")).expect("write B's config.toml");
    let out = b.pactfs_ok(&["init", "--restore", s(&keys)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Restore:"), "{}", describe_out(&out));
    b.mount();
    let info = ask_json(&b.home, &["node", "info", "--json"]).unwrap_or_else(|e| panic!("B's node info:\n{e}"));
    assert_eq!(text(&info, "peer_id"), c.client_peer_id, "B is A's identity");
    let st = ask_json(&b.home, &["stats", "--json"]).unwrap_or_else(|e| panic!("B's stats:\n{e}"));
    assert!(num(&st, "chunks") > 20 && num(&st, "files") > 10, "{st}");
    // Only B's own new blobs (its ledger seal, its first snapshot) are local.
    assert!(num(&st, "local_chunks") <= 3, "A's chunks are not local before they are read: {st}");
    let local_before = num(&st, "local_chunks");

    let out = run("diff", &["-r", "--no-dereference", s(&tree), s(&b.mnt)], None);
    assert!(out.status.success(), "diff -r source restored: {}", describe_out(&out));
    compare_trees(&tree, &b.mnt, Compare { mtimes: true, nlink: true });
    let st = ask_json(&b.home, &["stats", "--json"]).unwrap_or_else(|e| panic!("B's stats:\n{e}"));
    assert!(num(&st, "local_chunks") > local_before + 20, "reads fetched chunks from providers: {st}");
    let promises = ask_json(&b.home, &["promises", "--json"]).unwrap_or_else(|e| panic!("B's promises:\n{e}"));
    let list = promises.as_array().expect("array");
    assert!(list.iter().any(|p| p["kind"] == "retrieval"), "reads went under retrieval promises: {promises}");
    assert!(list.iter().any(|p| p["kind"] == "storage"), "A's storage promises came back: {promises}");
    assert!(list.iter().all(|p| p["state"] != "broken"), "{promises}");

    // B writes on: a new file gets placed like any other.
    write_files(&b, &[("after-restore", 91, 300 * 1024)]);
    b.unmount();
    // A's drive is unmounted already: stop the providers as `shutdown` would.
    for p in &mut c.providers {
        p.stop();
    }
}

fn describe_out(out: &std::process::Output) -> String {
    format!("{:?}\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn hybrid_a_new_home_restores_the_tree_from_providers() {
    restore_from_providers(Mode::Hybrid);
}

#[test]
fn market_a_new_home_restores_the_tree_from_providers() {
    restore_from_providers(Mode::Market);
}
