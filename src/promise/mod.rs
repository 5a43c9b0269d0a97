//! Signed statements between nodes: who may store what, and who stored it.
//!
//! Identities are raw ed25519 public keys ([`NodeKey`]); the same key is the
//! node's libp2p identity, so a peer id and a `NodeKey` name the same node.
//! Signed bytes are the canonical encoding of the statement (through
//! `codec`), so the signature covers exactly what the wire carries.
//!
//! The market's statements ([`Ask`], the bid and the [`Promise`] over
//! [`Terms`], the [`Cheque`]) live in `market`; a provider answers each
//! chunk stored under a promise with a [`Receipt`] it signs.

mod market;
mod root;

pub use market::{
    Ask, AuditTerms, Bid, CLOCK_SKEW_SECS, Cheque, ChequeAck, MAX_ASK_ADDRS, MAX_PROMISE_BYTES, MAX_PROMISE_CHUNKS,
    MILLI, MONTH_SECS, Promise, PromiseKind, Terms, credits, retrieval_cost, storage_cost, to_milli,
};

pub use root::{
    MAX_ROOT_BYTES, MAX_ROOT_LEDGER, MAX_ROOT_PARTS, Root, RootError, decode_root, encode_root, root_dht_key,
};

use crate::codec;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Version byte of signed statements.
pub const STATEMENT_V1: u8 = 1;

/// A node's public identity: its ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeKey(pub [u8; 32]);

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", short_hex(&self.0))
    }
}

/// An ed25519 signature, carried as bytes (serde has no `[u8; 64]`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sig(#[serde(with = "sig_bytes")] pub [u8; 64]);

impl std::fmt::Debug for Sig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sig({}..)", short_hex(&self.0))
    }
}

fn short_hex(bytes: &[u8]) -> String {
    bytes.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

mod sig_bytes {
    use serde::{Deserializer, Serializer, de::Error};
    pub fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(sig)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: Vec<u8> = serde_bytes_vec(d)?;
        v.try_into().map_err(|v: Vec<u8>| D::Error::invalid_length(v.len(), &"64 bytes"))
    }
    fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(64);
                while let Some(b) = seq.next_element::<u8>()? {
                    if out.len() == 64 {
                        return Err(A::Error::invalid_length(65, &"64 bytes"));
                    }
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Why a signed statement is not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PromiseError {
    #[error("signature does not verify")]
    BadSignature,
    #[error("the signer's key is not a valid ed25519 key")]
    BadKey,
    #[error("signed by a different node than the one it names")]
    WrongSigner,
    #[error("issued for a different node")]
    WrongAudience,
    #[error("expired {0} s ago")]
    Expired(u64),
}

/// A node's signing key (the 32-byte seed from `identity.key`).
pub struct Signer {
    key: SigningKey,
}

impl Signer {
    pub fn from_seed(seed: &[u8; 32]) -> Signer {
        Signer { key: SigningKey::from_bytes(seed) }
    }
    pub fn node_key(&self) -> NodeKey {
        NodeKey(self.key.verifying_key().to_bytes())
    }
    /// Signs `body`'s canonical encoding under its type's domain.
    pub fn sign<T: Statement>(&self, body: T) -> Signed<T> {
        Signed { sig: self.sign_bytes(&signing_bytes(&body)), body }
    }
    /// Signs bytes that already are a statement's [`signing_bytes`].
    pub fn sign_bytes(&self, bytes: &[u8]) -> Sig {
        Sig(self.key.sign(bytes).to_bytes())
    }
}

impl NodeKey {
    /// Checks `sig` over `msg` by this key.
    pub fn verify(&self, msg: &[u8], sig: &Sig) -> Result<(), PromiseError> {
        let vk = VerifyingKey::from_bytes(&self.0).map_err(|_| PromiseError::BadKey)?;
        vk.verify(msg, &Signature::from_bytes(&sig.0)).map_err(|_| PromiseError::BadSignature)
    }
}

/// A kind of signed statement. Its domain is signed with it, so that a
/// signature over one kind of statement can never pass for another whose
/// encoding happens to match.
pub trait Statement: Serialize {
    /// Unique among statements; versioned with the statement.
    const DOMAIN: &'static str;
}

/// What is signed: the domain, a zero byte, the canonical encoding.
pub fn signing_bytes<T: Statement>(body: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(T::DOMAIN.len() + 1 + 64);
    out.extend_from_slice(T::DOMAIN.as_bytes());
    out.push(0);
    out.extend_from_slice(&codec::encode(STATEMENT_V1, body));
    out
}

/// A statement and its signer's signature over its canonical bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T> {
    pub body: T,
    pub sig: Sig,
}

impl<T: Statement> Signed<T> {
    /// Verifies the signature against `signer`.
    pub fn verify_by(&self, signer: &NodeKey) -> Result<(), PromiseError> {
        signer.verify(&signing_bytes(&self.body), &self.sig)
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A provider's signed statement that it stored a chunk for a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The promise the chunk was stored under.
    pub promise: [u8; 32],
    pub chunk: [u8; 32],
    pub len: u32,
    pub client: NodeKey,
    pub provider: NodeKey,
    pub at: u64,
}

impl Statement for Receipt {
    const DOMAIN: &'static str = "pactfs/receipt/1";
}

/// Largest encoded receipt accepted back (from disk or a peer).
pub const MAX_RECEIPT: usize = 4096;

impl Signed<Receipt> {
    /// A receipt as the client stored it (`codec`, [`STATEMENT_V1`]).
    pub fn decode_stored(bytes: &[u8]) -> Result<Signed<Receipt>, codec::CodecError> {
        codec::decode(STATEMENT_V1, bytes, MAX_RECEIPT)
    }

    /// What a client checks of a receipt for `chunk` of `len` bytes it sent
    /// to `provider`.
    pub fn check(
        &self,
        provider: &NodeKey,
        client: &NodeKey,
        promise: &[u8; 32],
        chunk: &[u8; 32],
        len: u32,
    ) -> Result<(), PromiseError> {
        let b = &self.body;
        if b.provider != *provider {
            return Err(PromiseError::WrongSigner);
        }
        if b.client != *client || b.chunk != *chunk || b.len != len || b.promise != *promise {
            return Err(PromiseError::WrongAudience);
        }
        self.verify_by(provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_does_not_cross_statement_kinds() {
        #[derive(Serialize)]
        struct A(u64);
        #[derive(Serialize)]
        struct B(u64);
        impl Statement for A {
            const DOMAIN: &'static str = "test/a";
        }
        impl Statement for B {
            const DOMAIN: &'static str = "test/b";
        }
        let s = Signer::from_seed(&[1; 32]);
        let a = s.sign(A(7));
        // Same encoding, another kind: the signature does not carry over.
        let b = Signed { body: B(7), sig: a.sig.clone() };
        assert_eq!(a.verify_by(&s.node_key()), Ok(()));
        assert_eq!(b.verify_by(&s.node_key()), Err(PromiseError::BadSignature));
    }

    #[test]
    fn receipt_checks_and_round_trips() {
        let client = Signer::from_seed(&[1; 32]);
        let provider = Signer::from_seed(&[2; 32]);
        let (c, p) = (client.node_key(), provider.node_key());
        let r = provider.sign(Receipt { promise: [7; 32], chunk: [9; 32], len: 10, client: c, provider: p, at: 1 });
        assert_eq!(r.check(&p, &c, &[7; 32], &[9; 32], 10), Ok(()));
        assert_eq!(r.check(&p, &c, &[7; 32], &[8; 32], 10), Err(PromiseError::WrongAudience));
        assert_eq!(r.check(&p, &c, &[6; 32], &[9; 32], 10), Err(PromiseError::WrongAudience));
        assert_eq!(r.check(&c, &c, &[7; 32], &[9; 32], 10), Err(PromiseError::WrongSigner));
        let bytes = codec::encode(1, &r);
        let back: Signed<Receipt> = codec::decode(1, &bytes, 1024).unwrap();
        assert_eq!(back, r);
    }
}
