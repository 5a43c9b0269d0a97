//! The budget, with five providers and one mounted client, in both
//! network modes (`budget_hybrid`, `budget_market`):
//!
//! 1. With `credits_per_month = 0` a tree copied into the mount is not
//!    placed at all: the agent says it waits for the budget (in `node
//!    info`, and once in its log, not once per pass), no provider holds or
//!    was promised anything, every chunk stays pending, and the tree reads
//!    back byte for byte from the client's own store.
//! 2. The config file is rewritten with a budget that pays for some
//!    replicas but not all (the node rereads `[budget]` when the file
//!    changes): placing resumes, stops again at the budget, and the active
//!    promises never cost more than it, however many bids the agent has in
//!    flight at once.
//! 3. Rewritten again with a large budget: every chunk reaches 3 providers.

use crate::cluster::*;
use crate::common::*;
use crate::market::{budget_toml, copy_tree, provider_infos};
use crate::node::*;
use serde_json::Value;

/// Milli-credits a month for phase 2: the tree (about 27 MiB sealed) costs
/// about 27, 53 and 80 a month at the three cheapest providers (1, 2 and 3
/// credits per GiB-month), so this buys some replicas and not all.
const PARTIAL: u64 = 100;

/// Asserts that the client's active promises cost no more than its budget.
fn assert_within_budget(placement: &Value) {
    let (committed, budget) = (num(placement, "committed_per_month"), num(placement, "budget_per_month"));
    assert!(
        committed <= budget,
        "active promises cost {committed} milli-credits a month, budget {budget}: {placement}"
    );
}

/// Whether the agent reports that it waits for the budget.
fn waits_for_budget(placement: &Value) -> bool {
    placement["blocked"].as_str().is_some_and(|why| why.starts_with("budget"))
}

fn budget(mode: Mode) {
    let specs: Vec<ProviderSpec> = [2.0, 1.0, 4.0, 3.0, 5.0].iter().map(|&p| ProviderSpec::new(p, GIB)).collect();
    let mut c = Cluster::start_with(mode, &specs, &budget_toml(0.0));
    c.wait_providers_known(c.providers.len());
    let copied = copy_tree(&c, "tree");
    let chunks = num(&c.stats(), "chunks");

    // 1. Nothing placed, nothing lost.
    let placement = poll("the agent to report that placement waits for the budget (placement.blocked)", || {
        let placement = c.placement();
        if waits_for_budget(&placement) { Ok(placement) } else { Err(placement.to_string()) }
    });
    let stats = c.stats();
    assert_eq!(
        (num(&stats, "placed_chunks"), num(&stats, "replicas"), num(&stats, "pending_chunks")),
        (0, 0, chunks),
        "with no budget nothing is placed and every chunk stays pending: {stats}"
    );
    assert_eq!(num(&placement, "committed_per_month"), 0, "{placement}");
    assert_eq!(num(&placement, "promises_active"), 0, "{placement}");
    let infos = provider_infos(&mut c);
    for (p, info) in c.providers.iter().zip(infos) {
        assert_eq!(
            (num(&info, "provider.chunks"), num(&info, "provider.committed")),
            (0, 0),
            "{} holds or was promised something on a budget of 0: {info}",
            p.name
        );
    }
    copied.assert_same();

    // 2. A budget for some replicas: placing resumes and stops at the budget.
    c.client.set_config("budget", "credits_per_month", &format!("{:?}", PARTIAL as f64 / 1000.0));
    let placement = poll("the agent to place some replicas on the partial budget and wait for more", || {
        let placement = c.placement();
        assert_within_budget(&placement);
        let stats = c.stats();
        let resumed = num(&placement, "budget_per_month") == PARTIAL && num(&stats, "replicas") > 0;
        if resumed && waits_for_budget(&placement) { Ok(placement) } else { Err(format!("{placement}\n{stats}")) }
    });
    let stats = c.stats();
    assert!(
        num(&stats, "replicas") < REPLICATION * chunks && num(&stats, "pending_chunks") > 0,
        "a budget of {PARTIAL} milli-credits cannot pay for every replica: {stats}\n{placement}"
    );
    copied.assert_same();

    // The reason went to the log once, not once per pass: every pass of
    // phase 1 was held back for the same reason, and it never cleared.
    let log = c.client_log();
    let reasons: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("placement is waiting") && l.contains(" of 0.000 credits/month"))
        .filter_map(|l| l.split_once("reason=").map(|(_, why)| why))
        .collect();
    assert!(!reasons.is_empty(), "the client never logged why placement waits on a budget of 0");
    assert!(
        reasons.windows(2).all(|w| w[0] != w[1]),
        "the client logged the same reason to wait again and again: {reasons:#?}"
    );

    // 3. Enough budget: replication 3 everywhere.
    c.client.set_config("budget", "credits_per_month", "1000.0");
    c.wait_placed();
    let placement = c.placement();
    assert_eq!(num(&placement, "budget_per_month"), 1_000_000, "{placement}");
    assert_within_budget(&placement);
    c.wait_scrub_clean("scrub to verify every replica (in hybrid mode, each holder found in the DHT too)", chunks);
    c.provider_chunks(REPLICATION * chunks);
    copied.assert_same();
    c.shutdown();
}

#[test]
fn budget_hybrid() {
    budget(Mode::Hybrid);
}

#[test]
fn budget_market() {
    budget(Mode::Market);
}
