//! Discovery: the client is told of P1 only, yet ends up connected to all
//! four providers and knows each as a provider in the cluster's mode (market
//! mode through the market's own announcements, hybrid mode through the DHT).

use crate::cluster::*;
use crate::node::*;
use serde_json::Value;

fn discovery(mode: Mode) {
    let c = Cluster::start(mode);
    let want: Vec<String> = c.providers.iter().map(|p| p.peer_id.clone()).collect();
    let is_provider = |peer: &Value, id: &str| peer["peer_id"] == id && peer["role"] == "provider";
    let peers = poll(
        &format!("the client, bootstrapped from P1 only, to list all {PROVIDERS} providers in `peers --json`"),
        || {
            let peers = c.peers()?;
            let missing: Vec<&String> = want.iter().filter(|id| !peers.iter().any(|p| is_provider(p, id))).collect();
            if missing.is_empty() {
                Ok(peers)
            } else {
                Err(format!("providers missing (or not yet role provider): {missing:?}\n{}", Value::Array(peers)))
            }
        },
    );
    // Mode comes from the peer's own announcement; it may be "unknown" for a
    // moment after the connection, so it is polled too.
    poll(&format!("every provider in `peers --json` to report mode {}", mode.name()), || {
        let peers = c.peers()?;
        let ok = want.iter().all(|id| peers.iter().any(|p| is_provider(p, id) && p["mode"] == mode.name()));
        if ok { Ok(()) } else { Err(Value::Array(peers).to_string()) }
    });

    for peer in &peers {
        let id = text(peer, "peer_id");
        assert_ne!(id, c.client_peer_id, "a node does not list itself as a peer: {peer}");
        assert!(
            ["hybrid", "market", "unknown"].contains(&text(peer, "mode")),
            "mode is hybrid, market or unknown: {peer}"
        );
        assert!(
            ["client", "provider", "both", "unknown"].contains(&text(peer, "role")),
            "role is client, provider, both or unknown: {peer}"
        );
        assert!(
            peer["latency_ms"].is_null() || peer["latency_ms"].is_number(),
            "latency_ms is a number or null: {peer}"
        );
        let addresses = peer["addresses"].as_array().unwrap_or_else(|| panic!("addresses is a list: {peer}"));
        assert!(addresses.iter().all(Value::is_string), "addresses are strings: {peer}");
        if want.iter().any(|w| w == id) {
            assert!(!addresses.is_empty(), "a connected provider has an address: {peer}");
        }
    }
    let mut ids: Vec<&str> = peers.iter().map(|p| text(p, "peer_id")).collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "each peer is listed once: {}", Value::Array(peers.clone()));
    c.shutdown();
}

#[test]
fn discovery_hybrid() {
    discovery(Mode::Hybrid);
}

#[test]
fn discovery_market() {
    discovery(Mode::Market);
}
