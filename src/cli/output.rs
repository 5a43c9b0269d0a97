//! One place that formats command output.

use std::io::Write;

/// Prints `Key: value` lines, aligned.
pub fn print_kv(rows: &[(&str, String)]) -> std::io::Result<()> {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = std::io::stdout().lock();
    for (k, v) in rows {
        writeln!(out, "{:<width$} {v}", format!("{k}:"))?;
    }
    Ok(())
}

/// Prints a JSON object's fields as `Key: value` lines.
pub fn print_object(value: &serde_json::Value) -> std::io::Result<()> {
    let Some(map) = value.as_object() else {
        return print_json(value);
    };
    let rows: Vec<(String, String)> = map
        .iter()
        .map(|(k, v)| {
            let mut key = k.replace('_', " ");
            if let Some(first) = key.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            (key, v.to_string().trim_matches('"').to_string())
        })
        .collect();
    let borrowed: Vec<(&str, String)> = rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    print_kv(&borrowed)
}

pub fn print_json(value: &serde_json::Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)
}

/// A progress bar on stderr when it is a terminal; `None` otherwise, so
/// scripts and logs see only results.
pub fn progress_bar(what: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    let style = indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} ({eta})")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_string());
    Some(bar)
}

/// 361.1 MiB, for people (scripts read the bytes or --json).
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", units[i]) }
}

/// A unix time as people read it, in UTC: `2026-11-22 07:52 UTC`.
pub fn utc(unix: u64) -> String {
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", secs / 3600, secs % 3600 / 60)
}

/// A duration in seconds as people read it: `30d`, `12h`, `90s`.
pub fn span(secs: u64) -> String {
    match secs {
        s if s >= 86400 && s % 86400 == 0 => format!("{}d", s / 86400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Prints a table: a header row and rows, columns padded to their widest
/// cell; a column whose header starts with `>` is right-aligned.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let right: Vec<bool> = header.iter().map(|h| h.starts_with('>')).collect();
    let header: Vec<String> = header.iter().map(|h| h.trim_start_matches('>').to_string()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .zip(&right)
            .map(|((c, &w), &r)| if r { format!("{c:>w$}") } else { format!("{c:<w$}") })
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400 + 3600 + 120), "2000-02-29 01:02 UTC");
        assert_eq!(utc(1_798_761_599), "2026-12-31 23:59 UTC");
    }

    #[test]
    fn spans_and_sizes_read_for_people() {
        assert_eq!(span(30 * 86400), "30d");
        assert_eq!(span(3 * 3600), "3h");
        assert_eq!(span(90), "90s");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
