//! Voluntary replication with real processes: a provider that sells no
//! storage to this client (its price is above the client's limit) but has
//! `[provider] voluntary_capacity` copies the chunks the holders announce
//! as hot once the client has read them often, and offers them (market
//! mode: in its announcements; hybrid mode: DHT provider records). With
//! every holder under promise killed, the client reads the file back,
//! byte-exact, from the voluntary copies under retrieval promises.

use crate::cluster::*;
use crate::common::*;
use crate::node::*;
use serde_json::Value;

/// Reads served by one holder before it calls a chunk hot (`HOT_AFTER`).
const HOT_AFTER: usize = 3;

fn voluntary(mode: Mode) {
    let mut specs = vec![ProviderSpec::default(); 4];
    // P1 (the seed) sells storage far above the client's
    // max_price_per_gib_month, so the client never stores there.
    specs[0] = ProviderSpec { price: 1000.0, terms: "voluntary_capacity = \"64MiB\"", ..ProviderSpec::default() };
    let mut c = Cluster::start_with(mode, &specs, "");
    c.wait_providers_known(4);
    let files = write_files(&c.client, &[("hot", 101, 6 * MIB)]);
    let out = ask(c.client_home(), &["sync", "--durable"]);
    assert_eq!(out.code, Some(0), "sync --durable:\n{}", out.text);
    assert_eq!(c.providers[0].chunks(), 0, "the volunteer holds nothing under promise");
    let path = files[0].0.to_str().expect("utf-8 path").to_owned();

    // Cold reads, each from the holders: each chunk's first-ranked holder
    // serves it every time, so after HOT_AFTER reads it is hot there.
    let read_cold = |c: &mut Cluster| -> u64 {
        let out = ask(c.client_home(), &["evict", &path, "--json"]);
        assert_eq!(out.code, Some(0), "evict:\n{}", out.text);
        let chunks = num(out.json.as_ref().expect("evict --json"), "changed");
        assert!(chunks > 0, "the file's chunks were local: {}", out.text);
        c.client.unmount();
        c.client.mount();
        c.wait_providers_known(4);
        assert_files(&files);
        chunks
    };
    let mut chunks = 0;
    for _ in 0..HOT_AFTER {
        chunks = read_cold(&mut c);
    }
    // A fetch that fell back to another holder (one the remounted client
    // could not dial yet, say) splits a chunk's count between holders, so
    // no holder calls it hot: read again, a few times at most, until the
    // volunteer has copied every chunk.
    let complete = |c: &mut Cluster| {
        let info = c.providers[0].info();
        let v = info["provider"]["voluntary"].clone();
        if num(&v, "voluntary_chunks") >= chunks { Ok(v) } else { Err(info.to_string()) }
    };
    let mut extra_reads = 0;
    let vol = loop {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
        let mut seen = complete(&mut c);
        while seen.is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(500));
            seen = complete(&mut c);
        }
        match seen {
            Ok(v) => break v,
            Err(last) if extra_reads == 6 => {
                panic!("the volunteer never copied every hot chunk of the file after {extra_reads} more reads:\n{last}")
            }
            Err(_) => {
                read_cold(&mut c);
                extra_reads += 1;
            }
        }
    };
    assert!(num(&vol, "voluntary_bytes") >= 6 * MIB as u64, "{vol}");
    assert!(num(&vol, "voluntary_bytes") <= 64 * MIB as u64, "within voluntary_capacity: {vol}");
    let volunteer = c.providers[0].peer_id.clone();

    // Every holder under promise gone; the file only on the volunteer.
    let out = ask(c.client_home(), &["evict", &path, "--json"]);
    assert_eq!(out.code, Some(0), "evict:\n{}", out.text);
    for p in &mut c.providers[1..] {
        p.kill9();
    }
    c.client.unmount();
    c.client.mount();
    assert_files(&files);

    let promises = ask_json(c.client_home(), &["promises", "--json"]).unwrap_or_else(|e| panic!("promises:\n{e}"));
    let list = promises.as_array().expect("array");
    let from_volunteer: Vec<&Value> = list.iter().filter(|p| text(p, "provider") == volunteer).collect();
    assert!(!from_volunteer.is_empty(), "the client read under retrieval promises with the volunteer: {promises}");
    for p in &from_volunteer {
        assert_eq!(text(p, "kind"), "retrieval", "only retrieval with the volunteer: {p}");
        assert_ne!(text(p, "state"), "broken", "the volunteer kept its promises: {p}");
    }
    c.shutdown();
}

#[test]
fn voluntary_copies_serve_when_holders_are_gone_hybrid() {
    voluntary(Mode::Hybrid);
}

#[test]
fn voluntary_copies_serve_when_holders_are_gone_market() {
    voluntary(Mode::Market);
}
