//! The market with five providers that differ in price and capacity, and
//! one mounted client, each scenario in both network modes:
//!
//! * `distinct_within_budget`: a tree copied into the mount reaches
//!   replication 3, every replica on a distinct provider (each provider
//!   counts a chunk once, and the counts add up to three per chunk), no
//!   provider past its capacity, and the client's active promises cost at
//!   most its `credits_per_month` (and at least what the providers hold is
//!   worth at their floor prices, so the client's count is not too low).
//! * `cheapest_first`: prices 1, 2, 3, 8 and 9 credits and room for all.
//!   What the rule guarantees (`market::asks`, `Agent::assign`): while no
//!   provider has a record, every replica goes to the newcomers ranked by
//!   price, so a first file goes to the three cheapest and they earn
//!   records; from then on newcomers get the explore share (0.1) of the
//!   replicas, the cheapest newcomer first, and a dear newcomer that earns a
//!   record ranks below the cheap ones (fewer kept promises, so a lower or
//!   equal reputation tier, and a higher price). So when the tree follows,
//!   about a tenth of its replicas go to the dearer two, taken from the
//!   third-cheapest's share. Asserted: each of the three cheapest holds more
//!   chunks than each of the two dearest, and the two dearest together hold
//!   at most a quarter of the replicas.
//! * `full_provider_refuses`: the cheapest provider sells only 2 MiB, and
//!   its asks go on offering all of it after it sold most (the `stale-ask`
//!   fault: what a client sees when another client bought the room since
//!   the ask was signed). A first file takes most of its room; then the
//!   tree is copied, the client bids for room that is gone, the provider
//!   refuses (Full, in the client's log), and the client goes elsewhere:
//!   every chunk reaches 3 providers and the small one never holds or
//!   promises more than its capacity. (With an honest ask the client does
//!   not bid past the free room at all; `distinct_within_budget` fills its
//!   cheapest provider that way.)
//!
//! The client writes only once its agent knows all five providers, so the
//! first placement pass already chooses among all of them.

use crate::cluster::*;
use crate::common::*;
use crate::node::*;
use serde_json::Value;
use std::path::PathBuf;
use tempfile::TempDir;

/// Milli-credits per credit, as `node info` reports amounts.
const MILLI: f64 = 1000.0;

/// The `[budget]` of a client that may buy from every provider here (the
/// default maximum price, 5 credits, would rule out the dearest).
pub fn budget_toml(credits_per_month: f64) -> String {
    format!("\n[budget]\ncredits_per_month = {credits_per_month:?}\nmax_price_per_gib_month = 20.0\n")
}

/// A tree copied into the mount: its source (kept in a temp dir) and copy.
pub struct Copied {
    _dir: TempDir,
    pub source: PathBuf,
    pub copy: PathBuf,
}

impl Copied {
    /// Asserts the copy in the mount reads back as the source, byte for byte.
    pub fn assert_same(&self) {
        compare_trees(&self.source, &self.copy, Compare { mtimes: true, nlink: false });
    }
}

/// Builds the drive tests' standard tree (with its 20 MiB file) and copies
/// it into the mount with `cp -a`, which returns once the bytes are in the
/// client's store: it does not wait for the market.
pub fn copy_tree(c: &Cluster, name: &str) -> Copied {
    let dir = tempfile::Builder::new().prefix("pactfs-tree-").tempdir().expect("create temp dir");
    let source = dir.path().join("tree");
    make_tree(&source, true);
    let copy = c.client.path(name);
    run("cp", &["-a", s(&source), s(&copy)], None);
    Copied { _dir: dir, source, copy }
}

/// Each provider's `node info` (in the order of `c.providers`).
pub fn provider_infos(c: &mut Cluster) -> Vec<Value> {
    c.providers.iter_mut().map(Provider::info).collect()
}

/// Asserts no provider holds or has promised more than its capacity.
fn assert_within_capacity(c: &mut Cluster) {
    let infos = provider_infos(c);
    for (p, info) in c.providers.iter().zip(infos) {
        let (bytes, committed) = (num(&info, "provider.bytes"), num(&info, "provider.committed"));
        assert!(
            bytes <= p.spec.capacity && committed <= p.spec.capacity,
            "{} holds {bytes} bytes and promised {committed}, past its capacity {}: {info}",
            p.name,
            p.spec.capacity
        );
    }
}

/// Copies the tree, waits for replication 3, and checks what every scenario
/// shares: the copy reads back, scrub verifies every replica, each provider
/// counts a chunk at most once and the counts add up to three per chunk.
/// Returns the chunk count and each provider's chunk count.
fn copy_and_place(c: &mut Cluster) -> (u64, Vec<u64>) {
    c.wait_providers_known(c.providers.len());
    let copied = copy_tree(c, "tree");
    let chunks = num(&c.wait_placed(), "chunks");
    copied.assert_same();
    c.wait_scrub_clean("scrub to verify every replica (in hybrid mode, each holder found in the DHT too)", chunks);
    let counts = c.provider_chunks(REPLICATION * chunks);
    for (p, &n) in c.providers.iter().zip(&counts) {
        assert!(n <= chunks, "{} holds {n} replicas of {chunks} chunks: {counts:?}", p.name);
    }
    assert_within_capacity(c);
    (chunks, counts)
}

fn distinct_within_budget(mode: Mode) {
    // Five prices and five capacities; the cheapest fills up.
    let specs = [
        ProviderSpec::new(2.0, GIB),
        ProviderSpec::new(1.0, 12 * MIB as u64),
        ProviderSpec::new(3.0, 64 * MIB as u64),
        ProviderSpec::new(5.0, GIB),
        ProviderSpec::new(4.0, 256 * MIB as u64),
    ];
    let budget = 1.0;
    let mut c = Cluster::start_with(mode, &specs, &budget_toml(budget));
    let (chunks, counts) = copy_and_place(&mut c);

    let placement = c.placement();
    let committed = num(&placement, "committed_per_month");
    assert_eq!(num(&placement, "budget_per_month"), (budget * MILLI) as u64, "{placement}");
    assert!(
        committed <= num(&placement, "budget_per_month"),
        "active promises cost {committed} milli-credits a month, above the budget: {placement}"
    );
    assert!(num(&placement, "spent_this_month") <= num(&placement, "budget_per_month"), "{placement}");
    // What the providers hold is worth at least this at their floor prices;
    // the client's promises cover at least that (prices only rise from the
    // floor and a promise covers at least the bytes stored under it).
    let infos = provider_infos(&mut c);
    let floor_worth: f64 = c
        .providers
        .iter()
        .zip(infos)
        .map(|(p, info)| num(&info, "provider.bytes") as f64 / GIB as f64 * p.spec.price * MILLI)
        .sum();
    assert!(
        committed as f64 >= floor_worth.floor(),
        "the client's promises cost {committed} milli-credits a month, less than the {floor_worth:.1} \
         the providers' holdings are worth at their floor prices ({counts:?} chunks): {placement}"
    );
    assert!(num(&placement, "promises_active") > 0, "{placement}");
    eprintln!("distinct_within_budget ({}): {chunks} chunks, per provider {counts:?}; {placement}", mode.name());
    c.shutdown();
}

#[test]
fn distinct_within_budget_hybrid() {
    distinct_within_budget(Mode::Hybrid);
}

#[test]
fn distinct_within_budget_market() {
    distinct_within_budget(Mode::Market);
}

fn cheapest_first(mode: Mode) {
    // Listed out of price order, so that P1 (everyone's bootstrap) is not
    // the cheapest and order of discovery cannot stand in for price.
    let prices = [8.0, 2.0, 9.0, 1.0, 3.0];
    let specs: Vec<ProviderSpec> = prices.iter().map(|&p| ProviderSpec::new(p, GIB)).collect();
    let mut c = Cluster::start_with(mode, &specs, &budget_toml(1000.0));
    c.wait_providers_known(c.providers.len());
    let first = write_files(&c.client, &[("first", 41, MIB)]);
    c.wait_placed();
    let (chunks, counts) = copy_and_place(&mut c);
    assert_files(&first);

    let mut by_price: Vec<(f64, &str, u64)> =
        c.providers.iter().zip(&counts).map(|(p, &n)| (p.spec.price, p.name.as_str(), n)).collect();
    by_price.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (cheap, dear) = by_price.split_at(3);
    let seen = format!("(price, provider, chunks) from the cheapest: {by_price:?}; {chunks} chunks");
    for c3 in cheap {
        for d in dear {
            assert!(c3.2 > d.2, "{} (price {}) holds no more chunks than {} (price {}): {seen}", c3.1, c3.0, d.1, d.0);
        }
    }
    let dear_replicas: u64 = dear.iter().map(|d| d.2).sum();
    assert!(
        dear_replicas * 4 <= REPLICATION * chunks,
        "the two dearest hold {dear_replicas} of {} replicas, more than a quarter: {seen}",
        REPLICATION * chunks
    );
    eprintln!("cheapest_first ({}): {seen}", mode.name());
    c.shutdown();
}

#[test]
fn cheapest_first_hybrid() {
    cheapest_first(Mode::Hybrid);
}

#[test]
fn cheapest_first_market() {
    cheapest_first(Mode::Market);
}

/// Capacity of the small provider in `full_provider_refuses`.
const SMALL: u64 = 2 * MIB as u64;
/// The first file written there: most of `SMALL`, on the small provider
/// (the cheapest, and all are newcomers then).
const FIRST: usize = 3 * MIB / 2;

fn full_provider_refuses(mode: Mode) {
    let small_spec = ProviderSpec { faults: "stale-ask", ..ProviderSpec::new(0.5, SMALL) };
    let specs = [
        ProviderSpec::new(2.0, GIB),
        small_spec,
        ProviderSpec::new(1.0, GIB),
        ProviderSpec::new(3.0, GIB),
        ProviderSpec::new(4.0, GIB),
    ];
    let mut c = Cluster::start_with(mode, &specs, &budget_toml(1000.0));
    let (name, peer_id) = (c.providers[1].name.clone(), c.providers[1].peer_id.clone());
    c.wait_providers_known(c.providers.len());
    let first = write_files(&c.client, &[("first", 31, FIRST)]);
    let first_chunks = num(&c.wait_placed(), "chunks");
    let counts = c.provider_chunks(REPLICATION * first_chunks);
    assert_eq!(counts[1], first_chunks, "{name}, the cheapest, holds the first file: {counts:?}");

    let copied = copy_tree(&c, "tree");
    let chunks = num(&c.wait_placed(), "chunks");
    copied.assert_same();
    assert_files(&first);
    c.wait_scrub_clean("scrub to verify every replica (in hybrid mode, each holder found in the DHT too)", chunks);
    let counts = c.provider_chunks(REPLICATION * chunks);
    for (p, &n) in c.providers.iter().zip(&counts) {
        assert!(n <= chunks, "{} holds {n} replicas of {chunks} chunks: {counts:?}", p.name);
    }
    assert_within_capacity(&mut c);
    let info = c.providers[1].info();
    let log = c.client_log();
    let refused: Vec<&str> =
        log.lines().filter(|l| l.contains("bid refused") && l.contains(&peer_id) && l.contains("Full")).collect();
    eprintln!(
        "full_provider_refuses ({}): {chunks} chunks, per provider {counts:?}; {name}: {}; \
         the client logged {} refusal(s) by it",
        mode.name(),
        info["provider"],
        refused.len()
    );
    assert!(
        !refused.is_empty(),
        "the client's log shows no bid refused with Full by {name} ({peer_id}), whose ask offered room it \
         had sold; its node info: {info}"
    );
    c.shutdown();
}

#[test]
fn full_provider_refuses_hybrid() {
    full_provider_refuses(Mode::Hybrid);
}

#[test]
fn full_provider_refuses_market() {
    full_provider_refuses(Mode::Market);
}
