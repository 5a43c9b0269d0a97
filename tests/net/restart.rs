//! Restart: a provider killed with SIGKILL after placement comes back from
//! the same home with the same identity and the same chunks, on new ports
//! (port 0), and the client finds it again: scrub is clean once more.

use crate::cluster::*;
use crate::node::*;
use crate::placement::place_tree;

fn restart(mode: Mode) {
    let mut c = Cluster::start(mode);
    let (files, chunks) = place_tree(&c);
    let replicas = REPLICATION * chunks;
    let counts = c.provider_chunks(replicas);
    // Not P1: it is every node's only bootstrap address, and it bootstraps
    // from no one, so on new ports nobody could find it again. P2..P4 hold at
    // least `replicas - chunks` replicas between them, so one holds some.
    let victim = (1..PROVIDERS).max_by_key(|&i| counts[i]).unwrap();
    let held = counts[victim];
    assert!(held > 0, "one of P2..P4 holds replicas: {counts:?}");
    let name = c.providers[victim].name.clone();
    let peer_id = c.providers[victim].peer_id.clone();

    c.providers[victim].kill9();
    // With the provider dead, its replicas are unreachable and the answer is no.
    let down = c.scrub();
    let scrub = down.json.clone().unwrap();
    assert_eq!(down.code, Some(1), "scrub with {name} dead must exit 1:\n{}", down.text);
    assert_eq!(
        (num(&scrub, "replicas"), num(&scrub, "verified"), num(&scrub, "unreachable"), num(&scrub, "bad")),
        (replicas, replicas - held, held, 0),
        "(replicas, verified, unreachable, bad) with {name} ({held} replicas) dead:\n{}",
        down.text
    );

    c.providers[victim].restart();
    let provider = &mut c.providers[victim];
    assert_eq!(provider.peer_id, peer_id, "{name} keeps its identity across a restart");
    poll(&format!("{name} to report its {held} chunks again after the restart"), || {
        let info = provider.info();
        if num(&info, "provider.chunks") == held { Ok(()) } else { Err(info.to_string()) }
    });

    c.wait_scrub_clean(&format!("scrub to be clean again once the client found {name} at its new addresses"), chunks);
    c.provider_chunks(replicas);
    assert_files(&files);
    c.shutdown();
}

#[test]
fn restart_hybrid() {
    restart(Mode::Hybrid);
}

#[test]
fn restart_market() {
    restart(Mode::Market);
}
