//! Convergent encryption: key = keyed BLAKE3 of the plaintext under the
//! user secret; sealed bytes = AES-256-GCM(key, fixed nonce, plaintext) || tag.
//!
//! One key per content makes a fixed nonce safe: a (key, nonce) pair only
//! ever encrypts the one plaintext the key was derived from. Same plaintext,
//! same user: same sealed bytes, same id (dedup). ring's AES-GCM runs about
//! six times faster here than the RustCrypto AEADs.

use super::{ChunkId, ChunkKey};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use std::fmt;

/// Bytes the AEAD adds to every chunk.
pub const TAG_LEN: usize = 16;

/// The user's 32-byte secret; chunk keys derive from it. Never logged.
#[derive(Clone)]
pub struct UserSecret([u8; 32]);

impl fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserSecret(..)")
    }
}

/// Why a chunk could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The sealed bytes do not hash to the id they were asked for under.
    #[error("chunk {id}: stored bytes do not match the chunk id")]
    IdMismatch { id: ChunkId },
    /// The bytes match the id but do not decrypt under the key: the manifest
    /// holds a wrong key.
    #[error("chunk {id}: authentication failed (wrong key)")]
    Decrypt { id: ChunkId },
}

impl UserSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> UserSecret {
        UserSecret(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The convergent key of `plaintext` for this user.
    pub fn chunk_key(&self, plaintext: &[u8]) -> ChunkKey {
        ChunkKey(*blake3::keyed_hash(&self.0, plaintext).as_bytes())
    }
}

fn aead_key(key: &ChunkKey) -> LessSafeKey {
    // A 32-byte key is always the right length for AES-256.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key.0).expect("32-byte AES-256 key"))
}

/// Seals `plaintext` into its stored form, returning the key, the id and
/// the sealed bytes.
pub fn seal(secret: &UserSecret, plaintext: &[u8]) -> (ChunkKey, ChunkId, Vec<u8>) {
    let key = secret.chunk_key(plaintext);
    let mut sealed = Vec::with_capacity(plaintext.len() + TAG_LEN);
    sealed.extend_from_slice(plaintext);
    let nonce = Nonce::assume_unique_for_key([0u8; NONCE_LEN]);
    let tag = aead_key(&key)
        .seal_in_place_separate_tag(nonce, Aad::empty(), &mut sealed)
        .expect("AES-GCM seals any chunk below 64 GiB");
    sealed.extend_from_slice(tag.as_ref());
    let id = ChunkId::of(&sealed);
    (key, id, sealed)
}

/// Verifies `sealed` against `id`, then decrypts it with `key`.
pub fn open(id: &ChunkId, key: &ChunkKey, sealed: Vec<u8>) -> Result<Vec<u8>, ChunkError> {
    match super::Verified::check(*id, sealed) {
        Ok(v) => open_verified(key, v),
        Err(_) => Err(ChunkError::IdMismatch { id: *id }),
    }
}

/// Decrypts a body from this machine's own store. Its AES-GCM tag
/// authenticates every byte under a key only this user can derive, so the
/// id check of [`open`] (which is what proves bytes that came from
/// someone else) is skipped: it was a quarter of the CPU of a local cold
/// read. A failure is `Decrypt`, rot or a wrong key alike (the buffer is
/// scrambled by then): a caller that needs to know checks the stored
/// bytes against the id again.
pub fn open_local(id: &ChunkId, key: &ChunkKey, mut sealed: Vec<u8>) -> Result<Vec<u8>, ChunkError> {
    let nonce = Nonce::assume_unique_for_key([0u8; NONCE_LEN]);
    let plain_len = aead_key(key)
        .open_in_place(nonce, Aad::empty(), &mut sealed)
        .map_err(|_| ChunkError::Decrypt { id: *id })?
        .len();
    sealed.truncate(plain_len);
    Ok(sealed)
}

/// Decrypts bytes already checked against their id (see [`open`]).
pub fn open_verified(key: &ChunkKey, v: super::Verified) -> Result<Vec<u8>, ChunkError> {
    let id = v.id();
    let mut sealed = v.into_bytes();
    let nonce = Nonce::assume_unique_for_key([0u8; NONCE_LEN]);
    let plain_len =
        aead_key(key).open_in_place(nonce, Aad::empty(), &mut sealed).map_err(|_| ChunkError::Decrypt { id })?.len();
    sealed.truncate(plain_len);
    Ok(sealed)
}

/// Seals `plaintext` under a key the caller derived for this one
/// plaintext (never reused for another: the nonce is fixed). For small
/// records that are not chunks, such as a snapshot root's part list.
pub fn seal_with(key: &ChunkKey, plaintext: &[u8]) -> Vec<u8> {
    let mut sealed = plaintext.to_vec();
    let nonce = Nonce::assume_unique_for_key([0u8; NONCE_LEN]);
    let tag = aead_key(key)
        .seal_in_place_separate_tag(nonce, Aad::empty(), &mut sealed)
        .expect("AES-GCM seals any record below 64 GiB");
    sealed.extend_from_slice(tag.as_ref());
    sealed
}

/// Opens bytes from [`seal_with`]; `None` if they do not authenticate.
pub fn open_with(key: &ChunkKey, mut sealed: Vec<u8>) -> Option<Vec<u8>> {
    let nonce = Nonce::assume_unique_for_key([0u8; NONCE_LEN]);
    let len = aead_key(key).open_in_place(nonce, Aad::empty(), &mut sealed).ok()?.len();
    sealed.truncate(len);
    Some(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convergent_and_verified() {
        let s = UserSecret::from_bytes([7; 32]);
        let (k1, id1, b1) = seal(&s, b"hello world");
        let (k2, id2, b2) = seal(&s, b"hello world");
        assert_eq!((k1, id1, &b1), (k2, id2, &b2));
        assert_eq!(b1.len(), 11 + TAG_LEN);
        assert_ne!(&b1[..11], b"hello world");
        assert_eq!(open(&id1, &k1, b1.clone()).unwrap(), b"hello world");

        let other = UserSecret::from_bytes([8; 32]);
        let (_, id3, _) = seal(&other, b"hello world");
        assert_ne!(id1, id3, "another user's chunks differ");

        let mut flipped = b1.clone();
        flipped[0] ^= 1;
        assert!(matches!(open(&id1, &k1, flipped), Err(ChunkError::IdMismatch { .. })));
        assert!(matches!(open(&id1, &ChunkKey([0; 32]), b1), Err(ChunkError::Decrypt { .. })));
        let (ke, ide, be) = seal(&s, b"");
        assert_eq!(open(&ide, &ke, be).unwrap(), b"");
    }

    #[test]
    fn local_bodies_open_by_their_tag_alone() {
        let s = UserSecret::from_bytes([7; 32]);
        let (k, id, b) = seal(&s, b"kept on this machine");
        assert_eq!(open_local(&id, &k, b.clone()).unwrap(), b"kept on this machine");
        // Any flipped bit, in the body or the tag, fails authentication.
        for at in [0, b.len() / 2, b.len() - 1] {
            let mut flipped = b.clone();
            flipped[at] ^= 0x10;
            assert!(matches!(open_local(&id, &k, flipped), Err(ChunkError::Decrypt { .. })), "flip at {at}");
        }
        assert!(matches!(open_local(&id, &ChunkKey([0; 32]), b.clone()), Err(ChunkError::Decrypt { .. })));
        assert!(matches!(open_local(&id, &k, b[..b.len() - 1].to_vec()), Err(ChunkError::Decrypt { .. })));
    }

    #[test]
    fn verified_only_from_bytes_that_hash_to_the_id() {
        let s = UserSecret::from_bytes([7; 32]);
        let (k, id, b) = seal(&s, b"fetched from a holder");
        let mut flipped = b.clone();
        flipped[3] ^= 1;
        assert_eq!(super::super::Verified::check(id, flipped.clone()).unwrap_err(), flipped, "the bytes come back");
        let v = super::super::Verified::check(id, b.clone()).unwrap();
        assert_eq!((v.id(), v.bytes()), (id, &b[..]));
        assert_eq!(open_verified(&k, v).unwrap(), b"fetched from a holder");
        let v = super::super::Verified::check(id, b).unwrap();
        assert!(matches!(open_verified(&ChunkKey([0; 32]), v), Err(ChunkError::Decrypt { .. })));
    }
}
