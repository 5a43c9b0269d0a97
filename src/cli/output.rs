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
