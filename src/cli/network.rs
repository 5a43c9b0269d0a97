//! Network commands: `provider`, `peers`, `node info`, `scrub`.

use super::output::{human_bytes, print_json, print_kv};
use crate::node::{self, Home, HomeLock, control};
use anyhow::{Context, Result};
use std::time::Duration;

/// Runs a provider node in the foreground until SIGINT/SIGTERM.
pub fn provider(home: &Home) -> Result<i32> {
    let mut lock = HomeLock::acquire(home)?;
    lock.record_pid(std::process::id());
    home.identity_seed()?;
    node::run_provider(home, lock, |r| {
        if r.is_ok() {
            eprintln!("pactfs: provider running (stop with Ctrl-C or SIGTERM)");
        }
    })
    .context("provider failed")?;
    Ok(0)
}

fn ask(home: &Home, req: control::Request, timeout: Duration) -> Result<serde_json::Value> {
    Ok(control::call(&home.control_socket(), &req, Some(timeout))?)
}

pub fn node_info(home: &Home, json: bool) -> Result<i32> {
    let v = ask(home, control::Request::NodeInfo, Duration::from_secs(30))?;
    if json {
        print_json(&v)?;
        return Ok(0);
    }
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    print_kv(&[("Peer id", s("peer_id")), ("Mode", s("mode")), ("Role", s("role"))])?;
    for a in v.get("listen").and_then(|l| l.as_array()).into_iter().flatten() {
        print_kv(&[("Listen", a.as_str().unwrap_or("").to_string())])?;
    }
    if let Some(p) = v.get("provider").filter(|p| !p.is_null()) {
        let n = |k: &str| p.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        let size = |k: &str| format!("{} ({} bytes)", human_bytes(n(k)), n(k));
        print_kv(&[
            ("Chunks held", n("chunks").to_string()),
            ("Bytes held", size("bytes")),
            ("Capacity", size("capacity")),
        ])?;
        let vol = |k: &str| p.get("voluntary").and_then(|v| v.get(k)).and_then(|x| x.as_u64()).unwrap_or(0);
        if vol("voluntary_capacity") > 0 || vol("hot_chunks") > 0 {
            print_kv(&[
                ("Hot chunks", vol("hot_chunks").to_string()),
                (
                    "Voluntary",
                    format!(
                        "{} copies, {} of {}",
                        vol("voluntary_chunks"),
                        human_bytes(vol("voluntary_bytes")),
                        human_bytes(vol("voluntary_capacity"))
                    ),
                ),
            ])?;
        }
    }
    Ok(0)
}

pub fn peers(home: &Home, json: bool) -> Result<i32> {
    let v = ask(home, control::Request::Peers, Duration::from_secs(30))?;
    if json {
        print_json(&v)?;
        return Ok(0);
    }
    let rows = v.as_array().cloned().unwrap_or_default();
    println!("{:<54} {:<8} {:<9} {:>9}  ADDRESS", "PEER", "MODE", "ROLE", "LATENCY");
    for p in &rows {
        let s = |k: &str| p.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let latency = p.get("latency_ms").and_then(|x| x.as_f64()).map_or("-".into(), |ms| format!("{ms:.1} ms"));
        let addr = p.get("addresses").and_then(|a| a.get(0)).and_then(|a| a.as_str()).unwrap_or("-").to_string();
        println!("{:<54} {:<8} {:<9} {:>9}  {}", s("peer_id"), s("mode"), s("role"), latency, addr);
    }
    if rows.is_empty() {
        eprintln!("pactfs: no peers connected");
    }
    Ok(0)
}

pub fn scrub(home: &Home, json: bool) -> Result<i32> {
    let v = ask(home, control::Request::Scrub, Duration::from_secs(24 * 3600))?;
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    if json {
        print_json(&v)?;
    } else {
        for p in v.get("problems").and_then(|p| p.as_array()).into_iter().flatten() {
            println!("{}", p.as_str().unwrap_or(""));
        }
        print_kv(&[
            ("Chunks", n("chunks").to_string()),
            ("Replicas", n("replicas").to_string()),
            ("Verified", n("verified").to_string()),
            ("Bad", n("bad").to_string()),
            ("Unreachable", n("unreachable").to_string()),
            ("Found in DHT", n("dht_found").to_string()),
        ])?;
    }
    Ok(if n("bad") == 0 && n("unreachable") == 0 { 0 } else { 1 })
}
