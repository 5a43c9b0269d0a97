//! The market's signed statements: a provider's ask, a client's bid, the
//! promise both sign, and the client's cumulative cheque.
//!
//! Amounts are integer milli-credits ([`MILLI`] per credit) so that signed
//! bytes never depend on float formatting. A promise's id is the BLAKE3 of
//! its terms' canonical encoding: the same bytes both sides sign.

use super::{NodeKey, PromiseError, STATEMENT_V1, Sig, Signed, Signer, Statement, signing_bytes};
use crate::codec;
use serde::{Deserialize, Serialize};

/// Milli-credits per credit.
pub const MILLI: u64 = 1000;
/// Most chunks one promise covers (its terms stay under 100 KiB).
pub const MAX_PROMISE_CHUNKS: usize = 2048;
/// Most addresses an ask carries.
pub const MAX_ASK_ADDRS: usize = 16;
/// A month, for prices per GiB-month: 30 days.
pub const MONTH_SECS: u64 = 30 * 24 * 3600;
/// How far a statement's start may sit from the receiver's clock.
pub const CLOCK_SKEW_SECS: u64 = 600;
const GIB: u128 = 1 << 30;

/// Credits as a decimal string, for people.
pub fn credits(milli: u64) -> String {
    format!("{}.{:03}", milli / MILLI, milli % MILLI)
}

/// Credits (as the config writes them) to milli-credits.
pub fn to_milli(credits: f64) -> u64 {
    if credits.is_finite() && credits > 0.0 { (credits * MILLI as f64).round().min(u64::MAX as f64) as u64 } else { 0 }
}

/// What `bytes` stored for `secs` cost at `price` milli-credits per
/// GiB-month, rounded up (a provider is never paid less than it earned).
pub fn storage_cost(bytes: u64, price: u64, secs: u64) -> u64 {
    let num = u128::from(bytes) * u128::from(price) * u128::from(secs);
    let den = GIB * u128::from(MONTH_SECS);
    u64::try_from(num.div_ceil(den)).unwrap_or(u64::MAX)
}

/// Milli-credits for fetching `bytes` at `price` milli-credits per GiB.
pub fn retrieval_cost(bytes: u64, price: u64) -> u64 {
    let num = u128::from(bytes) * u128::from(price);
    u64::try_from(num.div_ceil(GIB)).unwrap_or(u64::MAX)
}

/// A provider's signed offer: its prices, free room and terms, valid until
/// `expires`. Clients rank providers by their asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ask {
    pub provider: NodeKey,
    /// Milli-credits per GiB-month stored.
    pub price_per_gib_month: u64,
    /// Milli-credits per GiB retrieved.
    pub price_per_gib_retrieval: u64,
    pub free_bytes: u64,
    pub min_duration: u64,
    pub max_duration: u64,
    /// Where to reach the provider: multiaddr bytes.
    #[serde(deserialize_with = "codec::bounded_seq::<_, _, MAX_ASK_ADDRS>")]
    pub addrs: Vec<codec::Bytes>,
    pub issued: u64,
    pub expires: u64,
}

impl Statement for Ask {
    const DOMAIN: &'static str = "pactfs/ask/1";
}
impl Statement for Terms {
    const DOMAIN: &'static str = "pactfs/terms/1";
}
impl Statement for Cheque {
    const DOMAIN: &'static str = "pactfs/cheque/1";
}
impl Statement for ChequeAck {
    const DOMAIN: &'static str = "pactfs/cheque-ack/1";
}

impl Signed<Ask> {
    /// Signed by the provider it names, and current.
    pub fn check(&self, now: u64) -> Result<(), PromiseError> {
        if now > self.body.expires {
            return Err(PromiseError::Expired(now - self.body.expires));
        }
        self.verify_by(&self.body.provider)
    }
    /// The ask's identity for the ledger: BLAKE3 of its signed encoding.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&codec::encode(STATEMENT_V1, self)).as_bytes()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromiseKind {
    Storage,
    Retrieval,
}

/// How the client will audit the provider under a promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTerms {
    /// Seconds between two audits.
    pub interval: u64,
    /// Largest byte range one audit asks for.
    pub max_range: u32,
}

/// What a promise says. A client's bid is these terms signed by the client;
/// the promise is the same terms signed by both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    pub kind: PromiseKind,
    pub client: NodeKey,
    pub provider: NodeKey,
    #[serde(deserialize_with = "codec::bounded_seq::<_, _, MAX_PROMISE_CHUNKS>")]
    pub chunks: Vec<[u8; 32]>,
    pub bytes: u64,
    /// Milli-credits per GiB-month (storage) or per GiB (retrieval).
    pub price: u64,
    pub start: u64,
    pub expiry: u64,
    pub audit: AuditTerms,
    /// Makes every bid unique: a provider refuses a nonce it has seen.
    pub nonce: u64,
    /// The promise these terms extend, if a renewal.
    pub renews: Option<[u8; 32]>,
}

impl Terms {
    /// The canonical bytes both sides sign.
    pub fn canonical(&self) -> Vec<u8> {
        codec::encode(STATEMENT_V1, self)
    }
    /// The promise id: BLAKE3 of the canonical bytes.
    pub fn id(&self) -> [u8; 32] {
        *blake3::hash(&self.canonical()).as_bytes()
    }
    pub fn duration(&self) -> u64 {
        self.expiry.saturating_sub(self.start)
    }
    /// The whole promise's price in milli-credits: for storage, its bytes
    /// for its term; for retrieval, every byte of it fetched once.
    pub fn total_cost(&self) -> u64 {
        match self.kind {
            PromiseKind::Storage => storage_cost(self.bytes, self.price, self.duration()),
            PromiseKind::Retrieval => retrieval_cost(self.bytes, self.price),
        }
    }
    /// What the promise costs per month (what the budget counts). A
    /// retrieval promise is no standing cost: what is fetched is paid as
    /// fetched (and counts in the month's spend).
    pub fn monthly_cost(&self) -> u64 {
        match self.kind {
            PromiseKind::Storage => storage_cost(self.bytes, self.price, MONTH_SECS),
            PromiseKind::Retrieval => 0,
        }
    }
    /// What the provider has earned by time alone from `start` until `now`
    /// (at most the whole promise). A retrieval promise earns by bytes
    /// fetched instead, which the client counts.
    pub fn accrued(&self, now: u64) -> u64 {
        match self.kind {
            PromiseKind::Storage => {
                storage_cost(self.bytes, self.price, now.min(self.expiry).saturating_sub(self.start))
            }
            PromiseKind::Retrieval => 0,
        }
    }
    pub fn covers(&self, chunk: &[u8; 32]) -> bool {
        self.chunks.contains(chunk)
    }
}

/// A client's signed bid.
pub type Bid = Signed<Terms>;

/// Terms signed by both the client and the provider. The provider's
/// signature is the capability the client presents to store and fetch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promise {
    pub terms: Terms,
    pub client_sig: Sig,
    pub provider_sig: Sig,
}

impl Promise {
    /// The provider's acceptance of `bid`.
    pub fn accept(bid: &Bid, provider: &Signer) -> Promise {
        let provider_sig = provider.sign_bytes(&signing_bytes(&bid.body));
        Promise { terms: bid.body.clone(), client_sig: bid.sig.clone(), provider_sig }
    }
    pub fn id(&self) -> [u8; 32] {
        self.terms.id()
    }
    /// Both signatures verify over the canonical terms.
    pub fn verify(&self) -> Result<(), PromiseError> {
        let bytes = signing_bytes(&self.terms);
        self.terms.client.verify(&bytes, &self.client_sig)?;
        self.terms.provider.verify(&bytes, &self.provider_sig)
    }
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(STATEMENT_V1, self)
    }
    pub fn decode(bytes: &[u8]) -> Result<Promise, codec::CodecError> {
        codec::decode(STATEMENT_V1, bytes, MAX_PROMISE_BYTES)
    }
}

/// The largest encoded promise.
pub const MAX_PROMISE_BYTES: usize = MAX_PROMISE_CHUNKS * 33 + 1024;

impl Bid {
    /// What a provider (`me`) checks of a bid from `sender` (the
    /// connection's authenticated peer): signed by the sender, for me.
    pub fn check_bid(&self, sender: &NodeKey, me: &NodeKey) -> Result<(), PromiseError> {
        from_client_to_me(&self.body.client, &self.body.provider, sender, me)?;
        self.verify_by(sender)
    }
}

/// A client's statement names the sending peer as its client and this
/// provider as its audience.
fn from_client_to_me(client: &NodeKey, provider: &NodeKey, sender: &NodeKey, me: &NodeKey) -> Result<(), PromiseError> {
    if client != sender {
        return Err(PromiseError::WrongSigner);
    }
    if provider != me {
        return Err(PromiseError::WrongAudience);
    }
    Ok(())
}

/// A client's cumulative payment to one provider: `total` is everything
/// paid so far, so the newest cheque supersedes the older ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cheque {
    pub client: NodeKey,
    pub provider: NodeKey,
    /// Milli-credits paid in all, this cheque included.
    pub total: u64,
    pub seq: u64,
    pub at: u64,
}

impl Signed<Cheque> {
    /// As [`Bid::check_bid`], for a cheque.
    pub fn check_cheque(&self, sender: &NodeKey, me: &NodeKey) -> Result<(), PromiseError> {
        from_client_to_me(&self.body.client, &self.body.provider, sender, me)?;
        self.verify_by(sender)
    }
}

/// A provider's signed acknowledgement of a cheque.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChequeAck {
    pub client: NodeKey,
    pub provider: NodeKey,
    pub total: u64,
    pub seq: u64,
    pub at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(c: NodeKey, p: NodeKey) -> Terms {
        Terms {
            kind: PromiseKind::Storage,
            client: c,
            provider: p,
            chunks: vec![[1; 32], [2; 32]],
            bytes: 1 << 30,
            price: 2 * MILLI,
            start: 1000,
            expiry: 1000 + MONTH_SECS,
            audit: AuditTerms { interval: 3600, max_range: 4096 },
            nonce: 42,
            renews: None,
        }
    }

    #[test]
    fn both_signatures_make_a_promise() {
        let client = Signer::from_seed(&[1; 32]);
        let provider = Signer::from_seed(&[2; 32]);
        let other = Signer::from_seed(&[3; 32]);
        let (c, p) = (client.node_key(), provider.node_key());
        let bid = client.sign(terms(c, p));
        assert_eq!(bid.check_bid(&c, &p), Ok(()));
        assert_eq!(bid.check_bid(&p, &p), Err(PromiseError::WrongSigner));
        let promise = Promise::accept(&bid, &provider);
        assert_eq!(promise.verify(), Ok(()));
        assert_eq!(promise.id(), bid.body.id());
        // A promise "signed" by someone else than the provider it names.
        let forged = Promise::accept(&bid, &other);
        assert_eq!(forged.verify(), Err(PromiseError::BadSignature));
        // Any change to the terms breaks both signatures.
        let mut tampered = promise.clone();
        tampered.terms.price = 1;
        assert_eq!(tampered.verify(), Err(PromiseError::BadSignature));
        assert_ne!(tampered.id(), promise.id());
        let back = Promise::decode(&promise.encode()).unwrap();
        assert_eq!(back, promise);
    }

    #[test]
    fn costs_round_up_and_accrue_linearly() {
        let t = terms(NodeKey([1; 32]), NodeKey([2; 32]));
        assert_eq!(t.total_cost(), 2 * MILLI);
        assert_eq!(t.monthly_cost(), 2 * MILLI);
        assert_eq!(t.accrued(1000 + MONTH_SECS / 2), MILLI);
        assert_eq!(t.accrued(1000 + 10 * MONTH_SECS), 2 * MILLI);
        assert_eq!(storage_cost(1, 1, 1), 1, "a non-zero cost never rounds to nothing");
        assert_eq!(storage_cost(0, 5, 100), 0);
        assert_eq!(to_milli(0.5), 500);
        assert_eq!(to_milli(-1.0), 0);
        assert_eq!(credits(1500), "1.500");
    }

    #[test]
    fn a_tampered_ask_does_not_verify() {
        let provider = Signer::from_seed(&[2; 32]);
        let ask = Ask {
            provider: provider.node_key(),
            price_per_gib_month: 1000,
            price_per_gib_retrieval: 500,
            free_bytes: 1 << 40,
            min_duration: 3600,
            max_duration: 365 * 86400,
            addrs: vec![],
            issued: 100,
            expires: 200,
        };
        let signed = provider.sign(ask);
        assert_eq!(signed.check(150), Ok(()));
        assert!(matches!(signed.check(300), Err(PromiseError::Expired(100))));
        let mut cheaper = signed.clone();
        cheaper.body.price_per_gib_month = 1;
        assert_eq!(cheaper.check(150), Err(PromiseError::BadSignature));
    }
}
