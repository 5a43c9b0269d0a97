//! Durability as a drive with no provider sees it: the `user.pactfs.*`
//! attributes (read-only, unlisted), `status`, `promises`, `market`, and
//! `sync --durable` saying why it cannot finish. The network side, with
//! providers, is in `tests/net/status.rs`.

use crate::common::*;
use serde_json::Value;
use std::fs;
use std::path::Path;

const REPLICAS: &str = "user.pactfs.replicas";
const PROMISES: &str = "user.pactfs.promises";

fn json_of(out: &std::process::Output, what: &str) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what} is not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

fn xattr_text(path: &Path, name: &str) -> String {
    let value = get_xattr(path, name).unwrap_or_else(|e| panic!("getxattr {name} on {}: {e}", path.display()));
    String::from_utf8(value).expect("utf-8 attribute value")
}

#[test]
fn durability_xattrs_are_read_only_and_not_listed() {
    let mut d = Drive::new();
    d.mount();
    let (f, empty, dir) = (d.path("f"), d.path("empty"), d.path("dir"));
    write_synced(&f, &test_data(11, 300 * KIB));
    write_synced(&empty, b"");
    fs::create_dir(&dir).unwrap();

    // No provider anywhere: nothing of `f` is elsewhere; an empty file has
    // nothing to lose. The target is the default replication, 3.
    assert_eq!(xattr_text(&f, REPLICAS), "0/3");
    assert_eq!(xattr_text(&empty, REPLICAS), "3/3");
    assert_eq!(xattr_text(&f, PROMISES), "");
    let on_dir = get_xattr(&dir, REPLICAS).expect_err("a directory has no replica count");
    assert_eq!(on_dir.raw_os_error(), Some(libc::ENODATA), "{on_dir}");

    // Not listed (so cp -a and rsync -X leave them alone), ordinary ones are.
    set_xattr(&f, "user.mine", b"v", 0).unwrap();
    assert_eq!(list_xattrs(&f), vec!["user.mine".to_string()]);
    assert!(list_xattrs(&empty).is_empty(), "{:?}", list_xattrs(&empty));

    // Read-only: every way of writing them is refused with EPERM.
    for (flags, what) in [(0, "set"), (libc::XATTR_CREATE, "create"), (libc::XATTR_REPLACE, "replace")] {
        let err = set_xattr(&f, REPLICAS, b"3/3", flags).expect_err(what);
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{what}: {err}");
    }
    let err = set_xattr(&f, "user.pactfs.anything", b"x", 0).expect_err("the prefix is reserved");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let err = remove_xattr(&f, PROMISES).expect_err("remove");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    assert_eq!(xattr_text(&f, REPLICAS), "0/3", "still computed after the refusals");
    d.unmount();
}

#[test]
fn sync_durable_without_providers_says_why_and_exits_1() {
    let mut d = Drive::new();
    d.mount();
    // Nothing written yet: nothing to wait for.
    let out = d.pactfs(&["sync", "--durable"]);
    assert_eq!(out.status.code(), Some(0), "{}", d.last_command());
    assert_eq!(key_value(&stdout_of(&out), "Durable").as_deref(), Some("yes"), "{}", d.last_command());

    let (f, empty) = (d.path("f"), d.path("empty"));
    fs::write(&f, test_data(12, 2 * MIB)).unwrap();
    fs::write(&empty, b"").unwrap();
    let out = d.pactfs_ok(&["sync"]);
    assert_eq!(key_value(&stdout_of(&out), "Synced").as_deref(), Some("local"), "{}", d.last_command());

    let status = json_of(&d.pactfs_ok(&["status", "--json"]), "status --json");
    for key in ["pending_chunks", "pending_bytes", "placed_chunks", "replicas", "under_replicated_chunks"] {
        assert!(status[key].is_u64(), "status --json has no integer {key}: {status}");
    }
    assert!(status["pending_chunks"].as_u64() > Some(0), "{status}");
    assert!(status["pending_bytes"].as_u64() >= Some(2 * MIB as u64), "{status}");
    assert_eq!(status["replication_target"], 3, "{status}");
    assert_eq!(status["placed_chunks"], 0, "{status}");
    assert!(status["agent"].is_object(), "{status}");

    // An empty file is durable at once; the whole drive is not, and says why.
    let out = d.pactfs(&["sync", "--durable", s(&empty)]);
    assert_eq!(out.status.code(), Some(0), "{}", d.last_command());
    let out = d.pactfs(&["sync", "--durable"]);
    assert_eq!(out.status.code(), Some(1), "placement cannot finish:\n{}", d.last_command());
    let stdout = stdout_of(&out);
    assert_eq!(key_value(&stdout, "Durable").as_deref(), Some("no"), "{}", d.last_command());
    let blocked = key_value(&stdout, "Blocked").unwrap_or_default();
    assert!(blocked.contains("no provider"), "the reason names the missing providers:\n{}", d.last_command());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&blocked), "{}", d.last_command());
    let out = d.pactfs(&["sync", "--durable", s(&f)]);
    assert_eq!(out.status.code(), Some(1), "{}", d.last_command());
    // The same for scripts: one JSON object, the same exit code.
    let out = d.pactfs(&["sync", "--durable", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", d.last_command());
    let v = json_of(&out, "sync --durable --json");
    assert_eq!(v["durable"], false, "{v}");
    assert!(v["remaining"].as_u64().is_some_and(|n| n > 0), "{v}");
    assert_eq!(v["blocked"].as_str(), Some(blocked.as_str()), "{v}");
    let v = json_of(&d.pactfs_ok(&["sync", "--json"]), "sync --json");
    assert_eq!(v["synced"], "local", "{v}");
    assert!(v["pending"].as_u64().is_some_and(|n| n > 0), "{v}");

    let text = stdout_of(&d.pactfs_ok(&["status"]));
    assert_eq!(key_value(&text, "Blocked"), Some(blocked), "status for people:\n{text}");
    assert_eq!(json_of(&d.pactfs_ok(&["promises", "--json"]), "promises --json"), Value::Array(vec![]));
    assert_eq!(json_of(&d.pactfs_ok(&["market", "--json"]), "market --json"), Value::Array(vec![]));

    // A path outside this home's mount is refused, not waited on.
    let outside = d.home.join("outside");
    fs::write(&outside, b"x").unwrap();
    let out = d.pactfs(&["sync", "--durable", s(&outside)]);
    assert_eq!(out.status.code(), Some(2), "{}", d.last_command());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not inside the pactfs mount"), "{}", d.last_command());
    d.unmount();
}
