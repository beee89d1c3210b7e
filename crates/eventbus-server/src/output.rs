//! JSON lines on stdout. A write error (e.g. a closed pipe) is an
//! [`CliError::Output`]; a closed pipe ends the command quietly.

use std::io::Write;

use serde::Serialize;

use crate::error::{CliError, Result};

/// Writes each value as one JSON line, in one locked, flushed write.
pub(crate) fn json_lines<'a, T: Serialize + 'a>(
    values: impl IntoIterator<Item = &'a T>,
) -> Result<()> {
    let mut buf = Vec::new();
    for v in values {
        serde_json::to_writer(&mut buf, v).expect("output values always serialize");
        buf.push(b'\n');
    }
    write_stdout(&buf)
}

/// Writes one value as a JSON line.
pub(crate) fn json_line<T: Serialize>(value: &T) -> Result<()> {
    json_lines(std::iter::once(value))
}

/// Writes raw bytes to stdout and flushes.
pub(crate) fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// Rows as left-aligned columns separated by two spaces, one line each.
pub(crate) fn aligned(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        widths.resize(widths.len().max(row.len()), 0);
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
