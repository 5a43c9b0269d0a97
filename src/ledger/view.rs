//! Entries for people and scripts: the JSON of `pactfs log show --json`
//! and UTC times.
//!
//! The JSON field names are a contract (the README lists them): an entry
//! is `seq`, `at` (unix seconds), `time` (RFC 3339, UTC), `kind`,
//! `summary`, `node`, `prev`, `hash`, `sig` and `event` (the event's own
//! fields, named as in [`Event`], ids, keys and signed bytes in hex); an
//! entry that cannot be shown is `seq`, `hash` (or null) and `error`.

use super::entry::{Event, hex};
use super::read::Listed;
use serde_json::{Value, json};

/// The JSON object of one listed entry.
pub fn entry_json(listed: &Listed) -> Value {
    let hash = listed.hash.map(|h| hex(&h));
    match &listed.entry {
        Err(why) => json!({ "seq": listed.seq, "hash": hash, "error": why }),
        Ok(signed) => {
            let e = &signed.body;
            json!({
                "seq": listed.seq,
                "at": e.at,
                "time": rfc3339(e.at),
                "kind": e.event.kind(),
                "summary": e.event.summary(),
                "node": hex(&e.node.0),
                "prev": hex(&e.prev),
                "hash": hash,
                "sig": hex(&signed.sig.0),
                "event": event_json(&e.event),
            })
        }
    }
}

/// The event's fields, ids in hex.
pub fn event_json(event: &Event) -> Value {
    match event {
        Event::AskTaken { provider, ask, price_per_gib_month, price_per_gib_retrieval } => json!({
            "provider": hex(&provider.0), "ask": hex(ask),
            "price_per_gib_month": price_per_gib_month, "price_per_gib_retrieval": price_per_gib_retrieval,
        }),
        Event::Bid { provider, promise, chunks, bytes, price_per_gib_month, duration_secs } => json!({
            "provider": hex(&provider.0), "promise": hex(promise), "chunks": chunks, "bytes": bytes,
            "price_per_gib_month": price_per_gib_month, "duration_secs": duration_secs,
        }),
        Event::Countered { provider, promise, price_per_gib_month } => json!({
            "provider": hex(&provider.0), "promise": hex(promise), "price_per_gib_month": price_per_gib_month,
        }),
        Event::BidRefused { provider, promise, reason } => json!({
            "provider": hex(&provider.0), "promise": hex(promise), "reason": reason,
        }),
        Event::Promise { id, client, provider, chunks, bytes, price_per_gib_month, start, expiry, signed } => json!({
            "id": hex(id), "client": hex(&client.0), "provider": hex(&provider.0), "chunks": chunks,
            "bytes": bytes, "price_per_gib_month": price_per_gib_month, "start": start, "expiry": expiry,
            "signed": hex(&signed.0),
        }),
        Event::Receipt { promise, chunk, provider, bytes, signed } => json!({
            "promise": hex(promise), "chunk": hex(chunk), "provider": hex(&provider.0), "bytes": bytes,
            "signed": hex(&signed.0),
        }),
        Event::Payment { client, provider, amount, total, signed } => json!({
            "client": hex(&client.0), "provider": hex(&provider.0), "amount": amount, "total": total,
            "signed": hex(&signed.0),
        }),
        Event::PaymentWithheld { provider, promise, amount, reason } => json!({
            "provider": hex(&provider.0), "promise": hex(promise), "amount": amount, "reason": reason,
        }),
        Event::Audit { promise, provider, chunk, passed, detail } => json!({
            "promise": hex(promise), "provider": hex(&provider.0), "chunk": hex(chunk), "passed": passed,
            "detail": detail,
        }),
        Event::Broken { promise, provider, reason, evidence } => json!({
            "promise": hex(promise), "provider": hex(&provider.0), "reason": reason, "evidence": hex(&evidence.0),
        }),
        Event::Expired { promise } => json!({ "promise": hex(promise) }),
        Event::Renewed { old, new } => json!({ "old": hex(old), "new": hex(new) }),
        Event::Sealed { first, last, blob } => json!({ "first": first, "last": last, "blob": hex(blob) }),
    }
}

/// Unix seconds as RFC 3339 in UTC (`2024-02-29T13:05:09Z`).
pub fn rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_709_211_909), "2024-02-29T13:05:09Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
