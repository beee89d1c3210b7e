//! Reading the files (or stdin) commands take, bounded: batch files,
//! `--data @FILE`, schema files and `--consumers` files.

use std::io::{BufRead, Read};

use crate::error::{CliError, Result};

/// The most a batch (or any file of events) may hold in all; every event
/// is checked before anything is published, so all of it is in memory.
pub(crate) const MAX_BATCH_BYTES: usize = 256 << 20;

/// A file, or stdin for `-`.
fn open_input(path: &str) -> std::io::Result<Box<dyn Read>> {
    Ok(if path == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path)?)
    })
}

fn read_error(what: &'static str, path: &str) -> impl FnOnce(std::io::Error) -> CliError {
    let path = path.to_owned();
    move |source| CliError::ReadFile { what, path, source }
}

fn not_utf8() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8")
}

/// Reads a file, or stdin for `-`: at most `limit` bytes, refusing a
/// larger one after reading one byte more (never `@/dev/zero` to the end).
pub(crate) fn read_input(what: &'static str, path: &str, limit: usize) -> Result<String> {
    let mut bytes = Vec::new();
    open_input(path)
        .and_then(|r| r.take(limit as u64 + 1).read_to_end(&mut bytes))
        .map_err(read_error(what, path))?;
    if bytes.len() > limit {
        return Err(CliError::Input(format!(
            "{what} {path} is larger than {limit} bytes"
        )));
    }
    String::from_utf8(bytes).map_err(|_| read_error(what, path)(not_utf8()))
}

/// Reads a `--batch` file (`-`: stdin): each line at most `line_limit`
/// bytes (one event), the whole at most [`MAX_BATCH_BYTES`]; a longer
/// line is refused as soon as it is, without reading it to its end.
pub(crate) fn read_batch(path: &str, line_limit: usize) -> Result<String> {
    let what = "--batch file";
    let mut reader = std::io::BufReader::new(open_input(path).map_err(read_error(what, path))?);
    let mut text = Vec::new();
    for n in 1.. {
        let start = text.len();
        let read = (&mut reader)
            .take(line_limit as u64 + 2)
            .read_until(b'\n', &mut text)
            .map_err(read_error(what, path))?;
        if read == 0 {
            break;
        }
        let line = text[start..].strip_suffix(b"\n").unwrap_or(&text[start..]);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > line_limit {
            return Err(CliError::Input(format!(
                "{what} {path}: line {n} is larger than {line_limit} bytes, the event size limit (EVENT_BUS_MAX_EVENT_BYTES)"
            )));
        }
        if text.len() > MAX_BATCH_BYTES {
            return Err(CliError::Input(format!(
                "{what} {path} is larger than {MAX_BATCH_BYTES} bytes: split it into several batches"
            )));
        }
    }
    String::from_utf8(text).map_err(|_| read_error(what, path)(not_utf8()))
}
