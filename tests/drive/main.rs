//! Integration tests of the drive: real `pactfs` processes, real FUSE mounts,
//! real external tools. One binary made of modules, to cut link time.

mod cli;
mod common;
mod durability;
mod ledger;
mod posix;
mod privileges;
mod status;
mod tools;
mod vfs;
