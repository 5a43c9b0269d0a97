//! A `Cluster`: providers (four by default) and one mounted client (the drive tests'
//! `Drive` guard) in one network mode, and what tests ask of it as a whole:
//! the client's `stats`, `peers` and `scrub`, placement, provider counts.
//!
//! Cleanup is the guards' own: each `Provider` is killed and reaped in its
//! `Drop`, then `Drive`'s `Drop` unmounts the client and kills its daemon (and
//! on a panic prints the client's commands and log), on success and panic
//! alike. `shutdown` is the clean path and asserts that it is clean.

use crate::common::*;
use crate::node::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// P1 (no bootstrap), P2..Pn (bootstrap from P1's TCP address) and a
/// mounted client (bootstrap from P1 only), all in one network mode.
pub struct Cluster {
    pub mode: Mode,
    /// Dropped (killed) before the client is unmounted (field order).
    pub providers: Vec<Provider>,
    pub client: Drive,
    pub client_peer_id: String,
}

impl Cluster {
    /// `PROVIDERS` providers as `ProviderSpec::default()` says, and a client
    /// with the default budget.
    pub fn start(mode: Mode) -> Cluster {
        Cluster::start_with(mode, &vec![ProviderSpec::default(); PROVIDERS], "")
    }

    /// One provider per spec (P1 first) and a client whose config.toml ends
    /// with `client_extra` (whole TOML sections, such as `[budget]`).
    pub fn start_with(mode: Mode, specs: &[ProviderSpec], client_extra: &str) -> Cluster {
        assert!(!specs.is_empty(), "a cluster needs a provider to bootstrap from");
        let mut providers = vec![Provider::start_with("P1", mode, &[], &specs[0])];
        let seed = vec![providers[0].tcp.clone()];
        for (n, spec) in specs.iter().enumerate().skip(1) {
            providers.push(Provider::start_with(&format!("P{}", n + 1), mode, &seed, spec));
        }
        let mut client = Drive::new();
        fs::write(&client.config, node_toml(mode, None, &seed, client_extra)).expect("write client config.toml");
        client.mount();
        let (home, pid) = (client.home.clone(), client.pid().expect("a mounted client has a daemon pid"));
        let info = wait_node_info("the client", &home, mode, || {
            assert!(!process_gone(pid), "the client's daemon (pid {pid}) exited while a test expected it to run");
            Ok(())
        });
        assert_eq!(text(&info, "role"), "client", "the mounted client: {info}");
        assert!(info["provider"].is_null(), "a client reports no provider section: {info}");
        let client_peer_id = text(&info, "peer_id").to_owned();
        let mut ids: Vec<&str> = providers.iter().map(|p| p.peer_id.as_str()).collect();
        ids.push(&client_peer_id);
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), specs.len() + 1, "every node has its own peer id: {ids:?}");
        Cluster { mode, providers, client, client_peer_id }
    }

    pub fn client_home(&self) -> &Path {
        &self.client.home
    }

    /// `stats --json` of the client.
    pub fn stats(&self) -> Value {
        ask_json(self.client_home(), &["stats", "--json"]).unwrap_or_else(|e| panic!("client stats:\n{e}"))
    }

    /// `node info --json` of the client.
    pub fn client_info(&self) -> Value {
        ask_json(self.client_home(), &["node", "info", "--json"]).unwrap_or_else(|e| panic!("client node info:\n{e}"))
    }

    /// The placement agent's status (`placement` of the client's `node info`).
    pub fn placement(&self) -> Value {
        let info = self.client_info();
        assert!(info["placement"].is_object(), "a mounted client reports its placement: {info}");
        info["placement"].clone()
    }

    /// Waits until the client's agent knows `n` providers. The agent fetches
    /// the ask of every provider it knows without a fresh one in the same
    /// pass that counts them, so a test that writes only after this wait
    /// lets the first placement pass choose among all of them.
    pub fn wait_providers_known(&self, n: usize) -> Value {
        poll(&format!("the client's agent to know all {n} providers (placement.providers_known)"), || {
            let placement = self.placement();
            if num(&placement, "providers_known") == n as u64 { Ok(placement) } else { Err(placement.to_string()) }
        })
    }

    /// Waits until `market --json` lists `n` providers with a usable ask,
    /// so that the next placement may choose among all of them.
    pub fn wait_usable_asks(&self, n: usize) -> Value {
        poll(&format!("market --json to list {n} providers with a usable ask"), || {
            let asks = ask_json(self.client_home(), &["market", "--json"])?;
            let usable = asks.as_array().map_or(0, |l| l.iter().filter(|a| a["excluded"].is_null()).count());
            if usable == n { Ok(asks) } else { Err(asks.to_string()) }
        })
    }

    /// The client daemon's log so far.
    pub fn client_log(&self) -> String {
        let log = self.client_home().join("pactfs.log");
        fs::read_to_string(&log).unwrap_or_else(|e| panic!("read the client's log {}: {e}", log.display()))
    }

    /// `peers --json` of the client.
    pub fn peers(&self) -> Result<Vec<Value>, String> {
        let json = ask_json(self.client_home(), &["peers", "--json"])?;
        json.as_array().cloned().ok_or_else(|| format!("peers --json is not an array: {json}"))
    }

    /// `scrub --json` of the client (exit code unchecked).
    pub fn scrub(&self) -> Answer {
        let answer = ask(self.client_home(), &["scrub", "--json"]);
        assert!(
            matches!(answer.code, Some(0 | 1)) && answer.json.is_some(),
            "scrub must answer JSON with exit 0 or 1:\n{}",
            answer.text
        );
        answer
    }

    /// Waits until every chunk of the client reached the replication target;
    /// returns the stats then (`replicas` checked against `chunks`).
    pub fn wait_placed(&self) -> Value {
        let stats = poll("the client to place every chunk (pending_chunks 0, placed_chunks == chunks)", || {
            let stats = self.stats();
            let done = num(&stats, "pending_chunks") == 0 && num(&stats, "placed_chunks") == num(&stats, "chunks");
            if done { Ok(stats) } else { Err(stats.to_string()) }
        });
        assert_eq!(num(&stats, "replicas"), REPLICATION * num(&stats, "chunks"), "one replica per provider: {stats}");
        stats
    }

    /// Waits until the providers' `provider.chunks` add up to `replicas`; returns them.
    pub fn provider_chunks(&mut self, replicas: u64) -> Vec<u64> {
        poll(&format!("the providers' chunk counts to add up to {replicas}"), || {
            let counts: Vec<u64> = self.providers.iter_mut().map(Provider::chunks).collect();
            if counts.iter().sum::<u64>() == replicas { Ok(counts) } else { Err(format!("{counts:?}")) }
        })
    }

    /// Asserts a scrub finds every replica of `chunks` chunks and every one good.
    pub fn assert_scrub_clean(&self, chunks: u64) -> Value {
        let answer = self.scrub();
        check_scrub_clean(&answer, chunks).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Polls scrub until it is clean (and, in hybrid mode, every replica's
    /// holder was also found through the DHT).
    pub fn wait_scrub_clean(&self, what: &str, chunks: u64) -> Value {
        poll(what, || {
            let scrub = check_scrub_clean(&self.scrub(), chunks)?;
            if self.mode == Mode::Hybrid && num(&scrub, "dht_found") != num(&scrub, "replicas") {
                return Err(format!("dht_found below replicas: {scrub}"));
            }
            Ok(scrub)
        })
    }

    /// Unmounts the client and stops every provider with SIGTERM, asserting
    /// each exits cleanly; `Drop` does the same by force after a failure.
    pub fn shutdown(mut self) {
        self.client.unmount();
        // A provider a test killed on purpose has nothing left to stop.
        for provider in self.providers.iter_mut().filter(|p| p.child_started()) {
            provider.stop();
        }
    }
}

/// `Ok(scrub json)` if the scrub exited 0 and found `chunks` chunks, all
/// `REPLICATION` replicas each, all verified; otherwise `Err` with the answer.
pub fn check_scrub_clean(answer: &Answer, chunks: u64) -> Result<Value, String> {
    let scrub = answer.json.clone().expect("scrub answered JSON");
    let want = (chunks, REPLICATION * chunks, REPLICATION * chunks, 0, 0);
    let got = (
        num(&scrub, "chunks"),
        num(&scrub, "replicas"),
        num(&scrub, "verified"),
        num(&scrub, "bad"),
        num(&scrub, "unreachable"),
    );
    if answer.code == Some(0) && got == want {
        Ok(scrub)
    } else {
        Err(format!(
            "scrub is not clean: (chunks, replicas, verified, bad, unreachable) = {got:?}, want {want:?}\n{}",
            answer.text
        ))
    }
}

/// Writes `files` (relative path, seed, size) under the mount, fsyncing each
/// file and its directory, then `sync`; returns what each should read back.
pub fn write_files(drive: &Drive, files: &[(&str, u64, usize)]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut written = Vec::new();
    for &(rel, seed, size) in files {
        let path = drive.path(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        let data = test_data(seed, size);
        write_synced(&path, &data);
        written.push((path, data));
    }
    run("sync", &[], None);
    written
}

/// Reads every file back through the mount and compares byte for byte.
pub fn assert_files(files: &[(PathBuf, Vec<u8>)]) {
    for (path, data) in files {
        assert_file(path, data);
    }
}
