//! The asks this client knows, and the order in which it prefers their
//! providers.
//!
//! Asks arrive on the market gossip (both modes) and by asking a known
//! provider directly (the DHT's market key names providers in hybrid
//! mode). Every ask is checked before it counts: signed by the provider it
//! names, that provider is the peer it came from, and not expired.
//!
//! Ranking, per chunk: providers with a record whose score is at least
//! `min_reputation`, trusted ones first (score at least [`TRUSTED`]: two
//! promises kept and none broken lately), then cheapest,
//! then lowest latency (5 ms steps), then closest to the chunk in the key
//! space (XOR of provider key and chunk id; in market mode a rendezvous
//! hash of the two, which spreads equals the same way). Newcomers (no
//! record) are ranked by the same rule without the score and get
//! `explore_share` of the replicas, and all of them when no provider has a
//! record yet.

use crate::net::{Mode, node_key_of};
use crate::promise::{Ask, NodeKey, Signed};
use crate::reputation::Record;
use libp2p::PeerId;
use serde::Serialize;
use std::collections::HashMap;

/// The score from which a provider competes on price with every other
/// trusted one. One tier, not many: finer tiers made seniority beat price
/// for good (a newcomer with two kept promises could never undercut an
/// incumbent with twenty).
pub const TRUSTED: f64 = 0.75;

/// Whether a score is in the trusted tier. Decay wears a kept promise's
/// weight down continuously: two kept promises score 0.7499... a second
/// later. The slack keeps a provider at the threshold in its tier for
/// about a day instead of dropping it at once (which ranked a holder with
/// one more kept promise first for every chunk).
pub fn trusted(score: f64) -> bool {
    score >= TRUSTED - 0.01
}

/// A checked ask and what else the client knows of its provider.
#[derive(Clone, Debug)]
pub struct Quote {
    pub peer: PeerId,
    pub key: NodeKey,
    pub ask: Signed<Ask>,
    pub latency_ms: Option<f64>,
}

/// Why an ask was not taken.
pub fn check_ask(peer: &PeerId, ask: &Signed<Ask>, now: u64) -> Result<NodeKey, String> {
    let key = node_key_of(peer).ok_or("the peer id is not an ed25519 key")?;
    if ask.body.provider != key {
        return Err("the ask names another provider than the peer that sent it".into());
    }
    ask.check(now).map_err(|e| format!("ask refused: {e}"))?;
    Ok(key)
}

/// A provider as selection sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub quote: Quote,
    pub score: f64,
    pub newcomer: bool,
}

impl Candidate {
    pub fn price(&self) -> u64 {
        self.quote.ask.body.price_per_gib_month
    }
}

/// What `pactfs market` shows of one ask.
#[derive(Clone, Debug, Serialize)]
pub struct AskView {
    pub provider: String,
    pub price_per_gib_month: u64,
    pub price_per_gib_retrieval: u64,
    pub free_bytes: u64,
    pub min_duration: u64,
    pub max_duration: u64,
    pub expires: u64,
    pub reputation: f64,
    pub newcomer: bool,
    pub latency_ms: Option<f64>,
    /// Why selection skips it now, if it does.
    pub excluded: Option<String>,
}

/// Splits the usable quotes into providers with a record (at least
/// `min_reputation`) and newcomers; returns also why others are out.
pub fn candidates(
    quotes: &HashMap<PeerId, Quote>,
    reputation: &HashMap<NodeKey, Record>,
    excluded: impl Fn(&Quote) -> Option<String>,
    min_reputation: f64,
    now: u64,
) -> (Vec<Candidate>, Vec<Candidate>, Vec<(PeerId, String)>) {
    let (mut recorded, mut newcomers, mut out) = (Vec::new(), Vec::new(), Vec::new());
    for q in quotes.values() {
        if let Some(why) = excluded(q) {
            out.push((q.peer, why));
            continue;
        }
        let rec = reputation.get(&q.key).copied().unwrap_or_default();
        let c = Candidate { quote: q.clone(), score: rec.score(now), newcomer: !rec.has_record(now) };
        if c.newcomer {
            newcomers.push(c);
        } else if c.score >= min_reputation {
            recorded.push(c);
        } else {
            out.push((q.peer, format!("reputation {:.2} below the minimum {min_reputation}", c.score)));
        }
    }
    (recorded, newcomers, out)
}

/// Orders candidates for one chunk, best first.
pub fn rank_for(cands: &mut [Candidate], chunk: &[u8; 32], mode: Mode) {
    let tier = |c: &Candidate| i64::from(trusted(c.score));
    let lat = |c: &Candidate| c.quote.latency_ms.map_or(u64::MAX, |l| (l / 5.0) as u64);
    let dist = |c: &Candidate| -> [u8; 32] {
        match mode {
            Mode::Hybrid => std::array::from_fn(|i| c.quote.key.0[i] ^ chunk[i]),
            Mode::Market => {
                let mut h = blake3::Hasher::new();
                h.update(chunk);
                h.update(&c.quote.key.0);
                *h.finalize().as_bytes()
            }
        }
    };
    cands.sort_by(|a, b| {
        tier(b).cmp(&tier(a)).then(a.price().cmp(&b.price())).then(lat(a).cmp(&lat(b))).then(dist(a).cmp(&dist(b)))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promise::Signer;

    fn quote(seed: u8, price: u64, latency: f64) -> Quote {
        let s = Signer::from_seed(&[seed; 32]);
        let ask = s.sign(Ask {
            provider: s.node_key(),
            price_per_gib_month: price,
            price_per_gib_retrieval: 1,
            free_bytes: 1 << 40,
            min_duration: 1,
            max_duration: 1 << 40,
            addrs: vec![],
            issued: 0,
            expires: u64::MAX,
        });
        let peer = crate::net::peer_id_of(&s.node_key()).unwrap();
        Quote { peer, key: s.node_key(), ask, latency_ms: Some(latency) }
    }

    #[test]
    fn two_kept_promises_stay_trusted_as_they_decay() {
        let mut r = Record::default();
        r.kept(1_000_000);
        r.kept(1_000_000);
        assert!(trusted(r.score(1_000_000)));
        assert!(r.score(1_000_001) < TRUSTED, "decay is continuous");
        assert!(trusted(r.score(1_000_001)), "but a second does not leave the tier");
        assert!(trusted(r.score(1_000_000 + 3600)));
        let mut one = Record::default();
        one.kept(1_000_000);
        assert!(!trusted(one.score(1_000_000)), "one kept promise is not trusted");
    }

    #[test]
    fn cheapest_first_within_a_reputation_tier() {
        let qs: HashMap<PeerId, Quote> =
            [quote(1, 3000, 1.0), quote(2, 1000, 9.0), quote(3, 2000, 1.0), quote(4, 500, 1.0)]
                .into_iter()
                .map(|q| (q.peer, q))
                .collect();
        let mut rep = HashMap::new();
        for seed in [1u8, 2, 3] {
            let mut r = Record::default();
            r.kept(0);
            rep.insert(Signer::from_seed(&[seed; 32]).node_key(), r);
        }
        // Seed 4 is the cheapest but a newcomer: not in the recorded list.
        let (mut rec, new, out) = candidates(&qs, &rep, |_| None, 0.5, 0);
        assert_eq!(new.len(), 1);
        assert!(out.is_empty());
        rank_for(&mut rec, &[0; 32], Mode::Hybrid);
        let prices: Vec<u64> = rec.iter().map(Candidate::price).collect();
        assert_eq!(prices, vec![1000, 2000, 3000]);
        // A better tier wins over a lower price.
        let mut better = Record::default();
        for _ in 0..20 {
            better.kept(0);
        }
        rep.insert(Signer::from_seed(&[1; 32]).node_key(), better);
        let (mut rec, _, _) = candidates(&qs, &rep, |_| None, 0.5, 0);
        rank_for(&mut rec, &[0; 32], Mode::Hybrid);
        assert_eq!(rec[0].price(), 3000);
    }

    #[test]
    fn low_reputation_and_bad_asks_are_out() {
        let q = quote(1, 1000, 1.0);
        let qs: HashMap<PeerId, Quote> = [(q.peer, q.clone())].into_iter().collect();
        let mut r = Record::default();
        r.broke(0);
        let rep: HashMap<NodeKey, Record> = [(q.key, r)].into_iter().collect();
        let (rec, new, out) = candidates(&qs, &rep, |_| None, 0.5, 0);
        assert!(rec.is_empty() && new.is_empty());
        assert!(out[0].1.contains("reputation"));
        // An ask relayed for another provider, and one tampered with.
        let other = quote(2, 1000, 1.0);
        assert!(check_ask(&other.peer, &q.ask, 0).unwrap_err().contains("another provider"));
        let mut tampered = q.ask.clone();
        tampered.body.price_per_gib_month = 1;
        assert!(check_ask(&q.peer, &tampered, 0).unwrap_err().contains("signature"));
        assert_eq!(check_ask(&q.peer, &q.ask, 0), Ok(q.key));
    }
}
