//! Chunk-sized byte buffers, recycled.
//!
//! A cold read moves every chunk through a fresh buffer of about a MiB:
//! read off the network into it, checked, decrypted in place, cached, then
//! dropped when the cache evicts it. Allocating each one zeroed (the
//! reader's API needs initialised bytes) and faulting its pages in again
//! showed in a cold read's profile as about 1.5 % of all CPU (the
//! docs/architecture.md row has the figures). Buffers that are done go
//! back here ([`give`]) and the next body is read into one ([`take`]).
//!
//! Only initialised bytes are ever exposed: a recycled buffer keeps its
//! length, so [`take`] shortens it or zero-extends the gap past its old
//! length, never `set_len`. A taken buffer holds stale bytes of an earlier
//! chunk of this process until the caller overwrites them, which every
//! caller does in full before reading it.

use std::sync::Mutex;

/// Bytes kept at most (capacity): about a read-ahead window of average
/// chunks, small next to the plaintext cache.
const KEEP_BYTES: usize = 48 * 1024 * 1024;
/// Smaller buffers are cheap to allocate and not kept.
const MIN_KEPT: usize = 64 * 1024;
/// Larger buffers are not kept (a chunk of the largest size fits).
const MAX_KEPT: usize = 16 * 1024 * 1024 + 64 * 1024;

/// The process's pool.
static POOL: Pool = Pool::new();

/// A buffer of exactly `len` bytes whose contents are unspecified (zeros or
/// an earlier body's bytes): for a caller that overwrites all of it.
pub fn take(len: usize) -> Vec<u8> {
    POOL.take(len)
}

/// Gives back a buffer nobody uses any more; kept if chunk-sized and the
/// pool has room, freed otherwise.
pub fn give(buf: Vec<u8>) {
    POOL.give(buf);
}

/// Kept buffers, each with its initialised length.
pub struct Pool {
    bufs: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    pub const fn new() -> Pool {
        Pool { bufs: Mutex::new(Vec::new()) }
    }

    pub fn take(&self, len: usize) -> Vec<u8> {
        let found = if (MIN_KEPT..=MAX_KEPT).contains(&len) {
            let mut bufs = crate::lock(&self.bufs);
            // The smallest that fits, so a large buffer stays for a large body.
            let best = bufs.iter().enumerate().filter(|(_, b)| b.capacity() >= len).min_by_key(|(_, b)| b.capacity());
            best.map(|(i, _)| i).map(|i| bufs.swap_remove(i))
        } else {
            None
        };
        match found {
            Some(mut buf) => {
                if buf.len() >= len {
                    buf.truncate(len);
                } else {
                    buf.resize(len, 0);
                }
                buf
            }
            None => vec![0u8; len],
        }
    }

    pub fn give(&self, buf: Vec<u8>) {
        if !(MIN_KEPT..=MAX_KEPT).contains(&buf.capacity()) {
            return;
        }
        let mut bufs = crate::lock(&self.bufs);
        let kept: usize = bufs.iter().map(Vec::capacity).sum();
        if kept + buf.capacity() <= KEEP_BYTES {
            bufs.push(buf);
        }
    }
}

impl Default for Pool {
    fn default() -> Pool {
        Pool::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_buffer_has_the_asked_length_and_zeroes_what_it_never_held() {
        let pool = Pool::new();
        let mut a = pool.take(300_000);
        assert_eq!(a.len(), 300_000);
        assert!(a.iter().all(|&x| x == 0), "a fresh buffer is zeroed");
        a.fill(0xaa);
        let (ptr, cap) = (a.as_ptr(), a.capacity());
        pool.give(a);
        // A smaller body reuses it: shortened, not reallocated.
        let mut b = pool.take(200_000);
        assert_eq!((b.len(), b.as_ptr(), b.capacity()), (200_000, ptr, cap));
        b.truncate(100_000);
        pool.give(b);
        // Grown again within its capacity: bytes past the length it came
        // back with are zeros, never memory it did not initialise.
        let c = pool.take(250_000);
        assert_eq!((c.len(), c.as_ptr()), (250_000, ptr));
        assert!(c[..100_000].iter().all(|&x| x == 0xaa));
        assert!(c[100_000..].iter().all(|&x| x == 0));
        // Too large for every kept buffer: a new one.
        pool.give(c);
        let d = pool.take(400_000);
        assert_ne!(d.as_ptr(), ptr);
        assert_eq!(d.len(), 400_000);
        // The smallest that fits is chosen.
        pool.give(d);
        let e = pool.take(260_000);
        assert_eq!(e.as_ptr(), ptr);
    }

    #[test]
    fn only_chunk_sized_buffers_are_kept_and_at_most_keep_bytes_of_them() {
        let pool = Pool::new();
        pool.give(vec![7u8; 100]);
        assert!(pool.take(100).iter().all(|&x| x == 0), "small buffers are not kept");
        pool.give(vec![7u8; MAX_KEPT + 1]);
        assert!(crate::lock(&pool.bufs).is_empty(), "oversized buffers are not kept");
        let size = 4 * 1024 * 1024;
        for _ in 0..KEEP_BYTES / size + 5 {
            pool.give(vec![1u8; size]);
        }
        let kept: usize = crate::lock(&pool.bufs).iter().map(Vec::capacity).sum();
        assert_eq!(kept, KEEP_BYTES / size * size);
    }
}
