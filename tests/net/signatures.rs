//! Every signature is checked, in both network modes:
//!
//! * `bad_signatures`: among five providers, one publishes asks whose price
//!   was changed after signing (`tamper-ask`) and one answers bids with a
//!   promise it did not sign (`forge-promise`, the cheapest of all, so the
//!   client surely bids there). The client refuses the asks (its log says
//!   so) and never bids at that provider; it refuses the forged promise (its
//!   log says so), so never uploads there, and that provider's reputation
//!   falls (asserted through `pactfs market --json` once the CLI has it; the
//!   log line is the evidence until then). Neither holds a chunk, and every
//!   chunk reaches 3 replicas on the three honest providers.
//! * `probe`: `pactfs-netbench probe`, a client node of the pactfs library,
//!   against a real `pactfs provider`: the bid it signed is answered with a
//!   promise that verifies, and then the very same signed bid is refused
//!   (`Replayed`), as are a bid changed after signing and a client's bid
//!   sent by another identity (`Unauthorized`); uploads under a promise id
//!   the provider never signed, of a chunk the promise does not cover, or by
//!   another identity are refused (`Unauthorized`), and bytes that do not
//!   hash to the id are refused (`BadChunk`); the upload under the promise is
//!   stored with a receipt that verifies; a fetch as another identity is
//!   refused (`Unauthorized`) and the client's own fetch returns the chunk.

use crate::cluster::*;
use crate::common::*;
use crate::market::{budget_toml, copy_tree};
use crate::node::*;
use serde_json::Value;
use std::process::Command;

const NETBENCH: &str = env!("CARGO_BIN_EXE_pactfs-netbench");

/// The lines of `log` that contain every one of `words`.
fn lines_with<'a>(log: &'a str, words: &[&str]) -> Vec<&'a str> {
    log.lines().filter(|line| words.iter().all(|w| line.contains(w))).collect()
}

/// `pactfs market --json` of the client, or `None` while the CLI has no
/// `market` command (it is being added beside these tests).
fn market_view(home: &std::path::Path) -> Option<Vec<Value>> {
    let answer = ask(home, &["market", "--json"]);
    if answer.code == Some(2) && answer.text.contains("unrecognized subcommand") {
        return None;
    }
    let json = answer.json.unwrap_or_else(|| panic!("market --json answered no JSON:\n{}", answer.text));
    Some(json.as_array().cloned().unwrap_or_else(|| panic!("market --json is not an array:\n{}", answer.text)))
}

fn bad_signatures(mode: Mode) {
    let specs = [
        ProviderSpec::new(2.0, GIB),
        ProviderSpec { faults: "tamper-ask", ..ProviderSpec::new(1.0, GIB) },
        ProviderSpec { faults: "forge-promise", ..ProviderSpec::new(0.5, GIB) },
        ProviderSpec::new(3.0, GIB),
        ProviderSpec::new(4.0, GIB),
    ];
    let (tamperer, forger) = (1, 2);
    let mut c = Cluster::start_with(mode, &specs, &budget_toml(1000.0));
    c.wait_providers_known(c.providers.len());
    let copied = copy_tree(&c, "tree");
    let chunks = num(&c.wait_placed(), "chunks");
    copied.assert_same();
    c.wait_scrub_clean("scrub to verify every replica (in hybrid mode, each holder found in the DHT too)", chunks);
    let counts = c.provider_chunks(REPLICATION * chunks);
    for (i, p) in c.providers.iter().enumerate() {
        let want = if i == tamperer || i == forger { 0 } else { chunks };
        assert_eq!(
            counts[i], want,
            "{} ({}) holds {} chunks of {chunks}: {counts:?}",
            p.name, p.spec.faults, counts[i]
        );
    }

    let log = c.client_log();
    let (t_name, t_peer) = (c.providers[tamperer].name.clone(), c.providers[tamperer].peer_id.clone());
    let (f_name, f_peer) = (c.providers[forger].name.clone(), c.providers[forger].peer_id.clone());
    let refused_asks = lines_with(&log, &["refused an ask", &t_peer, "signature"]);
    assert!(!refused_asks.is_empty(), "the client's log never says it refused {t_name}'s tampered ask ({t_peer})");
    let refused_promises = lines_with(&log, &["refused a promise", &f_peer, "signatures do not verify"]);
    assert!(
        !refused_promises.is_empty(),
        "the client's log never says it refused {f_name}'s forged promise ({f_peer})"
    );
    assert!(
        lines_with(&log, &["bid refused", &t_peer]).is_empty(),
        "the client bid at {t_name}, whose asks it refused"
    );
    // The forger answered a bid (it holds the promise it forged) but got no chunk.
    let info = c.providers[forger].info();
    assert!(num(&info, "provider.promises") >= 1, "{f_name} was never bid at: {info}");
    let info = c.providers[tamperer].info();
    assert_eq!(num(&info, "provider.promises"), 0, "{t_name} sold a promise off a tampered ask: {info}");

    match market_view(c.client_home()) {
        Some(asks) => {
            let view = asks.iter().find(|a| a["provider"] == f_peer.as_str());
            let view = view.unwrap_or_else(|| panic!("market --json does not list {f_name}: {asks:?}"));
            let reputation = view["reputation"].as_f64().unwrap_or_else(|| panic!("no reputation in {view}"));
            assert!(
                reputation < 0.5 && view["newcomer"] == false,
                "{f_name}'s reputation did not fall below a newcomer's after a forged promise: {view}"
            );
        }
        None => eprintln!("bad_signatures: no `pactfs market` yet; the reputation is not checked beyond the log"),
    }
    eprintln!(
        "bad_signatures ({}): {chunks} chunks, per provider {counts:?}; the client refused {} ask(s) and {} promise(s)",
        mode.name(),
        refused_asks.len(),
        refused_promises.len()
    );
    c.shutdown();
}

#[test]
fn bad_signatures_hybrid() {
    bad_signatures(Mode::Hybrid);
}

#[test]
fn bad_signatures_market() {
    bad_signatures(Mode::Market);
}

/// What each step of `pactfs-netbench probe` must get.
const PROBE_WANT: &[(&str, &str)] = &[
    ("ask", "verified"),
    ("bid", "Promise"),
    ("promise", "verified"),
    ("replayed_bid", "Replayed"),
    ("tampered_bid", "Unauthorized"),
    ("bid_from_other_identity", "Unauthorized"),
    ("upload_unsigned_promise", "Unauthorized"),
    ("upload_uncovered_chunk", "Unauthorized"),
    ("upload_wrong_bytes", "BadChunk"),
    ("upload_other_identity", "Unauthorized"),
    ("upload", "Stored"),
    ("receipt", "verified"),
    ("fetch_other_identity", "Unauthorized"),
    ("fetch", "Chunk"),
];

fn probe(mode: Mode) {
    let mut provider = Provider::start("P1", mode, &[]);
    let mut command = Command::new(NETBENCH);
    command.args(["probe", "--peer", &provider.tcp, "--mode", mode.name()]);
    let out = output_of(&mut command);
    let text = describe(&command, &out);
    assert!(out.status.success(), "the probe failed:\n{text}");
    let json: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("the probe's output is not JSON ({e}):\n{text}"));
    assert_eq!(json["provider"], provider.peer_id.as_str(), "{text}");
    let wrong: Vec<String> = PROBE_WANT
        .iter()
        .filter(|(step, want)| json[*step] != *want)
        .map(|(step, want)| format!("{step}: want {want}, got {}", json[*step]))
        .collect();
    assert!(wrong.is_empty(), "the provider answered the probe wrongly:\n{}\n{text}", wrong.join("\n"));
    // Only the one authorised upload was stored.
    let info = provider.info();
    assert_eq!((num(&info, "provider.chunks"), num(&info, "provider.promises")), (1, 1), "{info}");
    provider.stop();
}

#[test]
fn probe_hybrid() {
    probe(Mode::Hybrid);
}

#[test]
fn probe_market() {
    probe(Mode::Market);
}
