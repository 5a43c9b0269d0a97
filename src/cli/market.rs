//! Market and durability commands: `promises`, `market`, `status` and
//! `sync --durable`. Each asks the running node over its control socket;
//! `--json` prints the node's answer as it is.

use super::output::{human_bytes, print_json, print_kv, print_table, span, utc};
use crate::node::{self, Home, control, credits};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Timeout of one question to the node.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);
/// A flush of the whole drive may commit many open files first.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(600);
/// How often `sync --durable` and `status --watch` ask again.
const POLL: Duration = Duration::from_millis(500);
/// Without a terminal, one progress line on stderr this often.
const LINE_EVERY: Duration = Duration::from_secs(5);
/// `sync --durable` gives up when placement says it is blocked and
/// nothing moved for this long: long enough for the agent's next pass
/// (half a second when idle, a bid round trip when not) to prove the
/// reason still holds, short enough for a shutdown script.
const STALL: Duration = Duration::from_secs(10);
/// How long a whole-drive `sync --durable` waits for its metadata root once
/// the data is placed.
const ROOT_WAIT: Duration = Duration::from_secs(120);

fn ask(home: &Home, req: control::Request, timeout: Duration) -> Result<Value> {
    control::call(&home.control_socket(), &req, Some(timeout)).context("asking the running node")
}

fn field<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.get(k).unwrap_or(&Value::Null)
}

fn n(v: &Value, k: &str) -> u64 {
    field(v, k).as_u64().unwrap_or(0)
}

fn s(v: &Value, k: &str) -> String {
    field(v, k).as_str().unwrap_or("").to_string()
}

/// `pactfs promises`: one row per promise held.
pub fn promises(home: &Home, json: bool) -> Result<i32> {
    let v = ask(home, control::Request::Promises, ASK_TIMEOUT)?;
    if json {
        print_json(&v)?;
        return Ok(0);
    }
    let list = v.as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            let mut state = s(p, "state");
            let reason = s(p, "reason");
            if !reason.is_empty() {
                state = format!("{state}: {reason}");
            }
            vec![
                s(p, "id").chars().take(16).collect(),
                s(p, "provider"),
                n(p, "chunks").to_string(),
                human_bytes(n(p, "bytes")),
                credits(n(p, "price_per_gib_month")),
                utc(n(p, "start")),
                utc(n(p, "expiry")),
                field(p, "last_audit").as_u64().map_or("-".into(), utc),
                state,
            ]
        })
        .collect();
    let header = ["ID", "PROVIDER", ">CHUNKS", ">BYTES", ">PRICE/GIB-MONTH", "START", "EXPIRY", "LAST AUDIT", "STATE"];
    print_table(&header, &rows)?;
    if list.is_empty() {
        eprintln!("pactfs: no promises yet");
    }
    Ok(0)
}

/// `pactfs market`: the asks this node sees, cheapest first.
pub fn market(home: &Home, json: bool) -> Result<i32> {
    let v = ask(home, control::Request::Market, ASK_TIMEOUT)?;
    if json {
        print_json(&v)?;
        return Ok(0);
    }
    let list = v.as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            let reputation = if field(a, "newcomer").as_bool().unwrap_or(false) {
                "new".to_string()
            } else {
                format!("{:.2}", field(a, "reputation").as_f64().unwrap_or(0.0))
            };
            let latency = field(a, "latency_ms").as_f64().map_or("-".into(), |ms| format!("{ms:.1} ms"));
            let note = field(a, "excluded").as_str().map_or("usable".to_string(), |why| format!("skipped: {why}"));
            vec![
                s(a, "provider"),
                credits(n(a, "price_per_gib_month")),
                credits(n(a, "price_per_gib_retrieval")),
                human_bytes(n(a, "free_bytes")),
                format!("{}-{}", span(n(a, "min_duration")), span(n(a, "max_duration"))),
                reputation,
                latency,
                utc(n(a, "expires")),
                note,
            ]
        })
        .collect();
    let header = [
        "PROVIDER",
        ">PRICE/GIB-MONTH",
        ">RETRIEVAL/GIB",
        ">FREE",
        "DURATION",
        ">REPUTATION",
        ">LATENCY",
        "ASK EXPIRES",
        "NOTE",
    ];
    print_table(&header, &rows)?;
    if list.is_empty() {
        eprintln!("pactfs: no asks heard yet");
    }
    Ok(0)
}

/// `pactfs status`, once or (`--watch`) until nothing is pending.
pub fn status(home: &Home, json: bool, watch: bool) -> Result<i32> {
    let mut v = ask(home, control::Request::Status, ASK_TIMEOUT)?;
    if watch {
        v = watch_placement(home, v)?;
    }
    if json {
        print_json(&v)?;
    } else {
        print_status(&v)?;
    }
    Ok(0)
}

fn print_status(v: &Value) -> std::io::Result<()> {
    let a = field(v, "agent");
    let blocked = field(a, "blocked").as_str().map_or("no".to_string(), str::to_string);
    print_kv(&[
        (
            "Pending",
            format!(
                "{} chunks ({}), {} replicas missing",
                n(v, "pending_chunks"),
                human_bytes(n(v, "pending_bytes")),
                n(v, "missing_replicas")
            ),
        ),
        ("Placed", format!("{} of {} chunks", n(v, "placed_chunks"), n(v, "chunks"))),
        ("Replicas", format!("{} (target {} per chunk)", n(v, "replicas"), n(v, "replication_target"))),
        ("Under target", format!("{} chunks", n(v, "under_replicated_chunks"))),
        ("Active promises", n(a, "promises_active").to_string()),
        ("Committed", format!("{} credits/month", credits(n(a, "committed_per_month")))),
        (
            "Spent this month",
            format!("{} of {} credits", credits(n(a, "spent_this_month")), credits(n(a, "budget_per_month"))),
        ),
        ("Providers known", format!("{} ({} with usable asks)", n(a, "providers_known"), n(a, "asks_usable"))),
        (
            "Uploads",
            format!("{} ({}), {} failed", n(a, "uploads"), human_bytes(n(a, "upload_bytes")), n(a, "failures")),
        ),
        ("Blocked", blocked),
        ("Repair", repair_line(field(a, "repair"))),
        ("Root", root_line(field(v, "root"))),
    ])
}

/// The published root in one line (what a restore on a new machine finds).
fn root_line(r: &Value) -> String {
    if r.is_null() {
        return "none".into();
    }
    let mut line = match n(r, "seq") {
        0 => "none published yet".to_string(),
        seq => format!("#{seq}, {} parts, at {}", n(r, "parts"), n(r, "at")),
    };
    if r["placing"] == true {
        line += "; a newer snapshot is being placed";
    } else if r["synced"] != true && n(r, "seq") > 0 {
        line += "; a durable sync waits for a newer one";
    }
    line
}

/// Repair in one line: what is left, what is done, what cannot be done.
fn repair_line(r: &Value) -> String {
    let mut line = format!(
        "{} chunks to re-place, {} re-placed, {} broken promises to release",
        n(r, "chunks_remaining"),
        n(r, "chunks_repaired"),
        n(r, "promises_pending")
    );
    if n(r, "chunks_unrecoverable") > 0 {
        line += &format!(", {} with no copy left", n(r, "chunks_unrecoverable"));
    }
    if let Some(gone) = field(r, "providers_unreachable").as_array().filter(|g| !g.is_empty()) {
        line += &format!("; {} provider(s) not answering", gone.len());
    }
    line
}

/// Shows placement live until nothing is pending; returns the last status.
/// The bar counts replicas: placed since the watch began, over those plus
/// the ones still missing.
fn watch_placement(home: &Home, first: Value) -> Result<Value> {
    let uploads0 = n(field(&first, "agent"), "uploads");
    let bar = super::output::progress_bar("replicas");
    let mut v = first;
    let mut last_line: Option<Instant> = None;
    while n(&v, "pending_chunks") > 0 {
        let done = n(field(&v, "agent"), "uploads").saturating_sub(uploads0);
        let missing = n(&v, "missing_replicas");
        let pending = human_bytes(n(&v, "pending_bytes"));
        let blocked = field(field(&v, "agent"), "blocked").as_str().map(str::to_string);
        match &bar {
            Some(bar) => {
                bar.set_length(done + missing);
                bar.set_position(done);
                bar.set_message(match &blocked {
                    Some(why) => format!("{pending} pending, waiting: {why}"),
                    None => format!("{pending} pending, replicas"),
                });
            }
            None if last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY) => {
                last_line = Some(Instant::now());
                let why = blocked.map(|w| format!("; waiting: {w}")).unwrap_or_default();
                eprintln!("pactfs: {done}/{} replicas placed, {pending} pending{why}", done + missing);
            }
            None => {}
        }
        std::thread::sleep(POLL);
        v = ask(home, control::Request::Status, ASK_TIMEOUT)?;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(v)
}

/// Prints the outcome of `sync`: key-value lines, or with `json` the
/// object (the same facts, for scripts).
fn sync_out(json: bool, lines: &[(&str, String)], obj: Value) -> Result<()> {
    if json {
        print_json(&obj)?
    } else {
        print_kv(lines)?
    }
    Ok(())
}

/// `pactfs sync [--durable] [--json] [PATH]`: flush the drive to the local disk;
/// with `--durable`, then wait until every chunk pending at the start (of
/// PATH's files, or all) is at the replication target and, without PATH,
/// until the metadata root taken after it is published. Exit 0 then;
/// exit 1 if placement is blocked and stalled.
pub fn sync(home: &Home, durable: bool, path: Option<&Path>, json: bool) -> Result<i32> {
    let ino = match path {
        Some(p) => inode_in_mount(home, p)?,
        None => None,
    };
    let start = ask(home, control::Request::DurableStart { ino }, FLUSH_TIMEOUT)?;
    if !durable {
        let pending = n(&start, "total");
        sync_out(
            json,
            &[("Synced", "local".into()), ("Pending", pending.to_string())],
            serde_json::json!({ "synced": "local", "pending": pending }),
        )?;
        return Ok(0);
    }
    let token = field(&start, "token").as_u64().context("the node answered DurableStart without a token")?;
    let total = n(&start, "total");
    let bar = super::output::progress_bar("chunks at the replication target");
    if let Some(bar) = &bar {
        bar.set_length(total);
    }
    // Progress is any replica placed, not only a chunk completed: a big
    // snapshot completes chunks in bursts.
    let mut missing = n(&start, "missing_replicas");
    let mut moved = Instant::now();
    let mut last_line: Option<Instant> = None;
    loop {
        let v = ask(home, control::Request::DurableCheck { token }, ASK_TIMEOUT)?;
        let remaining = n(&v, "remaining");
        if n(&v, "missing_replicas") < missing {
            moved = Instant::now();
        }
        missing = n(&v, "missing_replicas");
        let blocked = field(&v, "blocked").as_str().map(str::to_string);
        if let Some(bar) = &bar {
            bar.set_position(total - remaining.min(total));
            if let Some(why) = &blocked {
                bar.set_message(format!("waiting: {why}"));
            }
        } else if remaining > 0 && last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY) {
            last_line = Some(Instant::now());
            eprintln!("pactfs: {} of {total} chunks at the replication target", total - remaining.min(total));
        }
        if remaining == 0 {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let mut lines = vec![("Durable", "yes".to_string()), ("Chunks", total.to_string())];
            let root = if path.is_none() { wait_root(home)? } else { None };
            if let Some((published, seq)) = root {
                lines.push(("Root", if published { format!("published (seq {seq})") } else { "pending".into() }));
            }
            let root = root.map(|(published, seq)| serde_json::json!({ "published": published, "seq": seq }));
            let obj = serde_json::json!({ "durable": true, "chunks": total, "remaining": 0, "root": root });
            sync_out(json, &lines, obj)?;
            return Ok(0);
        }
        if let Some(why) = blocked
            && moved.elapsed() >= STALL
        {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            eprintln!(
                "pactfs: not durable: {remaining} of {total} chunks are below the replication target \
                 and placement is blocked: {why}"
            );
            let obj = serde_json::json!({
                "durable": false, "chunks": total, "remaining": remaining, "blocked": why, "root": null,
            });
            sync_out(
                json,
                &[
                    ("Durable", "no".into()),
                    ("Chunks", total.to_string()),
                    ("Remaining", remaining.to_string()),
                    ("Blocked", why),
                ],
                obj,
            )?;
            return Ok(1);
        }
        std::thread::sleep(POLL);
    }
}

/// After a whole-drive durable sync: waits until the metadata root the
/// sync asked for is placed and published (what a restore elsewhere
/// finds), up to [`ROOT_WAIT`]: whether it was published, and the seq of
/// the newest root. `None` when the node keeps no roots.
fn wait_root(home: &Home) -> Result<Option<(bool, u64)>> {
    let started = Instant::now();
    loop {
        let v = ask(home, control::Request::Status, ASK_TIMEOUT)?;
        let root = &v["root"];
        if root.is_null() {
            return Ok(None);
        }
        if root["synced"] == true {
            return Ok(Some((true, n(root, "seq"))));
        }
        // The root's parts are placed like data: when placement is blocked
        // (no providers, no budget) there is nothing to wait for.
        if let Some(why) = v["agent"]["blocked"].as_str()
            && started.elapsed() >= STALL
        {
            eprintln!("pactfs: the data is durable; the metadata root taken after it is not published: {why}");
            return Ok(Some((false, n(root, "seq"))));
        }
        if started.elapsed() >= ROOT_WAIT {
            eprintln!(
                "pactfs: the data is durable; the metadata root taken after it is not published yet \
                 (pactfs status shows when it is)"
            );
            return Ok(Some((false, n(root, "seq"))));
        }
        std::thread::sleep(POLL);
    }
}

/// `pactfs audit [--now]`: the last audit of each promise. Exit 1 if
/// any audit shown failed.
pub fn audit(home: &Home, now: bool, json: bool) -> Result<i32> {
    let v = ask(home, control::Request::Audit { now }, FLUSH_TIMEOUT)?;
    let list = v.as_array().cloned().unwrap_or_default();
    let failed = list.iter().filter(|a| !field(a, "passed").as_bool().unwrap_or(false)).count();
    if json {
        print_json(&v)?;
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|a| {
                vec![
                    short(&s(a, "promise"), 12),
                    short(&s(a, "provider"), 16),
                    utc(n(a, "at")),
                    short(&s(a, "chunk"), 12),
                    format!("{}+{}", n(a, "offset"), n(a, "len")),
                    if field(a, "passed").as_bool().unwrap_or(false) { "passed".into() } else { "FAILED".into() },
                    s(a, "detail"),
                ]
            })
            .collect();
        print_table(&["PROMISE", "PROVIDER", "WHEN", "CHUNK", "RANGE", "RESULT", "DETAIL"], &rows)?;
        if now && list.is_empty() {
            eprintln!("pactfs: no promise had anything to audit");
        }
    }
    Ok(i32::from(failed > 0))
}

/// `pactfs reputation`: each provider's score and the broken promises behind it.
pub fn reputation(home: &Home, json: bool) -> Result<i32> {
    let v = ask(home, control::Request::Reputation, ASK_TIMEOUT)?;
    if json {
        print_json(&v)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let broken = field(r, "broken").as_array().cloned().unwrap_or_default();
            let evidence = broken
                .first()
                .map(|b| format!("{} ({} broken): {}", short(&s(b, "promise"), 12), broken.len(), s(b, "reason")))
                .unwrap_or_default();
            vec![
                short(&s(r, "provider"), 16),
                format!("{:.2}", field(r, "score").as_f64().unwrap_or(0.0)),
                format!("{:.1}", field(r, "kept").as_f64().unwrap_or(0.0)),
                format!("{:.1}", field(r, "broken_weight").as_f64().unwrap_or(0.0)),
                evidence,
            ]
        })
        .collect();
    print_table(&["PROVIDER", "SCORE", "KEPT", "BROKEN", "LATEST BROKEN PROMISE"], &rows)?;
    Ok(0)
}

/// The first `n` characters of an id (a table cell).
fn short(id: &str, n: usize) -> String {
    id.chars().take(n).collect()
}

#[derive(Clone, Copy)]
pub enum CacheOp {
    Pin,
    Unpin,
    Evict,
}

/// `pactfs pin|unpin|evict [PATH]`. Exit 1 if `pin` could not fetch
/// everything.
pub fn cache(home: &Home, op: CacheOp, path: Option<&Path>, json: bool) -> Result<i32> {
    let ino = match path {
        Some(p) => inode_in_mount(home, p)?,
        None => None,
    };
    let req = match op {
        CacheOp::Pin => control::Request::Pin { ino },
        CacheOp::Unpin => control::Request::Unpin { ino },
        CacheOp::Evict => control::Request::Evict { ino },
    };
    let v = ask(home, req, FLUSH_TIMEOUT)?;
    let failed = n(&v, "failed");
    if json {
        print_json(&v)?;
    } else {
        match op {
            CacheOp::Pin => print_kv(&[
                ("Pinned", "yes".into()),
                ("Chunks", n(&v, "chunks").to_string()),
                ("Fetched", format!("{} chunks ({})", n(&v, "changed"), human_bytes(n(&v, "bytes")))),
                ("Failed", failed.to_string()),
            ])?,
            CacheOp::Unpin => print_kv(&[("Pinned", "no".into())])?,
            CacheOp::Evict => print_kv(&[
                ("Chunks", n(&v, "chunks").to_string()),
                ("Evicted", format!("{} chunks ({})", n(&v, "changed"), human_bytes(n(&v, "bytes")))),
                ("Kept pending", n(&v, "pending").to_string()),
                ("Kept pinned", n(&v, "pinned").to_string()),
            ])?,
        }
        for e in field(&v, "errors").as_array().into_iter().flatten().take(5) {
            eprintln!("pactfs: {}", e.as_str().unwrap_or_default());
        }
    }
    Ok(i32::from(failed > 0))
}

/// The drive's inode of `path`, which must be inside the mount this
/// home's node serves; `None` for the mount's root (the whole drive).
fn inode_in_mount(home: &Home, path: &Path) -> Result<Option<u64>> {
    let ping = ask(home, control::Request::Ping, ASK_TIMEOUT)?;
    let mnt =
        field(&ping, "mountpoint").as_str().map(PathBuf::from).context("the node of this home mounts no drive")?;
    let meta = std::fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    let mnt_meta = std::fs::metadata(&mnt).with_context(|| format!("cannot stat the mount {}", mnt.display()))?;
    // The mount's inode numbers are the drive's own (`fs::fuse` hands the
    // store's numbers to the kernel), so st_ino names the file to the node.
    if meta.dev() != mnt_meta.dev() || !node::is_mounted(&mnt) {
        bail!("{} is not inside the pactfs mount of this home ({})", path.display(), mnt.display());
    }
    Ok(if meta.ino() == mnt_meta.ino() { None } else { Some(meta.ino()) })
}
