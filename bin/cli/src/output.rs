//! What the CLI prints: tables for people, JSON for scripts, and the small
//! number formats both share.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Tables and lines for people.
    Table,
    /// JSON for scripts: the API's own documents, one per line.
    Json,
}

/// Print one line on stdout. A closed pipe (`ffrtmp jobs list | head`)
/// ends the program quietly instead of panicking.
pub(crate) fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let ok = writeln!(out, "{text}").and_then(|()| out.flush());
    if let Err(e) = ok {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Print a JSON document on one line.
pub(crate) fn json(value: &impl Serialize) {
    match serde_json::to_string(value) {
        Ok(s) => line(&s),
        // Values built from parsed JSON always serialize.
        Err(e) => eprintln!("ffrtmp: cannot print JSON: {e}"),
    }
}

/// A plain text table: a header row, then rows, columns two spaces apart;
/// numeric columns are right-aligned. No borders, no colours: it reads the
/// same in a terminal, a log and `grep`.
pub(crate) struct Table {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns by name; a name starting with `>` is right-aligned (the `>`
    /// is not shown).
    pub(crate) fn new(columns: &[&str]) -> Table {
        Table {
            header: columns
                .iter()
                .map(|c| c.trim_start_matches('>').to_string())
                .collect(),
            right: columns.iter().map(|c| c.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(crate) fn render(&self) -> String {
        let n = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (width, right)) in widths.iter().zip(&self.right).enumerate() {
                let cell = r.get(i).map(String::as_str).unwrap_or("");
                let pad = width.saturating_sub(cell.chars().count());
                if i > 0 {
                    line.push_str("  ");
                }
                if *right {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Print it on stdout.
    pub(crate) fn print(&self) {
        let text = self.render();
        line(text.trim_end_matches('\n'));
    }
}

/// `-` for a missing value.
pub(crate) fn dash() -> String {
    "-".to_string()
}

/// A number with `prec` decimals, or `-`.
pub(crate) fn num(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}")).unwrap_or_else(dash)
}

/// Bytes in B, kB, MB, GB (decimal), or `-`.
pub(crate) fn bytes(v: Option<u64>) -> String {
    let Some(b) = v else { return dash() };
    let b = b as f64;
    if b < 1e3 {
        format!("{b} B")
    } else if b < 1e6 {
        format!("{:.1} kB", b / 1e3)
    } else if b < 1e9 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.2} GB", b / 1e9)
    }
}

/// Seconds as `1h02m03s`, `2m05s`, `7s`.
pub(crate) fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return dash();
    }
    let s = secs.round() as u64;
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// An enum's API name (its serde name), e.g. `ffmpeg_error`.
pub(crate) fn name(v: &impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_trim() {
        let mut t = Table::new(&["ID", ">N", "NAME"]);
        t.row(vec!["a".into(), "1".into(), "x".into()]);
        t.row(vec!["bbb".into(), "100".into(), String::new()]);
        assert_eq!(t.render(), "ID     N  NAME\na      1  x\nbbb  100\n");
    }

    #[test]
    fn formats() {
        assert_eq!(bytes(Some(999)), "999 B");
        assert_eq!(bytes(Some(1_500_000)), "1.5 MB");
        assert_eq!(bytes(None), "-");
        assert_eq!(duration(7.4), "7s");
        assert_eq!(duration(125.0), "2m05s");
        assert_eq!(duration(3723.0), "1h02m03s");
        assert_eq!(num(Some(1.234), 1), "1.2");
        assert_eq!(
            name(&ffrtmp_runtime::model::FailureReason::FfmpegError),
            "ffmpeg_error"
        );
    }
}
