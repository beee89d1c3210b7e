//! Dead-letter records in Redis, for deployments without PostgreSQL.
//!
//! The stream `<ns>:dead` is a feed, trimmed by age, so it cannot be the
//! only copy of a dead letter. Beside it, in its hash slot (the hash tag
//! `{<ns>:dead}`, so every script below runs on Redis Cluster too), and
//! under the `<ns>:` prefix (so ACL key patterns `~<ns>:*` and namespace
//! scans cover them):
//!
//! - `<ns>:{<ns>:dead}:records`, hash: dead-letter id → the record as JSON
//!   (everything [`DeadLetter`] shows, the exact raw fields in base64, and
//!   the history);
//! - `<ns>:{<ns>:dead}:index`, hash: `<group>\n<event id>` → dead-letter
//!   id, so a second failure of an event in a group updates its record;
//! - `<ns>:{<ns>:dead}:by_time`, sorted set: id scored by minus its last
//!   failure in microseconds, so ascending order is PostgreSQL's `ORDER BY
//!   last_failed_at DESC, id` (equal scores sort by id);
//! - `<ns>:{<ns>:dead}:new`, sorted set: the ids in status `new`, scored by
//!   their first failure in microseconds (depth and oldest age).
//!
//! Every change is a compare-and-set: the record is read, changed in Rust,
//! and written by [`WRITE`] only if it is still what was read (else read
//! again). A dead letter's stream entry is added in that same script, so
//! the entry and the record are written together or not at all.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::store::{DeadLetterFilter, DlqDepth, Mark};
use super::{AuditEntry, DeadLetter, DeadLetterStatus, Failure};
use crate::connection::RedisConn;
use crate::topology::Topology;
use crate::{Error, Result};

/// Ids read per round trip when scanning the records in order.
const PAGE: usize = 200;

/// Reads before a change gives up because others kept changing the record.
const TRIES: usize = 50;

/// Writes a record if it, and its index entry, are still as read; then
/// its place in the time order and the `new` set; then the stream entry,
/// if fields are given. Nil when something changed in between.
///
/// KEYS: dead stream, records, index, by_time, new. ARGV: id, index field
/// (`""`: leave the index alone), index value read (`""`: none), record
/// read (`""`: none), record, by_time score, new score (`""`: not new),
/// then the stream entry's fields and values.
const WRITE: &str = r#"
if ARGV[2] ~= '' and (redis.call('HGET', KEYS[3], ARGV[2]) or '') ~= ARGV[3] then
  return false
end
if (redis.call('HGET', KEYS[2], ARGV[1]) or '') ~= ARGV[4] then
  return false
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
end
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[1])
if ARGV[7] == '' then
  redis.call('ZREM', KEYS[5], ARGV[1])
else
  redis.call('ZADD', KEYS[5], ARGV[7], ARGV[1])
end
if #ARGV > 7 then
  return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 8))
end
return 'ok'
"#;

/// Deletes a record unless it failed again since it was selected (its
/// score is no longer above the cutoff). Returns 1 if deleted.
///
/// KEYS: records, index, by_time, new. ARGV: id, index field (`""`:
/// unknown), the cutoff score.
const PURGE: &str = r#"
local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not score or tonumber(score) <= tonumber(ARGV[3]) then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[2] ~= '' and redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
"#;

/// The keys of a namespace's records.
#[derive(Debug, Clone)]
pub(crate) struct RecordKeys {
    stream: String,
    records: String,
    index: String,
    by_time: String,
    new: String,
}

impl RecordKeys {
    pub(crate) fn of(topology: &Topology) -> Self {
        let stream = topology.dead_stream();
        let key = |name: &str| format!("{}:{{{stream}}}:{name}", topology.namespace());
        RecordKeys {
            records: key("records"),
            index: key("index"),
            by_time: key("by_time"),
            new: key("new"),
            stream,
        }
    }
}

/// One dead letter as kept in `<ns>:{<ns>:dead}:records`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: Uuid,
    group: String,
    event_id: Uuid,
    event_type: String,
    key: String,
    /// The envelope as JSON (U+0000 included).
    envelope: serde_json::Value,
    /// The exact source fields in the `raw_fields` format, base64, when the
    /// entry was not an envelope or held U+0000 (as in PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw_fields_base64: Option<String>,
    origin: String,
    consumer: String,
    stream: String,
    partition: i32,
    entry_id: String,
    attempts: i32,
    error_class: String,
    error_message: String,
    first_failed_at: DateTime<Utc>,
    last_failed_at: DateTime<Utc>,
    status: String,
    replay_count: i32,
    history: Vec<AuditEntry>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn index_field(group: &str, event_id: Uuid) -> String {
    format!("{group}\n{event_id}")
}

/// Microseconds: records keep times at that precision, like PostgreSQL.
fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

impl Record {
    fn raw(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        self.raw_fields_base64
            .as_deref()
            .and_then(|s| b64().decode(s).ok())
    }

    fn dead_letter(&self) -> DeadLetter {
        let raw = self.raw();
        let (envelope, exact, raw_fields) =
            crate::lossless::shown(self.envelope.clone(), raw.as_deref());
        let (event_type, key) = match exact {
            Some(e) => (e.event_type, e.key),
            None => (self.event_type.clone(), self.key.clone()),
        };
        DeadLetter {
            id: self.id,
            group: self.group.clone(),
            event_id: self.event_id,
            event_type,
            key,
            envelope,
            raw_fields,
            origin: self.origin.clone(),
            consumer: self.consumer.clone(),
            stream: self.stream.clone(),
            partition: self.partition,
            entry_id: self.entry_id.clone(),
            attempts: self.attempts,
            error_class: self.error_class.clone(),
            error_message: self.error_message.clone(),
            first_failed_at: self.first_failed_at,
            last_failed_at: self.last_failed_at,
            status: self.status.clone(),
            replay_count: self.replay_count,
        }
    }

    /// The type and key compared are the exact ones (a record keeps them
    /// as the event had them).
    fn matches(&self, f: &DeadLetterFilter) -> bool {
        (f.ids.is_empty() || f.ids.contains(&self.id))
            && f.group.as_ref().is_none_or(|g| *g == self.group)
            && f.event_type.as_ref().is_none_or(|t| *t == self.event_type)
            && f.key.as_ref().is_none_or(|k| *k == self.key)
            && f.error_class.is_none_or(|c| c.as_str() == self.error_class)
            && f.since.is_none_or(|s| self.last_failed_at >= s)
            && f.status.is_none_or(|s| s.as_str() == self.status)
    }

    /// Takes the failure: a new record with `id`, or this one failed again.
    fn failed(
        previous: Option<Record>,
        id: Uuid,
        f: &Failure,
        message: &str,
        first: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Record {
        use base64::Engine as _;
        let (_, mut raw) = super::storable(&f.envelope);
        if let Some(fields) = &f.raw_fields {
            raw = Some(super::encode_raw_fields(fields));
        }
        let detail = serde_json::json!({
            "consumer": f.consumer, "entry_id": f.entry_id, "attempts": f.attempts,
            "error_class": f.class.as_str(), "error": message,
        });
        let mut r = previous.unwrap_or_else(|| Record {
            id,
            group: f.group.clone(),
            event_id: f.envelope.id,
            event_type: f.envelope.event_type.clone(),
            key: f.envelope.key.clone(),
            envelope: serde_json::to_value(&f.envelope).expect("an envelope always serializes"),
            raw_fields_base64: None,
            origin: "consumer".into(),
            consumer: String::new(),
            stream: String::new(),
            partition: 0,
            entry_id: String::new(),
            attempts: 0,
            error_class: String::new(),
            error_message: String::new(),
            first_failed_at: first,
            last_failed_at: now,
            status: DeadLetterStatus::New.as_str().into(),
            replay_count: 0,
            history: Vec::new(),
        });
        let action = if r.history.is_empty() {
            "dead_lettered"
        } else {
            "failed_again"
        };
        r.status = DeadLetterStatus::New.as_str().into();
        r.consumer.clone_from(&f.consumer);
        r.stream.clone_from(&f.stream);
        r.partition = i32::try_from(f.partition).unwrap_or(i32::MAX);
        r.entry_id.clone_from(&f.entry_id);
        r.attempts = i32::try_from(f.attempts).unwrap_or(i32::MAX);
        r.error_class = f.class.as_str().into();
        r.error_message = message.to_owned();
        r.last_failed_at = now;
        r.raw_fields_base64 = raw.map(|b| b64().encode(b));
        r.history.push(AuditEntry {
            action: action.into(),
            detail,
            at: now,
        });
        r
    }
}

/// What a compare-and-set found and writes.
struct Change<'a> {
    /// The index field and the value read there, when the index is written.
    index: Option<(String, String)>,
    /// The record read (`None`: there was none).
    read: Option<&'a str>,
    record: &'a Record,
    /// The dead stream entry's fields and values, when one is added.
    entry: &'a [Vec<u8>],
}

async fn write(conn: &RedisConn, keys: &RecordKeys, c: Change<'_>) -> Result<bool> {
    let json = serde_json::to_string(c.record).expect("a record always serializes");
    let r = c.record;
    let (field, owner) = c.index.unwrap_or_default();
    let new_score = if r.status == DeadLetterStatus::New.as_str() {
        micros(r.first_failed_at).to_string()
    } else {
        String::new()
    };
    let done: Option<String> = redis::Script::new(WRITE)
        .key(&keys.stream)
        .key(&keys.records)
        .key(&keys.index)
        .key(&keys.by_time)
        .key(&keys.new)
        .arg(r.id.to_string())
        .arg(field)
        .arg(owner)
        .arg(c.read.unwrap_or(""))
        .arg(json)
        .arg(-micros(r.last_failed_at))
        .arg(new_score)
        .arg(c.entry)
        .invoke_async(&mut conn.clone())
        .await?;
    Ok(done.is_some())
}

/// Records a failure in Redis and adds its stream entry (`entry(id)`, the
/// fields and values), in one script: a new record, or the event's record
/// in that group failed again (same id, history appended). Returns the id.
pub(crate) async fn record(
    conn: &RedisConn,
    keys: &RecordKeys,
    f: &Failure,
    message: &str,
    first: DateTime<Utc>,
    now: DateTime<Utc>,
    entry: impl Fn(Uuid) -> Vec<Vec<u8>>,
) -> Result<Uuid> {
    let (first, now) = (first.trunc_subsecs(6), now.trunc_subsecs(6));
    let field = index_field(&f.group, f.envelope.id);
    for _ in 0..TRIES {
        let mut c = conn.clone();
        let owner: Option<String> = redis::cmd("HGET")
            .arg(&keys.index)
            .arg(&field)
            .query_async(&mut c)
            .await?;
        let id = owner
            .as_deref()
            .and_then(|o| Uuid::try_parse(o).ok())
            .unwrap_or_else(Uuid::now_v7);
        let read: Option<String> = redis::cmd("HGET")
            .arg(&keys.records)
            .arg(id.to_string())
            .query_async(&mut c)
            .await?;
        let previous = read
            .as_deref()
            .and_then(|r| serde_json::from_str::<Record>(r).ok());
        // Like the PostgreSQL upsert: a failure not later than the one
        // recorded (a copy written again) leaves the record as it is.
        let record = match previous {
            Some(p) if p.last_failed_at >= now => p,
            p => Record::failed(p, id, f, message, first, now),
        };
        let change = Change {
            index: Some((field.clone(), owner.unwrap_or_default())),
            read: read.as_deref(),
            record: &record,
            entry: &entry(id),
        };
        if write(conn, keys, change).await? {
            return Ok(id);
        }
    }
    Err(Error::Contended(format!(
        "the dead letter of event {}",
        f.envelope.id
    )))
}

/// The records of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct RedisRecords {
    keys: RecordKeys,
    redis: RedisConn,
}

impl RedisRecords {
    pub(crate) fn new(topology: &Topology, redis: RedisConn) -> Self {
        RedisRecords {
            keys: RecordKeys::of(topology),
            redis,
        }
    }

    /// The records of `ids` that exist (and parse), in their order.
    async fn fetch(&self, ids: &[String]) -> Result<Vec<(String, Record)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raws: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&self.keys.records)
            .arg(ids)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(raws
            .into_iter()
            .zip(ids)
            .filter_map(|(raw, id)| {
                let raw = raw?;
                match serde_json::from_str(&raw) {
                    Ok(r) => Some((raw, r)),
                    Err(e) => {
                        tracing::warn!(dead_letter = %id, error = %e, key = %self.keys.records,
                                       "a dead-letter record that is not valid JSON is left out");
                        None
                    }
                }
            })
            .collect())
    }

    pub(crate) async fn list(&self, f: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let (limit, mut skip) = (f.limit() as usize, f.offset() as usize);
        let mut out = Vec::new();
        if !f.ids.is_empty() {
            let mut ids: Vec<String> = f.ids.iter().map(Uuid::to_string).collect();
            ids.sort();
            ids.dedup();
            let mut found = Vec::new();
            for chunk in ids.chunks(PAGE) {
                found.extend(
                    self.fetch(chunk)
                        .await?
                        .into_iter()
                        .filter(|(_, r)| r.matches(f))
                        .map(|(_, r)| r.dead_letter()),
                );
            }
            found.sort_by(|a, b| (b.last_failed_at.cmp(&a.last_failed_at)).then(a.id.cmp(&b.id)));
            return Ok(found.into_iter().skip(skip).take(limit).collect());
        }
        // Failed at or after `since` means a score at most minus it.
        let max = f
            .since
            .map_or_else(|| "+inf".to_owned(), |s| (-micros(s)).to_string());
        let mut start = 0;
        loop {
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(&self.keys.by_time)
                .arg("-inf")
                .arg(&max)
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(start)
                .arg(PAGE)
                .query_async(&mut self.redis.clone())
                .await?;
            start += ids.len();
            for (_, r) in self.fetch(&ids).await? {
                if !r.matches(f) {
                    continue;
                }
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                out.push(r.dead_letter());
                if out.len() == limit {
                    return Ok(out);
                }
            }
            if ids.len() < PAGE {
                return Ok(out);
            }
        }
    }

    pub(crate) async fn get(&self, id: Uuid) -> Result<Option<(DeadLetter, Vec<AuditEntry>)>> {
        Ok(self
            .fetch(&[id.to_string()])
            .await?
            .pop()
            .map(|(_, r)| (r.dead_letter(), r.history)))
    }

    pub(crate) async fn mark(&self, id: Uuid, mark: &Mark) -> Result<()> {
        for _ in 0..TRIES {
            let Some((read, mut record)) = self.fetch(&[id.to_string()]).await?.pop() else {
                return Ok(()); // purged meanwhile
            };
            record.status = mark.status.as_str().into();
            if mark.status == DeadLetterStatus::Replayed {
                record.replay_count += 1;
            }
            record.history.push(AuditEntry {
                action: mark.action.into(),
                detail: mark.detail.clone(),
                at: Utc::now().trunc_subsecs(6),
            });
            let change = Change {
                index: None,
                read: Some(&read),
                record: &record,
                entry: &[],
            };
            if write(&self.redis, &self.keys, change).await? {
                return Ok(());
            }
        }
        Err(Error::Contended(format!("dead letter {id}")))
    }

    /// Deletes (or counts) the records last failed before `cutoff`, a page
    /// at a time.
    pub(crate) async fn purge(&self, cutoff: DateTime<Utc>, dry_run: bool) -> Result<u64> {
        // Older than the cutoff: a score above minus it.
        let above = -micros(cutoff);
        let min = format!("({above}");
        if dry_run {
            return Ok(redis::cmd("ZCOUNT")
                .arg(&self.keys.by_time)
                .arg(&min)
                .arg("+inf")
                .query_async(&mut self.redis.clone())
                .await?);
        }
        let mut deleted = 0;
        loop {
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(&self.keys.by_time)
                .arg(&min)
                .arg("+inf")
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(PAGE)
                .query_async(&mut self.redis.clone())
                .await?;
            if ids.is_empty() {
                return Ok(deleted);
            }
            let fields: std::collections::HashMap<String, String> = self
                .fetch(&ids)
                .await?
                .into_iter()
                .map(|(_, r)| (r.id.to_string(), index_field(&r.group, r.event_id)))
                .collect();
            for id in &ids {
                let n: u64 = redis::Script::new(PURGE)
                    .key(&self.keys.records)
                    .key(&self.keys.index)
                    .key(&self.keys.by_time)
                    .key(&self.keys.new)
                    .arg(id)
                    .arg(fields.get(id).map_or("", String::as_str))
                    .arg(above)
                    .invoke_async(&mut self.redis.clone())
                    .await?;
                deleted += n;
            }
        }
    }

    pub(crate) async fn depth(&self) -> Result<DlqDepth> {
        let mut c = self.redis.clone();
        let depth: i64 = redis::cmd("ZCARD")
            .arg(&self.keys.new)
            .query_async(&mut c)
            .await?;
        let oldest: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&self.keys.new)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut c)
            .await?;
        let now = Utc::now();
        // Failed in the last minute: a score below minus a minute ago.
        let minute_ago = -micros(now - chrono::Duration::minutes(1));
        let last_minute: i64 = redis::cmd("ZCOUNT")
            .arg(&self.keys.by_time)
            .arg("-inf")
            .arg(format!("({minute_ago}"))
            .query_async(&mut c)
            .await?;
        Ok(DlqDepth {
            depth,
            oldest_age_seconds: oldest
                .first()
                .map(|(_, first)| (micros(now) as f64 - first) / 1e6),
            last_minute,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_dead_stream_slot_under_the_namespace() {
        let keys = RecordKeys::of(&Topology::new("prod", 4).unwrap());
        assert_eq!(keys.stream, "prod:dead");
        assert_eq!(keys.records, "prod:{prod:dead}:records");
        for k in [&keys.index, &keys.by_time, &keys.new] {
            assert!(k.starts_with("prod:{prod:dead}:"), "{k}");
        }
    }
}
