//! Audits: every `audit_interval`, each active storage promise is asked to
//! prove it still holds a random byte range of a random chunk under it.
//! The provider answers with the bytes and a BLAKE3 verified-slice proof
//! (`chunk::proof`), checked against the chunk id alone. A pass is a kept
//! observation (reputation); a wrong answer, a refusal or a missed
//! deadline breaks the promise, with the request and the answer as
//! evidence in the ledger, and no payment for the rest of its term. An
//! unreachable provider is not failed here: `repair_grace` decides.

use super::held::State;
use super::{Agent, hex, lock, rand_nonce};
use crate::chunk::{ChunkId, proof};
use crate::codec;
use crate::ledger::Event;
use crate::net::proto::{AuditChunk, Audited};
use crate::net::{Request, Response, peer_id_of};
use crate::promise::{Receipt, Signed, unix_now};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Audits in flight at once.
const AUDITS_AT_ONCE: usize = 4;
/// Most promises audited in one step of the agent's loop.
const AUDITS_PER_STEP: usize = 16;
/// An audit not answered by then fails.
const AUDIT_TIMEOUT: Duration = Duration::from_secs(30);
const AUDIT_PREFIX: &[u8] = b"audit/";
const AUDIT_V1: u8 = 1;
const EVIDENCE_V1: u8 = 1;

/// One audit as `pactfs audit` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditView {
    #[serde(with = "codec::string")]
    pub promise: String,
    #[serde(with = "codec::string")]
    pub provider: String,
    pub at: u64,
    #[serde(with = "codec::string")]
    pub chunk: String,
    pub offset: u64,
    pub len: u64,
    pub passed: bool,
    #[serde(with = "codec::string")]
    pub detail: String,
}

/// What a failed audit leaves in the ledger: what was asked, what came
/// back (its digest and the proof), and the promise's signatures.
#[derive(Serialize)]
struct Evidence<'a> {
    promise: [u8; 32],
    client_sig: &'a [u8],
    provider_sig: &'a [u8],
    chunk: [u8; 32],
    offset: u64,
    len: u64,
    answer_blake3: Option<[u8; 32]>,
    siblings: Vec<[u8; 32]>,
    #[serde(with = "codec::string")]
    detail: String,
}

impl Agent {
    /// Audits the promises due (between placement passes).
    pub(super) async fn audit_step(&self) {
        let now = unix_now();
        let interval = self.config().audit_interval.max(1);
        let due: Vec<[u8; 32]> = lock(&self.held)
            .values()
            .filter(|h| h.state == State::Active && h.is_storage() && h.promise.terms.expiry > now)
            .filter(|h| h.last_audit.unwrap_or(h.promise.terms.start) + interval <= now)
            .map(|h| h.id())
            .take(AUDITS_PER_STEP)
            .collect();
        if !due.is_empty() {
            self.audit_all(due).await;
        }
    }

    /// Audits every active storage promise now (`pactfs audit --now`).
    pub async fn audit_now(&self) -> Vec<AuditView> {
        let now = unix_now();
        let ids: Vec<[u8; 32]> = lock(&self.held)
            .values()
            .filter(|h| h.state == State::Active && h.is_storage() && h.promise.terms.expiry > now)
            .map(|h| h.id())
            .collect();
        self.audit_all(ids).await
    }

    async fn audit_all(&self, ids: Vec<[u8; 32]>) -> Vec<AuditView> {
        futures::stream::iter(ids)
            .map(|pid| self.audit_one(pid))
            .buffer_unordered(AUDITS_AT_ONCE)
            .filter_map(|v| async move { v })
            .collect()
            .await
    }

    /// The last audit of every promise audited, newest first.
    pub fn audits(&self) -> Vec<AuditView> {
        let mut v: Vec<AuditView> = self
            .store
            .market_scan(AUDIT_PREFIX)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, v)| codec::decode(AUDIT_V1, &v, 4096).ok())
            .collect();
        v.sort_by(|a: &AuditView, b| b.at.cmp(&a.at).then(a.promise.cmp(&b.promise)));
        v
    }

    /// Audits one promise; `None` if nothing under it can be audited now
    /// (no chunk stored yet, or the provider unreachable).
    async fn audit_one(&self, pid: [u8; 32]) -> Option<AuditView> {
        let h = lock(&self.held).get(&pid).cloned()?;
        let provider = h.provider();
        let peer = peer_id_of(&provider)?;
        let chunks = h.promise.terms.chunks.clone();
        // Chunks this provider signed a receipt for, with their lengths.
        let stored: Vec<(ChunkId, u64)> = self
            .on_store(move |s| {
                let mut out = Vec::new();
                for c in chunks {
                    let c = ChunkId(c);
                    if let Some(b) = s.replica_receipt(&c, &provider.0)?
                        && let Ok(r) = Signed::<Receipt>::decode_stored(&b)
                    {
                        out.push((c, u64::from(r.body.len)));
                    }
                }
                Ok(out)
            })
            .await
            .ok()?;
        if stored.is_empty() {
            return None;
        }
        let (id, total) = stored[(rand_nonce() % stored.len() as u64) as usize];
        let max = u64::from(h.promise.terms.audit.max_range.max(1024));
        let mut bits = rand_nonce();
        let mut coin = || {
            bits = bits.rotate_right(1);
            bits & 1 == 1
        };
        let (offset, len) = proof::pick(total, max, &mut coin);
        let req = AuditChunk { promise: pid, id: id.0, offset, len: len as u32 };
        let answer = tokio::time::timeout(AUDIT_TIMEOUT, self.net.request(peer, Request::Audit(req))).await;
        let (passed, detail, answer_blake3, siblings) = match answer {
            Ok(Ok(Response::Audited(Audited { bytes, siblings }))) => {
                let digest = Some(*blake3::hash(&bytes).as_bytes());
                if bytes.len() as u64 == len && proof::verify(&id, total, offset, &bytes, &siblings) {
                    (true, "proof verified".to_string(), digest, Vec::new())
                } else {
                    (false, "the bytes and proof do not verify against the chunk id".to_string(), digest, siblings)
                }
            }
            Ok(Ok(Response::Refused(r))) if r.why == crate::net::Refusal::Busy => return None,
            Ok(Ok(Response::Refused(r))) => (false, format!("refused: {}", r.message), None, Vec::new()),
            Ok(Ok(other)) => (false, format!("answered {other:?}"), None, Vec::new()),
            // Not reachable: repair_grace decides, not one audit.
            Ok(Err(e)) => {
                tracing::debug!(%peer, cause = %e, "audit not delivered");
                return None;
            }
            Err(_) => (false, format!("no answer within {} s", AUDIT_TIMEOUT.as_secs()), None, Vec::new()),
        };
        let now = unix_now();
        let view = AuditView {
            promise: hex(&pid),
            provider: peer.to_string(),
            at: now,
            chunk: hex(&id.0),
            offset,
            len,
            passed,
            detail: detail.clone(),
        };
        let (key, value) = ([AUDIT_PREFIX, &pid].concat(), codec::encode(AUDIT_V1, &view));
        if let Err(e) = self.on_store(move |s| s.market_put(&key, &value, false)).await {
            tracing::warn!(cause = %e, "cannot keep an audit result");
        }
        self.log(Event::Audit { promise: pid, provider, chunk: id.0, passed, detail: detail.clone() });
        if passed {
            if let Some(h) = lock(&self.held).get_mut(&pid) {
                h.last_audit = Some(now);
                let h = h.clone();
                self.save(&h);
            }
            self.update_reputation(provider, true);
        } else {
            tracing::warn!(promise = %hex(&pid), %peer, cause = %detail, "audit failed");
            let evidence = codec::encode(
                EVIDENCE_V1,
                &Evidence {
                    promise: pid,
                    client_sig: &h.promise.client_sig.0,
                    provider_sig: &h.promise.provider_sig.0,
                    chunk: id.0,
                    offset,
                    len,
                    answer_blake3,
                    siblings,
                    detail: detail.clone(),
                },
            );
            let why = format!("failed an audit of chunk {} [{offset}, +{len}): {detail}", id.fmt_short());
            self.break_promise_with(pid, provider, &why, evidence);
        }
        Some(view)
    }

    /// Reputation per provider, with the broken promises behind it.
    pub fn reputation(&self) -> Vec<ProviderReputation> {
        let now = unix_now();
        let rep = lock(&self.reputation).clone();
        let held = lock(&self.held);
        let mut v: Vec<ProviderReputation> = rep
            .iter()
            .map(|(k, r)| {
                let d = r.at(now);
                let mut broken: Vec<BrokenView> = held
                    .values()
                    .filter(|h| h.provider() == *k && h.state == State::Broken)
                    .map(|h| BrokenView {
                        promise: hex(&h.id()),
                        at: h.broken_at.unwrap_or(0),
                        reason: h.reason.clone(),
                    })
                    .collect();
                broken.sort_by_key(|b| std::cmp::Reverse(b.at));
                ProviderReputation {
                    provider: peer_id_of(k).map(|p| p.to_string()).unwrap_or_default(),
                    score: r.score(now),
                    kept: d.kept,
                    broken_weight: d.broken,
                    broken,
                }
            })
            .collect();
        v.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.provider.cmp(&b.provider)));
        v
    }
}

/// What `pactfs reputation` shows of one provider.
#[derive(Clone, Debug, Serialize)]
pub struct ProviderReputation {
    pub provider: String,
    /// Beta mean of the decayed counts, 0 to 1.
    pub score: f64,
    /// Kept observations (promises kept, audits passed), decayed.
    pub kept: f64,
    /// Broken promises times their weight, decayed.
    pub broken_weight: f64,
    /// The broken promises behind it, newest first.
    pub broken: Vec<BrokenView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BrokenView {
    pub promise: String,
    pub at: u64,
    pub reason: String,
}
