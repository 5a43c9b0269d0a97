//! Integration tests of the network layer: real provider processes (four,
//! or in the market's tests five with their own prices, capacities and
//! faults) and one real mounted client on 127.0.0.1, talking libp2p over
//! TCP and QUIC, each scenario in both network modes (`hybrid`: DHT plus
//! market; `market`: no DHT). One binary made of modules, to cut link time.
//!
//! As in the drive tests, every process and mount belongs to a guard that
//! cleans up on success and panic alike, waits poll a condition with a
//! generous bound and say what never happened, and nothing sleeps as a means
//! of synchronisation.

// The drive tests' harness (the `Drive` guard for the client, command
// runners, waits, test data); this binary uses only part of it.
#[allow(dead_code)]
#[path = "../drive/common.rs"]
mod common;

mod audits;
mod budget;
mod cluster;
mod collect;
mod discovery;
mod garbage;
mod ledger;
mod market;
mod market_ledger;
mod node;
mod partition;
mod payments;
mod placement;
mod repair;
mod restart;
mod restore;
mod retrieval;
mod signatures;
mod status;
mod volunteer;
