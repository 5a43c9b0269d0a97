//! Payments: every `payment_interval`, each provider is paid what its
//! promises have earned since the last cheque, by a new cumulative cheque
//! (the newest supersedes the older ones). A broken promise earns nothing
//! after it broke. The month's spend never passes `credits_per_month`:
//! what does not fit waits for the next month.

use super::held;
use super::{Agent, lock, month_of};
use crate::codec;
use crate::ledger::Event;
use crate::net::{Request, Response, peer_id_of};
use crate::promise::{Cheque, NodeKey, STATEMENT_V1, credits, unix_now};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How soon a provider a payment pass could not pay is tried again.
const PAY_RETRY: Duration = Duration::from_secs(60);

/// Why a provider was not paid.
enum PayFailure {
    /// The request did not get through: worth another try soon.
    Unreachable(String),
    /// Refused, answered wrongly, or our own store failed.
    Other(String),
}

impl From<String> for PayFailure {
    fn from(why: String) -> PayFailure {
        PayFailure::Other(why)
    }
}

impl Agent {
    /// Pays what is due, if a payment interval has passed; between
    /// intervals, tries again the providers a pass could not pay.
    pub(super) async fn pay_due(&self) {
        let interval = Duration::from_secs(self.config().payment_interval.max(1));
        let only: Option<BTreeSet<NodeKey>> = {
            let mut last = lock(&self.last_payment);
            if last.is_some_and(|t| t.elapsed() < interval) {
                let mut retry = lock(&self.pay_retry);
                if retry.1.is_empty() || retry.0.is_some_and(|t| t.elapsed() < PAY_RETRY) {
                    return;
                }
                retry.0 = Some(Instant::now());
                Some(std::mem::take(&mut retry.1))
            } else {
                *last = Some(Instant::now());
                lock(&self.pay_retry).1.clear();
                None
            }
        };
        let now = unix_now();
        let mut earned: BTreeMap<NodeKey, u64> = BTreeMap::new();
        self.save_retrieved().await;
        for h in lock(&self.held).values() {
            let e = if h.is_storage() { h.accrued(now) } else { self.retrieval_earned(h) };
            *earned.entry(h.provider()).or_default() += e;
        }
        if let Some(only) = &only {
            earned.retain(|p, _| only.contains(p));
        }
        for (provider, earned) in earned {
            match self.pay(provider, earned, now).await {
                Ok(()) => {}
                // Only a provider we could not reach is tried again soon: a
                // refusal would be refused again.
                Err(PayFailure::Unreachable(e)) => {
                    // A first miss is usual right after start (the node has
                    // not learnt every address yet): only a retry that also
                    // misses is worth a warning.
                    if only.is_some() {
                        tracing::warn!(provider = ?provider, cause = %e, retry_in = ?PAY_RETRY, "payment not made");
                    } else {
                        tracing::info!(provider = ?provider, cause = %e, retry_in = ?PAY_RETRY, "payment not made yet");
                    }
                    let mut retry = lock(&self.pay_retry);
                    retry.0 = Some(Instant::now());
                    retry.1.insert(provider);
                }
                Err(PayFailure::Other(e)) => tracing::warn!(provider = ?provider, cause = %e, "payment not made"),
            }
        }
    }

    async fn pay(&self, provider: NodeKey, earned: u64, now: u64) -> Result<(), PayFailure> {
        let last = self.on_store(move |s| held::last_paid(s, &provider)).await?;
        let paid = last.as_ref().map_or(0, |c| c.body.total);
        let due = earned.saturating_sub(paid);
        if due == 0 {
            return Ok(());
        }
        let month = month_of(now);
        let m = month.clone();
        let spent = self.on_store(move |s| held::spent(s, &m)).await?;
        let budget = self.config().credits_per_month;
        let amount = due.min(budget.saturating_sub(spent));
        if amount < due {
            self.set_blocked(Some(format!(
                "budget: {} of {} credits spent this month; {} owed waits for next month",
                credits(spent),
                credits(budget),
                credits(due - amount)
            )));
        }
        if amount == 0 {
            return Ok(());
        }
        let cheque = self.signer.sign(Cheque {
            client: self.me,
            provider,
            total: paid + amount,
            seq: last.as_ref().map_or(1, |c| c.body.seq + 1),
            at: now,
        });
        let peer = peer_id_of(&provider).ok_or("not a valid provider key".to_string())?;
        let ack = match self.net.request(peer, Request::Pay(cheque.clone())).await {
            Ok(Response::Paid(ack)) => ack,
            Ok(Response::Refused(r)) => return Err(PayFailure::Other(format!("cheque refused: {}", r.message))),
            Ok(other) => return Err(PayFailure::Other(format!("unexpected answer {other:?}"))),
            Err(e) => return Err(PayFailure::Unreachable(e.to_string())),
        };
        if ack.verify_by(&provider).is_err() || ack.body.total != cheque.body.total || ack.body.client != self.me {
            return Err(PayFailure::Other("the provider's acknowledgement does not match the cheque".into()));
        }
        let c = cheque.clone();
        let m = month.clone();
        self.on_store(move |s| {
            held::save_paid(s, &c)?;
            held::add_spent(s, &m, amount)
        })
        .await?;
        tracing::info!(provider = ?provider, amount = %credits(amount), total = %credits(cheque.body.total), "paid");
        self.log(Event::Payment {
            client: self.me,
            provider,
            amount,
            total: cheque.body.total,
            signed: codec::Bytes(codec::encode(STATEMENT_V1, &cheque)),
        });
        Ok(())
    }
}
