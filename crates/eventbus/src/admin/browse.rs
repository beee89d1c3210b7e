//! Reading the streams as they are, for operators: a page of entries
//! (`XRANGE`), one entry by its id, and an event found by its event id.
//! Entries are kept byte for byte beside their decoding, so an entry that
//! is not an envelope can still be shown.

use std::collections::BTreeSet;

use redis::Value;
use uuid::Uuid;

use crate::connection::RedisConn;
use crate::envelope::{DecodeError, Envelope};
use crate::lossless::RawField;
use crate::reply::parse_raw_entries;
use crate::topology::Topology;
use crate::Result;

/// One stream entry: its exact fields and their decoding.
#[derive(Debug)]
pub struct StreamEntry {
    /// Stream key.
    pub stream: String,
    /// Entry id (`<ms>-<seq>`).
    pub entry_id: String,
    /// The fields as stored.
    pub fields: Vec<RawField>,
    /// The envelope, or why the entry is not one.
    pub envelope: std::result::Result<Envelope, DecodeError>,
}

impl StreamEntry {
    fn new(stream: &str, entry_id: String, fields: Vec<RawField>) -> Self {
        let envelope = Envelope::from_fields(fields.iter().map(|(k, v)| (&k[..], &v[..])));
        StreamEntry {
            stream: stream.to_owned(),
            entry_id,
            fields,
            envelope,
        }
    }
}

/// Up to `count` entries of `stream` after `after` (exclusive; `None`:
/// from the start), oldest first.
pub async fn read_range(
    conn: &RedisConn,
    stream: &str,
    after: Option<&str>,
    count: usize,
) -> Result<Vec<StreamEntry>> {
    let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
    xrange(conn, stream, &start, "+", count).await
}

/// Up to `count` entries of `stream` before `before` (exclusive; `None`:
/// from the end), newest first.
pub async fn read_range_back(
    conn: &RedisConn,
    stream: &str,
    before: Option<&str>,
    count: usize,
) -> Result<Vec<StreamEntry>> {
    let end = before.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg(end)
        .arg("-")
        .arg("COUNT")
        .arg(count.max(1))
        .query_async(&mut conn.clone())
        .await?;
    Ok(entries(stream, &reply))
}

async fn xrange(
    conn: &RedisConn,
    stream: &str,
    start: &str,
    end: &str,
    count: usize,
) -> Result<Vec<StreamEntry>> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg(start)
        .arg(end)
        .arg("COUNT")
        .arg(count.max(1))
        .query_async(&mut conn.clone())
        .await?;
    Ok(entries(stream, &reply))
}

fn entries(stream: &str, reply: &Value) -> Vec<StreamEntry> {
    parse_raw_entries(reply)
        .into_iter()
        .map(|(id, fields)| StreamEntry::new(stream, id, fields))
        .collect()
}

/// Whether `id` is a stream entry id (`<ms>-<seq>`, digits).
pub fn is_entry_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        [ms, seq]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The partition streams of `topics`, in order.
fn partition_streams(topology: &Topology, topics: &BTreeSet<String>) -> Vec<String> {
    topics
        .iter()
        .flat_map(|t| (0..topology.partitions()).map(move |p| topology.stream_key(t, p)))
        .collect()
}

/// The entries with stream entry id `entry_id` on the partitions of `topics`
/// (one per partition at most).
pub async fn find_entry(
    conn: &RedisConn,
    topology: &Topology,
    topics: &BTreeSet<String>,
    entry_id: &str,
) -> Result<Vec<StreamEntry>> {
    let mut out = Vec::new();
    for stream in partition_streams(topology, topics) {
        out.extend(xrange(conn, &stream, entry_id, entry_id, 1).await?);
    }
    Ok(out)
}

/// How far before an event id's own time the search starts: the clock of
/// the process that made the id may run ahead of Redis's.
const CLOCK_SLACK_MS: u64 = 5 * 60 * 1000;

/// What [`find_event`] found.
#[derive(Debug, Default)]
pub struct FoundEvents {
    /// The entries carrying the event id (a duplicate appears twice).
    pub entries: Vec<StreamEntry>,
    /// Entries looked at.
    pub scanned: u64,
    /// True when the search stopped at its budget before the end of some stream.
    pub exhausted: bool,
}

/// Looks for the entries of event `id` on the partitions of `topics`. A
/// UUIDv7 carries its creation time: each stream is read from a little
/// before it (an event is written to a stream after it is made), else from
/// the start; at most `budget` entries are read in all.
pub async fn find_event(
    conn: &RedisConn,
    topology: &Topology,
    topics: &BTreeSet<String>,
    id: Uuid,
    budget: u64,
) -> Result<FoundEvents> {
    const PAGE: usize = 500;
    let wanted = id.to_string();
    let from = id.get_timestamp().map(|t| {
        let (secs, nanos) = t.to_unix();
        let ms = secs * 1000 + u64::from(nanos) / 1_000_000;
        format!("{}-0", ms.saturating_sub(CLOCK_SLACK_MS))
    });
    let mut found = FoundEvents::default();
    for stream in partition_streams(topology, topics) {
        let mut start = from.clone().unwrap_or_else(|| "-".to_owned());
        loop {
            let room = budget.saturating_sub(found.scanned);
            if room == 0 {
                found.exhausted = true;
                return Ok(found);
            }
            let page = xrange(conn, &stream, &start, "+", PAGE.min(room as usize)).await?;
            found.scanned += page.len() as u64;
            let Some(last) = page.last() else { break };
            start = format!("({}", last.entry_id);
            let full = page.len() == PAGE.min(room as usize);
            found.entries.extend(page.into_iter().filter(|e| {
                e.fields
                    .iter()
                    .any(|(k, v)| k == b"id" && v == wanted.as_bytes())
            }));
            if !full {
                break;
            }
        }
    }
    Ok(found)
}
