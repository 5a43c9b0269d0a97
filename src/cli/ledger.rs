//! `pactfs log verify` and `pactfs log show`: the node's ledger, asked
//! page by page over the control socket, or read straight from the store
//! (under the home lock) when no node runs on the home.

use super::output::{self, print_kv};
use crate::config::HumanDuration;
use crate::node::{Home, HomeLock, NodeError, control, ledger::OfflineLedger};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

/// How long one page may take the node (a page is a few thousand entries).
const PAGE_TIMEOUT: Duration = Duration::from_secs(300);

/// Where the ledger's pages come from: the running node, or the store.
struct Log<'a> {
    home: &'a Home,
    /// Set once no node answered: the store opened under the home lock.
    local: Option<(OfflineLedger, HomeLock)>,
    /// Create a store to append to if the home has none (test builds).
    create: bool,
}

impl Log<'_> {
    fn new(home: &Home, create: bool) -> Log<'_> {
        Log { home, local: None, create }
    }

    fn call(&mut self, req: &control::Request) -> Result<Value> {
        if let Some((ledger, _lock)) = &self.local {
            return Ok(ledger.call(req)?);
        }
        match control::call(&self.home.control_socket(), req, Some(PAGE_TIMEOUT)) {
            Ok(v) => Ok(v),
            Err(NodeError::NotRunning { .. }) => {
                let lock = HomeLock::acquire(self.home)?;
                let ledger = OfflineLedger::open(self.home, self.create).context("cannot open the ledger")?;
                let answer = ledger.call(req);
                self.local = Some((ledger, lock));
                Ok(answer?)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// `pactfs log verify`: exit 0 intact, 1 broken (the first bad entry named).
pub fn verify(home: &Home, json: bool) -> Result<i32> {
    let mut log = Log::new(home, false);
    let bar = output::progress_bar("verifying the ledger");
    let (mut from, mut prev, mut counting) = (0u64, None::<String>, false);
    let (mut entries, mut first_bad, mut node_key) = (0u64, Value::Null, String::new());
    loop {
        let page = log.call(&control::Request::LogVerify { from, prev: prev.clone(), counting })?;
        let num = |k: &str| page.get(k).and_then(Value::as_u64);
        entries += num("entries").unwrap_or(0);
        if first_bad.is_null() {
            first_bad = page.get("first_bad").cloned().unwrap_or(Value::Null);
        }
        if let Some(key) = page.get("node").and_then(Value::as_str) {
            node_key = key.to_string();
        }
        let next = num("next").context("the node's answer has no `next`")?;
        if let Some(bar) = &bar {
            bar.set_length(num("last").map_or(0, |l| l + 1));
            bar.set_position(next);
        }
        if page.get("done").and_then(Value::as_bool).unwrap_or(true) {
            break;
        }
        if next <= from {
            bail!("verification did not move on from entry {from}");
        }
        from = next;
        prev = page.get("prev").and_then(Value::as_str).map(str::to_string);
        counting = page.get("counting").and_then(Value::as_bool).unwrap_or(false);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let bad = !first_bad.is_null();
    if json {
        output::print_json(&serde_json::json!({
            "entries": entries,
            "status": if bad { "bad" } else { "ok" },
            "first_bad": first_bad,
            "node": node_key,
        }))?;
    } else {
        let mut rows = vec![("Entries", entries.to_string()), ("Status", if bad { "bad" } else { "ok" }.to_string())];
        if bad {
            let seq = first_bad.get("seq").and_then(Value::as_u64).map_or("?".into(), |s| s.to_string());
            let reason = first_bad.get("reason").and_then(Value::as_str).unwrap_or("").to_string();
            rows.push(("First bad entry", seq));
            rows.push(("Reason", reason));
        }
        print_kv(&rows)?;
    }
    Ok(if bad { 1 } else { 0 })
}

/// `pactfs log show`: one line per entry, or a JSON array.
pub fn show(home: &Home, since: Option<&str>, json: bool) -> Result<i32> {
    let since = since.map(parse_when).transpose()?;
    let mut log = Log::new(home, false);
    let mut out = std::io::stdout().lock();
    let mut from = None;
    let mut first = true;
    if json {
        out.write_all(b"[")?;
    }
    loop {
        let page = log.call(&control::Request::LogShow { since, from, limit: 256 })?;
        for entry in page.get("entries").and_then(Value::as_array).into_iter().flatten() {
            if json {
                out.write_all(if first { b"\n" } else { b",\n" })?;
                serde_json::to_writer_pretty(&mut out, entry)?;
            } else {
                writeln!(out, "{}", line(entry))?;
            }
            first = false;
        }
        match page.get("next").and_then(Value::as_u64) {
            Some(next) if Some(next) == from => bail!("listing did not move on from entry {next}"),
            Some(next) => from = Some(next),
            None => break,
        }
    }
    if json {
        out.write_all(b"\n]\n")?;
    }
    out.flush()?;
    Ok(0)
}

/// `seq  time  kind  summary`, or the reason an entry cannot be shown.
fn line(entry: &Value) -> String {
    let s = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("");
    let seq = entry.get("seq").and_then(Value::as_u64).unwrap_or(0);
    match entry.get("error").and_then(Value::as_str) {
        Some(why) => format!("{seq:>6}  {:<20}  {:<16}  {why}", "-", "damaged"),
        None => format!("{seq:>6}  {:<20}  {:<16}  {}", s("time"), s("kind"), s("summary")),
    }
}

/// WHEN: a unix time in seconds, or a duration ("1h", "2d") meaning that
/// long ago.
fn parse_when(text: &str) -> Result<u64> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().with_context(|| format!("--since {text:?}: not a unix time"));
    }
    let ago: HumanDuration =
        text.parse().with_context(|| format!("--since {text:?}: expected a unix time or a duration like \"1h\""))?;
    Ok(unix_now().saturating_sub(ago.0.as_secs()))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `pactfs debug ledger-append N` (test builds): N made-up entries.
#[cfg(feature = "fault-injection")]
pub fn debug_append(home: &Home, count: u64) -> Result<i32> {
    let mut log = Log::new(home, true);
    let v = log.call(&control::Request::LedgerAppend { count })?;
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0).to_string();
    print_kv(&[("Appended", n("appended")), ("Next", n("next"))])?;
    drop(log);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_is_a_unix_time_or_a_duration_ago() {
        assert_eq!(parse_when("1700000000").unwrap(), 1_700_000_000);
        let now = unix_now();
        let hour_ago = parse_when("1h").unwrap();
        assert!(hour_ago <= now - 3600 && hour_ago + 5 >= now - 3600, "{hour_ago} vs {now}");
        assert!(parse_when("yesterday").is_err());
        assert!(parse_when("").is_err());
        assert!(parse_when("-5").is_err());
    }

    #[test]
    fn a_line_per_entry() {
        let good = serde_json::json!({"seq": 7, "time": "2024-02-29T13:05:09Z", "kind": "expired", "summary": "promise 01020304 expired"});
        assert_eq!(line(&good), "     7  2024-02-29T13:05:09Z  expired           promise 01020304 expired");
        let bad = serde_json::json!({"seq": 8, "hash": null, "error": "unreadable in the store: x"});
        assert!(line(&bad).ends_with("damaged           unreadable in the store: x"), "{}", line(&bad));
    }
}
