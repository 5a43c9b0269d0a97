//! pactfs: a network drive over encrypted, content-defined chunks.
//!
//! The crate is one module per layer of the design (`docs/architecture.md`
//! is the code map). Arrows point down only:
//!
//! ```text
//! cli   -> node, config
//! node  -> every layer (the wiring)
//! fs    -> store, chunk
//! store -> chunk, codec
//! chunk, codec, config -> nothing of ours
//! ```
//!
//! Start reading at [`node::Node`] (how a mounted drive is assembled), then
//! [`fs::Drive`] (the file system logic FUSE calls into).

pub mod chunk;
pub mod cli;
pub mod codec;
pub mod config;
pub mod fs;
pub mod node;
pub mod store;
