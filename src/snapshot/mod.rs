//! Metadata snapshots, and the sealed part list of the root
//! (`promise::Root`) that finds them: what a new machine needs, with only
//! the exported keys, to rebuild the drive.
//!
//! ```text
//! part = codec::encode(PART_V1, Part { index, entries: [ { cf, key, value } .. ] })
//!        sealed as a chunk (convergent, user secret), kept as a blob, placed like data
//! root = Signed<Root { client, seq, at, salt, ids, parts: AES-GCM(K, [ {id, key, len, holders} .. ]), ledger }>
//!        K = keyed BLAKE3(user secret, "pactfs/root/1 parts" | salt), salt fresh per root
//! ```
//!
//! A part holds store entries in key order, cut at [`MAX_PART_BYTES`], so
//! a big tree is many chunk-sized blobs and the parts before the first
//! change are the same blobs as last time (the same bytes seal to the same
//! id: they are stored and placed once). The root is public (a DHT record,
//! or held by providers): it names the parts' ids in the clear (holders
//! need them) and their keys only sealed under the user secret.

use crate::chunk::{self, ChunkId, ChunkKey, UserSecret};
use crate::codec::{self, Bytes, CodecError};
use crate::promise::{self, MAX_ROOT_BYTES, MAX_ROOT_LEDGER, NodeKey, Root, RootError, Signed, Signer, unix_now};
use crate::store::{SNAPSHOT_CFS, Store, StoreError};
use serde::{Deserialize, Serialize};

/// Version byte of a snapshot part.
const PART_V1: u8 = 1;
/// Version byte of the sealed part list inside a root.
const PARTS_V1: u8 = 1;
/// The largest part (plaintext): one default-sized chunk, like a ledger blob.
pub const MAX_PART_BYTES: usize = 4 * 1024 * 1024;
/// The largest entry a part carries (an xattr value is at most 64 KiB).
const MAX_ENTRY_BYTES: usize = 1024 * 1024;
/// Encoding overhead of one entry: cf byte and two length prefixes.
const PER_ENTRY: usize = 12;
const MAX_PART_ENTRIES: usize = MAX_PART_BYTES / PER_ENTRY;
/// Most parts a root names.
pub const MAX_PARTS: usize = promise::MAX_ROOT_PARTS;
/// Most holders a part's entry in the root names.
pub const MAX_PART_HOLDERS: usize = 8;
/// The domain of the key that seals a root's part list.
const PARTS_KEY_DOMAIN: &[u8] = b"pactfs/root/1 parts";
/// The label of a part's blob record (`BlobRecord::what`).
pub const PART_LABEL: &str = "snapshot";

/// Why a snapshot or a root could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("snapshot {what}: {source}")]
    Codec { what: &'static str, source: CodecError },
    #[error("snapshot entry of {0} bytes is larger than a part may carry")]
    EntryTooLarge(usize),
    #[error("the metadata needs more than {MAX_PARTS} snapshot parts")]
    TooManyParts,
    #[error(transparent)]
    Root(#[from] RootError),
    #[error("the root's part list does not open with this user secret")]
    WrongSecret,
    #[error("snapshot part {index}: {why}")]
    BadPart { index: usize, why: String },
}

#[derive(Serialize, Deserialize)]
struct Part {
    index: u32,
    #[serde(deserialize_with = "codec::bounded_seq::<_, _, MAX_PART_ENTRIES>")]
    entries: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    cf: u8,
    key: Bytes,
    value: Bytes,
}

/// One part as stored: what a root names and what is needed to open it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRef {
    pub id: [u8; 32],
    pub key: [u8; 32],
    pub len: u32,
    /// Providers holding the part (a restore has no receipts yet to find them).
    #[serde(deserialize_with = "codec::bounded_seq::<_, _, MAX_PART_HOLDERS>")]
    pub holders: Vec<NodeKey>,
}

/// A sealed part, ready for [`Store::keep_blob`].
pub struct SealedPart {
    pub part: PartRef,
    pub sealed: Vec<u8>,
}

/// Reads the store's snapshot entries and seals them into parts.
pub fn take(store: &Store, secret: &UserSecret) -> Result<Vec<SealedPart>, SnapshotError> {
    let mut parts = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut bytes = 0usize;
    let mut too_large = None;
    let seal_part = |entries: Vec<Entry>, parts: &mut Vec<SealedPart>| {
        let plain = codec::encode(PART_V1, &Part { index: parts.len() as u32, entries });
        let (key, id, sealed) = chunk::seal(secret, &plain);
        parts.push(SealedPart {
            part: PartRef { id: id.0, key: key.0, len: plain.len() as u32, holders: Vec::new() },
            sealed,
        });
    };
    store.snapshot_scan(|cf, k, v| {
        let size = k.len() + v.len() + PER_ENTRY;
        if size > MAX_ENTRY_BYTES {
            too_large = Some(size);
            return Ok(());
        }
        if !entries.is_empty() && bytes + size > MAX_PART_BYTES - 64 {
            seal_part(std::mem::take(&mut entries), &mut parts);
            bytes = 0;
        }
        bytes += size;
        entries.push(Entry { cf, key: Bytes(k.to_vec()), value: Bytes(v.to_vec()) });
        Ok(())
    })?;
    if let Some(size) = too_large {
        return Err(SnapshotError::EntryTooLarge(size));
    }
    seal_part(entries, &mut parts);
    if parts.len() > MAX_PARTS {
        return Err(SnapshotError::TooManyParts);
    }
    Ok(parts)
}

/// Opens and checks the parts a root names (`sealed[i]` is part `i`'s
/// body as fetched) and loads them into a fresh store.
pub fn load(store: &Store, parts: &[PartRef], sealed: Vec<Vec<u8>>) -> Result<u64, SnapshotError> {
    let mut all = Vec::new();
    for (index, (part, body)) in parts.iter().zip(sealed).enumerate() {
        let bad = |why: String| SnapshotError::BadPart { index, why };
        let plain = chunk::open(&ChunkId(part.id), &ChunkKey(part.key), body).map_err(|e| bad(e.to_string()))?;
        let decoded: Part =
            codec::decode(PART_V1, &plain, MAX_PART_BYTES + MAX_ENTRY_BYTES).map_err(|e| bad(e.to_string()))?;
        if decoded.index as usize != index {
            return Err(bad(format!("says it is part {}", decoded.index)));
        }
        for e in decoded.entries {
            if usize::from(e.cf) >= SNAPSHOT_CFS.len() {
                return Err(bad(format!("unknown column family {}", e.cf)));
            }
            all.push((e.cf, e.key.0, e.value.0));
        }
    }
    Ok(store.load_snapshot(all)?)
}

#[derive(Serialize, Deserialize)]
struct PartList {
    #[serde(deserialize_with = "codec::bounded_seq::<_, _, MAX_PARTS>")]
    parts: Vec<PartRef>,
}

fn parts_key(secret: &UserSecret, salt: &[u8; 16]) -> ChunkKey {
    ChunkKey(*blake3::keyed_hash(secret.as_bytes(), &[PARTS_KEY_DOMAIN, salt].concat()).as_bytes())
}

/// Signs a root naming `parts` (at most [`MAX_PARTS`]) and the newest of
/// `ledger`; `salt` must be fresh (random) for every root.
pub fn make_root(
    signer: &Signer,
    secret: &UserSecret,
    seq: u64,
    salt: [u8; 16],
    parts: &[PartRef],
    ledger: &[[u8; 32]],
) -> Result<Signed<Root>, SnapshotError> {
    if parts.len() > MAX_PARTS {
        return Err(SnapshotError::TooManyParts);
    }
    let mut parts = parts.to_vec();
    for p in &mut parts {
        p.holders.truncate(MAX_PART_HOLDERS);
    }
    let ids = parts.iter().map(|p| p.id).collect();
    let list = codec::encode(PARTS_V1, &PartList { parts });
    let sealed = chunk::seal_with(&parts_key(secret, &salt), &list);
    let ledger = ledger[ledger.len().saturating_sub(MAX_ROOT_LEDGER)..].to_vec();
    Ok(signer.sign(Root { client: signer.node_key(), seq, at: unix_now(), salt, ids, parts: Bytes(sealed), ledger }))
}

/// Decodes a root and checks that `client` signed it for itself.
pub fn decode_root(bytes: &[u8], client: &NodeKey) -> Result<Signed<Root>, SnapshotError> {
    Ok(promise::decode_root(bytes, Some(client))?)
}

/// The parts a verified root names, opened with the user secret.
pub fn root_parts(root: &Root, secret: &UserSecret) -> Result<Vec<PartRef>, SnapshotError> {
    let list =
        chunk::open_with(&parts_key(secret, &root.salt), root.parts.0.clone()).ok_or(SnapshotError::WrongSecret)?;
    let list: PartList = codec::decode(PARTS_V1, &list, MAX_ROOT_BYTES)
        .map_err(|source| SnapshotError::Codec { what: "part list", source })?;
    let ids: Vec<[u8; 32]> = list.parts.iter().map(|p| p.id).collect();
    if ids != root.ids {
        return Err(SnapshotError::BadPart { index: 0, why: "the sealed list names other parts than the root".into() });
    }
    Ok(list.parts)
}

/// Of several candidate records, the verified root with the highest seq.
pub fn newest<'a>(candidates: impl IntoIterator<Item = &'a [u8]>, client: &NodeKey) -> Option<Signed<Root>> {
    candidates
        .into_iter()
        .filter_map(|b| match decode_root(b, client) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::debug!(error = %e, "root candidate refused");
                None
            }
        })
        .max_by_key(|r| r.body.seq)
}

#[cfg(test)]
mod tests;
