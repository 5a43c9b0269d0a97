//! pactfs: a network drive over encrypted, content-defined chunks.
//!
//! The crate is one module per layer of the design (`docs/architecture.md`
//! is the code map). Arrows point down only:
//!
//! ```text
//! cli      -> node, config
//! node     -> every layer (the wiring)
//! fs       -> store, chunk
//! market   -> net, store, chunk, promise, ledger
//! provider -> net, store, promise, ledger
//! net      -> promise, codec
//! snapshot -> store, chunk, promise, codec
//! ledger   -> promise, codec
//! store    -> chunk, codec
//! promise  -> codec
//! codec, net, store, provider, fs -> bufpool (recycled chunk-sized buffers)
//! bufpool, chunk, config -> nothing of ours
//! ```
//!
//! Start reading at [`node::Node`] (how a mounted drive is assembled), then
//! [`fs::Drive`] (the file system logic FUSE calls into).

pub mod bufpool;
pub mod chunk;
pub mod cli;
pub mod codec;
pub mod config;
pub mod fs;
pub mod ledger;
pub mod market;
pub mod net;
pub mod node;
pub mod promise;
pub mod provider;
pub mod reputation;
pub mod snapshot;
pub mod store;

/// Locks `m`, ignoring poison. The state behind pactfs's mutexes stays
/// consistent between statements, so one panicked holder must not stop
/// the drive, the agent or the network for everyone else.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Deterministic test bytes shared by the unit tests.
#[cfg(test)]
mod test_data {
    /// Bytes that differ per position and per seed (xorshift), so a
    /// misplaced chunk shows.
    /// A small deterministic generator for picking offsets and lengths.
    pub struct Rng(pub u64);

    impl Rng {
        /// The next value below `m`.
        pub fn below(&mut self, m: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % m
        }
    }

    pub fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }
}
