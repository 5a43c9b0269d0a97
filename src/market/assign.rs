//! Which providers get which chunk's missing replicas: the selection rule
//! of `asks` applied per chunk, with distinct providers per chunk, each
//! provider's free room, and the explore share for newcomers.

use super::AgentConfig;
use super::asks::{self, Candidate};
use crate::chunk::ChunkId;
use crate::net::Mode;
use crate::promise::NodeKey;
use std::collections::HashMap;

/// A pass's plan.
#[derive(Default, Debug)]
pub struct Plan {
    /// Per provider, the chunks to bid for.
    pub groups: HashMap<NodeKey, Vec<(ChunkId, u64)>>,
    /// Per chunk, the providers chosen for it (open promises included).
    pub targets: Vec<(ChunkId, Vec<NodeKey>)>,
    /// Why some replicas found no provider.
    pub blocked: Option<String>,
}

/// Plans `batch` (chunk, length, current holders). `open` are chunks
/// already promised to a provider in an earlier pass (they go there
/// without a new bid); `explored` counts (replicas given to newcomers by
/// choice, choices made), carried across passes so the share holds over
/// time.
pub fn assign(
    cfg: &AgentConfig,
    mode: Mode,
    batch: &[(ChunkId, u64, Vec<[u8; 32]>)],
    mut recorded: Vec<Candidate>,
    mut newcomers: Vec<Candidate>,
    open: &HashMap<ChunkId, Vec<(NodeKey, [u8; 32])>>,
    explored: &mut (u64, u64),
) -> Plan {
    let mut free: HashMap<NodeKey, u64> =
        recorded.iter().chain(newcomers.iter()).map(|c| (c.quote.key, c.quote.ask.body.free_bytes)).collect();
    let mut plan = Plan::default();
    for (id, len, holders) in batch {
        let need = (cfg.replication as usize).saturating_sub(holders.len());
        let mut chosen: Vec<NodeKey> = Vec::new();
        // Chunks already promised (an earlier pass) go there first.
        for (key, _) in open.get(id).into_iter().flatten() {
            let usable = recorded.iter().chain(newcomers.iter()).any(|c| c.quote.key == *key);
            if chosen.len() < need && usable && !holders.contains(&key.0) && !chosen.contains(key) {
                chosen.push(*key);
            }
        }
        asks::rank_for(&mut recorded, &id.0, mode);
        asks::rank_for(&mut newcomers, &id.0, mode);
        while chosen.len() < need {
            // With no provider on record there is no choice to make:
            // newcomers it is, and it does not count against the share.
            let choice = !recorded.is_empty() && !newcomers.is_empty();
            let explore =
                recorded.is_empty() || (choice && (explored.0 as f64) < cfg.explore_share * (explored.1 + 1) as f64);
            let fits = |c: &&Candidate| {
                !holders.contains(&c.quote.key.0)
                    && !chosen.contains(&c.quote.key)
                    && free.get(&c.quote.key).copied().unwrap_or(0) >= *len
            };
            let (first, second) = if explore { (&newcomers, &recorded) } else { (&recorded, &newcomers) };
            let Some(c) = first.iter().find(fits).or_else(|| second.iter().find(fits)) else {
                plan.blocked = Some(format!(
                    "not enough providers: a chunk needs {} more distinct providers with room",
                    need - chosen.len()
                ));
                break;
            };
            if choice {
                explored.1 += 1;
                explored.0 += u64::from(c.newcomer);
            }
            if let Some(f) = free.get_mut(&c.quote.key) {
                *f -= *len;
            }
            plan.groups.entry(c.quote.key).or_default().push((*id, *len));
            chosen.push(c.quote.key);
        }
        if !chosen.is_empty() {
            plan.targets.push((*id, chosen));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::asks::Quote;
    use crate::promise::{Ask, Signer};

    fn cfg(replication: u32, explore_share: f64) -> AgentConfig {
        AgentConfig {
            replication,
            credits_per_month: u64::MAX,
            max_price_per_gib_month: u64::MAX,
            max_retrieval_price: u64::MAX,
            promise_duration: 86400,
            renew_window: 3600,
            audit_interval: 3600,
            min_reputation: 0.5,
            explore_share,
            payment_interval: 3600,
            repair_grace: 3600,
        }
    }

    fn cand(seed: u8, price: u64, free: u64, newcomer: bool) -> Candidate {
        let s = Signer::from_seed(&[seed; 32]);
        let ask = s.sign(Ask {
            provider: s.node_key(),
            price_per_gib_month: price,
            price_per_gib_retrieval: 1,
            free_bytes: free,
            min_duration: 1,
            max_duration: u64::MAX,
            addrs: vec![],
            issued: 0,
            expires: u64::MAX,
        });
        let peer = crate::net::peer_id_of(&s.node_key()).unwrap();
        Candidate {
            quote: Quote { peer, key: s.node_key(), ask, latency_ms: Some(1.0) },
            score: if newcomer { 0.5 } else { 0.8 },
            newcomer,
        }
    }

    fn chunks(n: u8, len: u64) -> Vec<(ChunkId, u64, Vec<[u8; 32]>)> {
        (0..n).map(|i| (ChunkId([i; 32]), len, vec![])).collect()
    }

    fn key(seed: u8) -> NodeKey {
        Signer::from_seed(&[seed; 32]).node_key()
    }

    #[test]
    fn replicas_go_to_distinct_cheapest_providers() {
        let rec = vec![cand(1, 5000, 1 << 40, false), cand(2, 1000, 1 << 40, false), cand(3, 2000, 1 << 40, false)];
        let more = vec![cand(4, 3000, 1 << 40, false), cand(5, 9000, 1 << 40, false)];
        let all: Vec<Candidate> = rec.into_iter().chain(more).collect();
        let plan = assign(&cfg(3, 0.0), Mode::Market, &chunks(20, 100), all, vec![], &HashMap::new(), &mut (0, 0));
        assert!(plan.blocked.is_none());
        for (_, targets) in &plan.targets {
            assert_eq!(targets.len(), 3);
            let mut t = targets.clone();
            t.sort();
            t.dedup();
            assert_eq!(t.len(), 3, "a chunk's replicas go to distinct providers");
        }
        let mut used: Vec<NodeKey> = plan.groups.keys().copied().collect();
        used.sort();
        let mut cheapest = vec![key(2), key(3), key(4)];
        cheapest.sort();
        assert_eq!(used, cheapest);
    }

    #[test]
    fn room_runs_out_and_the_next_provider_takes_over() {
        // The cheapest has room for 2 chunks of 100 bytes only.
        let all = vec![cand(1, 100, 250, false), cand(2, 200, 1 << 40, false), cand(3, 300, 1 << 40, false)];
        let plan = assign(&cfg(1, 0.0), Mode::Market, &chunks(5, 100), all, vec![], &HashMap::new(), &mut (0, 0));
        assert_eq!(plan.groups[&key(1)].len(), 2);
        assert_eq!(plan.groups[&key(2)].len(), 3);
        // Not enough distinct providers: says so.
        let plan = assign(
            &cfg(3, 0.0),
            Mode::Market,
            &chunks(1, 100),
            vec![cand(1, 1, 1 << 40, false)],
            vec![],
            &HashMap::new(),
            &mut (0, 0),
        );
        assert!(plan.blocked.unwrap().contains("2 more distinct providers"));
    }

    #[test]
    fn newcomers_get_the_explore_share_and_everything_when_alone() {
        let mut explored = (0, 0);
        let rec = vec![cand(1, 1000, 1 << 40, false)];
        let new = vec![cand(2, 5000, 1 << 40, true)];
        let plan = assign(&cfg(1, 0.1), Mode::Hybrid, &chunks(100, 10), rec, new, &HashMap::new(), &mut explored);
        assert_eq!(plan.groups[&key(2)].len(), 10, "a tenth of the choices explore");
        assert_eq!(explored, (10, 100));
        // No provider on record yet: newcomers take all, and the share is untouched.
        let mut explored = (0, 0);
        let new = vec![cand(2, 5000, 1 << 40, true), cand(3, 1000, 1 << 40, true)];
        let plan = assign(&cfg(1, 0.1), Mode::Hybrid, &chunks(10, 10), vec![], new, &HashMap::new(), &mut explored);
        assert_eq!(plan.groups[&key(3)].len(), 10, "cheapest newcomer first");
        assert_eq!(explored, (0, 0));
    }

    #[test]
    fn open_promises_are_used_before_new_bids() {
        let all = vec![cand(1, 1000, 1 << 40, false), cand(2, 2000, 1 << 40, false)];
        let batch = chunks(1, 10);
        let open = HashMap::from([(batch[0].0, vec![(key(2), [9; 32])])]);
        let plan = assign(&cfg(1, 0.0), Mode::Market, &batch, all, vec![], &open, &mut (0, 0));
        assert_eq!(plan.targets[0].1, vec![key(2)]);
        assert!(plan.groups.is_empty(), "no new bid for an open slot");
    }
}
