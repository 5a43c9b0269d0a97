//! BLAKE3 verified slices: a provider proves it holds a byte range of a
//! chunk by sending those bytes and the chaining values of the sibling
//! subtrees on the path from the range up to the root. Anyone with the
//! chunk id (the BLAKE3 hash of the sealed body) and its length checks
//! the proof; no key is needed and no other byte of the chunk.
//!
//! A provable range is one node of the chunk's BLAKE3 tree: descend from
//! the root, left (a power of two of 1 KiB chunks) or right (the rest),
//! down to a node no larger than the range wanted ([`pick`]). Both sides
//! walk the same tree shape from the chunk's length ([`path`]).

use super::ChunkId;
use blake3::hazmat::{ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};

/// BLAKE3's leaf size.
const LEAF: u64 = blake3::CHUNK_LEN as u64;
/// Deepest tree a chunk of at most 16 MiB can have, with slack.
pub const MAX_SIBLINGS: usize = 64;

/// One step down the tree: the sibling's range and whether it is on the left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Step {
    start: u64,
    len: u64,
    left: bool,
}

/// The siblings from the root down to the node `[offset, offset + len)` of
/// the tree over `total` bytes; `None` if that range is not a node.
fn path(total: u64, offset: u64, len: u64) -> Option<Vec<Step>> {
    let (mut start, mut size) = (0, total);
    let mut steps = Vec::new();
    while (start, size) != (offset, len) {
        if size <= LEAF || steps.len() >= MAX_SIBLINGS {
            return None;
        }
        let left = blake3::hazmat::left_subtree_len(size);
        if offset < start + left {
            steps.push(Step { start: start + left, len: size - left, left: false });
            size = left;
        } else {
            steps.push(Step { start, len: left, left: true });
            start += left;
            size -= left;
        }
    }
    Some(steps)
}

/// A random node of the tree over `total` bytes no larger than `max`
/// bytes (a leaf if `max` is smaller), as `(offset, len)`; `coin` supplies
/// the left/right choices.
pub fn pick(total: u64, max: u64, mut coin: impl FnMut() -> bool) -> (u64, u64) {
    let (mut start, mut size) = (0, total);
    while size > max.max(1) && size > LEAF {
        let left = blake3::hazmat::left_subtree_len(size);
        if coin() {
            size = left;
        } else {
            start += left;
            size -= left;
        }
    }
    (start, size)
}

fn chaining_value(offset: u64, bytes: &[u8]) -> ChainingValue {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(bytes);
    h.finalize_non_root()
}

/// The proof for `body[offset..offset + len]`: sibling chaining values,
/// root first. `None` if the range is not a node of the tree.
pub fn prove(body: &[u8], offset: u64, len: u64) -> Option<Vec<[u8; 32]>> {
    let steps = path(body.len() as u64, offset, len)?;
    Some(steps.iter().map(|s| chaining_value(s.start, &body[s.start as usize..(s.start + s.len) as usize])).collect())
}

/// Whether `slice` is the range `[offset, offset + slice.len())` of the
/// chunk `id` of `total` bytes, by the proof `siblings` (root first).
pub fn verify(id: &ChunkId, total: u64, offset: u64, slice: &[u8], siblings: &[[u8; 32]]) -> bool {
    let Some(steps) = path(total, offset, slice.len() as u64) else { return false };
    if steps.len() != siblings.len() {
        return false;
    }
    if steps.is_empty() {
        // The range is the whole chunk.
        return id.verifies(slice);
    }
    let mut cv = chaining_value(offset, slice);
    for (i, (step, sib)) in steps.iter().zip(siblings).enumerate().rev() {
        let (l, r) = if step.left { (sib, &cv) } else { (&cv, sib) };
        if i == 0 {
            return merge_subtrees_root(l, r, Mode::Hash).as_bytes() == &id.0;
        }
        cv = merge_subtrees_non_root(l, r, Mode::Hash);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn honest_proofs_verify_for_every_node_size() {
        for n in [1, 1024, 1025, 3000, 4096, 65536, 100_000, 1 << 20, (1 << 20) + 7] {
            let b = body(n);
            let id = ChunkId::of(&b);
            let mut seed = n as u64;
            for max in [1, 1024, 4096, 65536, 1 << 21] {
                for _ in 0..8 {
                    let (off, len) = pick(n as u64, max, || {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        seed >> 63 == 1
                    });
                    let proof = prove(&b, off, len).expect("a picked node is provable");
                    let slice = &b[off as usize..(off + len) as usize];
                    assert!(verify(&id, n as u64, off, slice, &proof), "n {n} off {off} len {len}");
                }
            }
        }
    }

    #[test]
    fn wrong_bytes_proofs_ranges_and_chunks_fail() {
        let b = body(300_000);
        let id = ChunkId::of(&b);
        let (off, len) = pick(b.len() as u64, 4096, || true);
        let proof = prove(&b, off, len).expect("provable");
        let slice = b[off as usize..(off + len) as usize].to_vec();
        assert!(verify(&id, b.len() as u64, off, &slice, &proof));
        let mut flipped = slice.clone();
        flipped[7] ^= 1;
        assert!(!verify(&id, b.len() as u64, off, &flipped, &proof), "a flipped byte");
        assert!(!verify(&id, b.len() as u64, off, &slice, &proof[1..]), "a truncated proof");
        let mut forged = proof.clone();
        forged[0][0] ^= 1;
        assert!(!verify(&id, b.len() as u64, off, &slice, &forged), "a forged sibling");
        let (off2, len2) = pick(b.len() as u64, 4096, || false);
        assert!(!verify(&id, b.len() as u64, off2, &slice, &proof), "another range");
        assert!(len2 <= 4096);
        let other = ChunkId::of(&body(300_001));
        assert!(!verify(&other, b.len() as u64, off, &slice, &proof), "another chunk");
        assert!(prove(&b, off + 1, len).is_none(), "a range that is not a node");
    }
}
