//! Placement: every chunk written through the client's mount ends on
//! `REPLICATION` distinct providers, scrub fetches every replica back over
//! the network and verifies it, and the files read back byte-exact.

use crate::cluster::*;
use crate::common::*;
use crate::node::*;
use std::path::PathBuf;

/// The tree the placement tests write: (path under the mount, seed, size).
pub const TREE: &[(&str, u64, usize)] = &[
    ("empty", 1, 0),              // no chunk at all
    ("small", 2, 100),            // one tiny chunk (an inline body on the client)
    ("dir/three", 3, 3 * MIB),    // a few chunks
    ("dir/sub/nine", 4, 9 * MIB), // more than two chunk_max: at least three chunks
];
/// Fewest chunks `TREE` can cut into with the default chunk_max of 4 MiB: 1 + 1 + 3.
const TREE_MIN_CHUNKS: u64 = 5;

/// Writes `TREE` through the mount and waits until all of it is placed;
/// returns the files with their contents and the client's chunk count.
pub fn place_tree(c: &Cluster) -> (Vec<(PathBuf, Vec<u8>)>, u64) {
    let files = write_files(&c.client, TREE);
    let stats = c.wait_placed();
    let chunks = num(&stats, "chunks");
    assert!(chunks >= TREE_MIN_CHUNKS, "the tree cuts into at least {TREE_MIN_CHUNKS} chunks: {stats}");
    (files, chunks)
}

fn placement(mode: Mode) {
    let mut c = Cluster::start(mode);
    let (files, chunks) = place_tree(&c);
    let stats = c.stats();
    assert_eq!(num(&stats, "files"), TREE.len() as u64, "{stats}");

    let scrub = c.assert_scrub_clean(chunks);
    match mode {
        Mode::Market => assert_eq!(num(&scrub, "dht_found"), 0, "market mode has no DHT: {scrub}"),
        Mode::Hybrid => {
            c.wait_scrub_clean(
                "every replica's holder to be found through the DHT too (dht_found == replicas)",
                chunks,
            );
        }
    }

    // The providers' own counts agree with the client's records, and no
    // provider holds a chunk twice (the replicas are on distinct providers).
    let counts = c.provider_chunks(REPLICATION * chunks);
    for (provider, &count) in c.providers.iter().zip(&counts) {
        assert!(count <= chunks, "{} holds {count} replicas of {chunks} chunks: {counts:?}", provider.name);
    }
    let held_bytes: u64 = c.providers.iter_mut().map(|p| num(&p.info(), "provider.bytes")).sum();
    let sealed = num(&stats, "stored_bytes");
    assert!(
        held_bytes >= REPLICATION * sealed,
        "the providers report {held_bytes} bytes for {REPLICATION} replicas of {sealed} sealed bytes"
    );

    assert_files(&files);
    c.shutdown();
}

#[test]
fn placement_hybrid() {
    placement(Mode::Hybrid);
}

#[test]
fn placement_market() {
    placement(Mode::Market);
}
