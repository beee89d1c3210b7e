//! Parsing of stream replies (`XREADGROUP`, `XREAD`, `XAUTOCLAIM`, `XRANGE`)
//! straight from [`redis::Value`], keeping field bytes borrowed-free but
//! uncopied into maps: an entry is decoded in one pass.

use redis::Value;

use crate::envelope::{DecodeError, Envelope};

/// One stream entry as read: its id and either the envelope or why it is not one.
#[derive(Debug)]
pub(crate) struct RawEntry {
    pub(crate) id: String,
    pub(crate) decoded: Result<Envelope, DecodeError>,
}

fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn as_string(v: &Value) -> Option<String> {
    as_bytes(v).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// Decodes one `[id, [field, value, ...]]` entry. A deleted entry (nil
/// fields, seen when a pending entry was trimmed) decodes to a missing-field error.
pub(crate) fn parse_entry(v: &Value) -> Option<RawEntry> {
    let Value::Array(parts) = v else { return None };
    let id = as_string(parts.first()?)?;
    let decoded = match parts.get(1) {
        Some(Value::Array(kv)) => {
            let pairs = kv
                .chunks_exact(2)
                .filter_map(|c| Some((as_bytes(&c[0])?, as_bytes(&c[1])?)));
            Envelope::from_fields(pairs)
        }
        Some(Value::Map(kv)) => {
            let pairs = kv
                .iter()
                .filter_map(|(k, v)| Some((as_bytes(k)?, as_bytes(v)?)));
            Envelope::from_fields(pairs)
        }
        _ => Err(DecodeError::MissingField { field: "v" }),
    };
    Some(RawEntry { id, decoded })
}

/// The entries of an `XRANGE` reply as `(id, exact fields)`, undecoded:
/// for keeping an entry that is not an envelope byte for byte.
pub(crate) fn parse_raw_entries(v: &Value) -> Vec<(String, Vec<crate::lossless::RawField>)> {
    let Value::Array(entries) = v else {
        return Vec::new();
    };
    let owned = |(k, v): (&[u8], &[u8])| (k.to_vec(), v.to_vec());
    entries
        .iter()
        .filter_map(|entry| {
            let Value::Array(parts) = entry else {
                return None;
            };
            let id = as_string(parts.first()?)?;
            let fields = match parts.get(1)? {
                Value::Array(kv) => kv
                    .chunks_exact(2)
                    .map(|c| Some(owned((as_bytes(&c[0])?, as_bytes(&c[1])?))))
                    .collect::<Option<Vec<_>>>()?,
                Value::Map(kv) => kv
                    .iter()
                    .map(|(k, v)| Some(owned((as_bytes(k)?, as_bytes(v)?))))
                    .collect::<Option<Vec<_>>>()?,
                _ => return None,
            };
            Some((id, fields))
        })
        .collect()
}

/// Parses an `XREAD`/`XREADGROUP` reply into `(stream, entries)` pairs. A
/// nil reply (the block timed out) is an empty list.
pub(crate) fn parse_read(v: Value) -> Vec<(String, Vec<RawEntry>)> {
    split_read(v)
        .into_iter()
        .map(|(stream, entries)| (stream, entries.iter().filter_map(parse_entry).collect()))
        .collect()
}

/// Splits an `XREAD`/`XREADGROUP` reply into `(stream, undecoded entries)`
/// pairs without copying them, so that their decoding ([`parse_entry`])
/// can happen elsewhere (an ordered partition's worker, not its reader).
pub(crate) fn split_read(v: Value) -> Vec<(String, Vec<Value>)> {
    let streams: Vec<(Value, Value)> = match v {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(kv) if kv.len() == 2 => {
                    let mut kv = kv.into_iter();
                    Some((kv.next()?, kv.next()?))
                }
                _ => None,
            })
            .collect(),
        Value::Map(kv) => kv,
        _ => Vec::new(),
    };
    streams
        .into_iter()
        .filter_map(|(k, entries)| {
            let key = as_string(&k)?;
            match entries {
                Value::Array(entries) => Some((key, entries)),
                _ => Some((key, Vec::new())),
            }
        })
        .collect()
}

/// Parses an `XAUTOCLAIM` reply: the next cursor, the claimed entries, and
/// the ids that were pending but no longer exist (Redis drops them from the
/// pending list itself).
pub(crate) fn parse_autoclaim(v: &Value) -> (String, Vec<RawEntry>, usize) {
    let Value::Array(parts) = v else {
        return ("0-0".into(), Vec::new(), 0);
    };
    let cursor = parts
        .first()
        .and_then(as_string)
        .unwrap_or_else(|| "0-0".into());
    let claimed = match parts.get(1) {
        Some(Value::Array(entries)) => entries
            .iter()
            // a claimed id whose entry was deleted comes back as nil in Redis < 7
            .filter(|e| !matches!(e, Value::Nil))
            .filter_map(parse_entry)
            .collect(),
        _ => Vec::new(),
    };
    let deleted = match parts.get(2) {
        Some(Value::Array(ids)) => ids.len(),
        _ => 0,
    };
    (cursor, claimed, deleted)
}
