//! Delayed and scheduled delivery (`docs/scheduled.md`).
//!
//! An event published with a due time later than now is not added to its
//! stream: it waits in its partition's sorted set `<stream>:scheduled`
//! (member: the event id, score: the due time in milliseconds since the
//! epoch), its stream-entry fields in the hash `<stream>:scheduled:events`.
//! Both keys carry the stream's hash tag, so a partition's stream and its
//! scheduled events are in one Redis Cluster slot and the [`Scheduler`]'s
//! move script (`ZRANGEBYSCORE` + `XADD` + `ZREM`, atomically) is a
//! single-slot script.
//!
//! - [`Publisher::publish_at`](crate::Publisher::publish_at) schedules (the
//!   publisher, the relay for outbox rows with a `deliver_at`);
//! - [`Scheduler`] moves due events to their streams, in due order, each
//!   exactly once with any number of schedulers running;
//! - [`list`], [`cancel`] and [`count`] are the operators' read and write
//!   models (`eventbus scheduled list|cancel`, `GET/DELETE /v1/scheduled`).
//!
//! The namespace's hint `<ns>:scheduled` (a sorted set: stream → its
//! earliest due time) lets schedulers look only at streams with something
//! due; it is only a hint, repaired by a periodic sweep of every partition.

mod scheduler;
pub(crate) mod scripts;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use scheduler::{Scheduler, SchedulerConfig, SchedulerStats};

use crate::connection::{RedisConn, SlotPipeline};
use crate::envelope::Envelope;
use crate::topology::Topology;
use crate::{Error, Result};

/// The header of an event whose retry went through the scheduler: the
/// deliveries that failed before (added to the new entry's delivery count).
pub const ATTEMPTS_HEADER: &str = "eventbus-attempts";

/// Default longest delay accepted (`EVENT_BUS_MAX_DELAY`): 30 days.
pub const DEFAULT_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// A duration in the largest whole unit (`30d`, `2h`, `90s`), for messages.
pub fn describe(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The sorted set of a stream's scheduled events.
pub fn scheduled_key(stream: &str) -> String {
    format!("{stream}:scheduled")
}

/// The hash of a stream's scheduled events' fields.
pub fn events_key(stream: &str) -> String {
    format!("{stream}:scheduled:events")
}

/// Where the move script keeps scheduled entries it could not read.
pub(crate) fn unreadable_key(stream: &str) -> String {
    format!("{stream}:scheduled:unreadable")
}

/// The namespace's hint: stream → earliest due time.
pub fn hint_key(topology: &Topology) -> String {
    format!("{}:scheduled", topology.namespace())
}

/// A due time as the score the scripts compare with the server's clock.
pub(crate) fn due_ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// The `EVAL` that schedules one event (see [`scripts::SCHEDULE`]).
pub(crate) fn schedule_cmd(
    stream: &str,
    due_ms: i64,
    event_id: &str,
    fields: &[(&'static str, String)],
) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(scripts::SCHEDULE)
        .arg(2)
        .arg(scheduled_key(stream))
        .arg(events_key(stream))
        .arg(due_ms)
        .arg(event_id);
    for (k, v) in fields {
        cmd.arg(*k).arg(v);
    }
    cmd
}

/// Lowers the hint of each stream to its earliest due time (`ZADD LT` adds
/// a stream that has none). Sent after the events are scheduled, so a
/// scheduler that rewrote the hint meanwhile re-reads the set and sees them.
pub(crate) async fn lower_hints(
    conn: &RedisConn,
    topology: &Topology,
    earliest: &BTreeMap<String, i64>,
) -> redis::RedisResult<()> {
    if earliest.is_empty() {
        return Ok(());
    }
    let mut zadd = redis::cmd("ZADD");
    zadd.arg(hint_key(topology)).arg("LT");
    for (stream, due) in earliest {
        zadd.arg(*due).arg(stream);
    }
    zadd.query_async::<()>(&mut conn.clone()).await
}

/// Whether this connection's Redis user may run scheduled retries into
/// `stream` (a group's replay stream): its scheduler `XADD`s there and
/// keeps the hint key. Writes nothing: each probe is a command the server
/// refuses after its ACL check (an `XADD` with id 0-0, a `ZADD` whose score
/// is no number) or one that changes nothing, so only `NOPERM` means a
/// missing permission. `Ok(Err(why))`: not allowed; `Err`: Redis failed.
pub(crate) async fn may_schedule_into(
    conn: &RedisConn,
    topology: &Topology,
    stream: &str,
) -> redis::RedisResult<std::result::Result<(), String>> {
    let hint = hint_key(topology);
    let probes: [(String, redis::Cmd); 4] = [
        (format!("XADD {stream}"), {
            let mut c = redis::cmd("XADD");
            c.arg(stream).arg("0-0").arg("probe").arg("");
            c
        }),
        (format!("ZADD {hint}"), {
            let mut c = redis::cmd("ZADD");
            c.arg(&hint).arg("not-a-score").arg(stream);
            c
        }),
        (format!("ZRANGEBYSCORE {hint}"), {
            let mut c = redis::cmd("ZRANGEBYSCORE");
            c.arg(&hint)
                .arg("-inf")
                .arg("-inf")
                .arg("LIMIT")
                .arg(0)
                .arg(1);
            c
        }),
        (format!("ZREM {hint}"), {
            let mut c = redis::cmd("ZREM");
            c.arg(&hint).arg("\0eventbus-probe");
            c
        }),
    ];
    for (what, cmd) in probes {
        match cmd.query_async::<redis::Value>(&mut conn.clone()).await {
            Ok(_) => {}
            Err(e) if e.code() == Some("NOPERM") => {
                return Ok(Err(format!("this Redis user may not run {what}")))
            }
            // Refused after the ACL check (`ERR ...`): allowed.
            Err(e) if e.code().is_some() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Ok(()))
}

/// An event waiting for its due time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScheduledEvent {
    /// The event id (kept when it reaches the stream).
    pub id: String,
    /// When it is due.
    pub deliver_at: DateTime<Utc>,
    /// The stream it goes to.
    pub stream: String,
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// The event (`None` if its stored fields cannot be decoded).
    pub envelope: Option<Envelope>,
}

/// Every partition stream of the namespace's known topics.
async fn all_streams(conn: &RedisConn, topology: &Topology) -> Result<Vec<(String, u32, String)>> {
    let topics: std::collections::BTreeSet<String> = redis::cmd("SMEMBERS")
        .arg(topology.topics_key())
        .query_async(&mut conn.clone())
        .await?;
    let partitions = topology.partitions();
    Ok(topics
        .into_iter()
        .flat_map(|t| (0..partitions).map(move |p| (t.clone(), p)))
        .map(|(t, p)| {
            let stream = topology.stream_key(&t, p);
            (t, p, stream)
        })
        .collect())
}

fn ms_to_time(ms: &str) -> DateTime<Utc> {
    let ms = ms.parse::<f64>().unwrap_or(0.0) as i64;
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

type Listed = Vec<(String, String, Vec<Vec<u8>>)>;

/// The scheduled events of the namespace, earliest first, at most `limit`.
pub async fn list(
    conn: &RedisConn,
    topology: &Topology,
    limit: usize,
) -> Result<Vec<ScheduledEvent>> {
    let streams = all_streams(conn, topology).await?;
    if streams.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let mut pipe = SlotPipeline::new(conn);
    for (_, _, stream) in &streams {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(scripts::LIST)
            .arg(2)
            .arg(scheduled_key(stream))
            .arg(events_key(stream))
            .arg(0)
            .arg(limit.saturating_sub(1));
        pipe.add(stream, cmd);
    }
    let replies: Vec<Listed> = pipe.query(conn).await?;
    let mut out = Vec::new();
    for ((topic, partition, stream), entries) in streams.into_iter().zip(replies) {
        for (id, due, fields) in entries {
            let envelope = Envelope::from_fields(
                fields
                    .chunks_exact(2)
                    .map(|kv| (kv[0].as_slice(), kv[1].as_slice())),
            )
            .ok();
            out.push(ScheduledEvent {
                id,
                deliver_at: ms_to_time(&due),
                stream: stream.clone(),
                topic: topic.clone(),
                partition,
                envelope,
            });
        }
    }
    out.sort_by(|a, b| (a.deliver_at, &a.id).cmp(&(b.deliver_at, &b.id)));
    out.truncate(limit);
    Ok(out)
}

/// How many events are scheduled in the namespace.
pub async fn count(conn: &RedisConn, topology: &Topology) -> Result<u64> {
    let streams = all_streams(conn, topology).await?;
    if streams.is_empty() {
        return Ok(0);
    }
    let mut pipe = SlotPipeline::new(conn);
    for (_, _, stream) in &streams {
        let mut cmd = redis::cmd("ZCARD");
        cmd.arg(scheduled_key(stream));
        pipe.add(stream, cmd);
    }
    let counts: Vec<u64> = pipe.query(conn).await?;
    Ok(counts.into_iter().sum())
}

/// Cancels a scheduled event by id: returns the stream it was waiting for,
/// or `None` when no event with this id is scheduled (never scheduled, or
/// already delivered: a cancel and a move never both succeed).
pub async fn cancel(conn: &RedisConn, topology: &Topology, id: &str) -> Result<Option<String>> {
    if uuid::Uuid::try_parse(id).is_err() {
        return Err(Error::InvalidEvent(format!(
            "{id:?} is not an event id (a UUID such as 0190a6a4-3b1c-7c3e-9a55-5c1f0b1e2d3a)"
        )));
    }
    let streams = all_streams(conn, topology).await?;
    if streams.is_empty() {
        return Ok(None);
    }
    let mut pipe = SlotPipeline::new(conn);
    for (_, _, stream) in &streams {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(scripts::CANCEL)
            .arg(2)
            .arg(scheduled_key(stream))
            .arg(events_key(stream))
            .arg(id);
        pipe.add(stream, cmd);
    }
    let removed: Vec<i64> = pipe.query(conn).await?;
    Ok(streams
        .into_iter()
        .zip(removed)
        .find(|(_, n)| *n > 0)
        .map(|((_, _, s), _)| s))
}

/// Parses a delay: a whole number and a unit `ms`, `s`, `m`, `h` or `d`
/// (`500ms`, `30s`, `15m`, `2h`, `7d`); zero means now.
pub fn parse_delay(s: &str) -> std::result::Result<std::time::Duration, String> {
    use std::time::Duration;
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || format!("{s:?} is not a delay like 500ms, 30s, 15m, 2h or 7d");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let secs = |per: u64| {
        n.checked_mul(per)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long a delay"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        "" => Err(format!(
            "{s:?} has no unit (use ms, s, m, h or d, e.g. 30s)"
        )),
        _ => Err(bad()),
    }
}

/// Parses a due time in RFC 3339 (`2026-05-01T09:00:00Z`,
/// `2026-05-01T11:00:00+02:00`), within the years 0000-9999.
pub fn parse_deliver_at(s: &str) -> std::result::Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2026-05-01T09:00:00Z ({e})"))
}

/// Checks a due time: at most `max_delay` ahead (past times are fine:
/// delivered at once).
pub fn check_deliver_at(
    deliver_at: DateTime<Utc>,
    max_delay: std::time::Duration,
) -> std::result::Result<(), String> {
    let max = chrono::Duration::from_std(max_delay).unwrap_or(chrono::Duration::MAX);
    if deliver_at - Utc::now() > max {
        return Err(format!(
            "deliver_at {} is more than {} ahead, the longest delay accepted (EVENT_BUS_MAX_DELAY)",
            crate::envelope::format_time(&deliver_at),
            describe(max_delay)
        ));
    }
    Ok(())
}

/// The due time of an event published with `delay` from now, refusing one
/// longer than `max_delay`.
pub fn due_after(
    delay: std::time::Duration,
    max_delay: std::time::Duration,
) -> std::result::Result<DateTime<Utc>, String> {
    if delay > max_delay {
        return Err(format!(
            "a delay of {} is longer than {}, the longest accepted (EVENT_BUS_MAX_DELAY)",
            describe(delay),
            describe(max_delay)
        ));
    }
    let d = chrono::Duration::from_std(delay).map_err(|_| "the delay is too long".to_owned())?;
    Ok(Utc::now() + d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn delays_parse_and_refuse_in_words() {
        assert_eq!(parse_delay("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_delay("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_delay("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_delay("0s"), Ok(Duration::ZERO));
        for bad in ["", "s", "30", "-5s", "1.5h", "10y", "ten seconds", "5 s"] {
            assert!(parse_delay(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_delay("30").unwrap_err().contains("no unit"));
        assert!(parse_delay("99999999999999999999d").is_err());
        assert!(parse_delay("999999999999999999d")
            .unwrap_err()
            .contains("too long"));
        let e = due_after(Duration::from_secs(31 * 86_400), DEFAULT_MAX_DELAY).unwrap_err();
        assert!(
            e.contains("longer than 30d") && e.contains("EVENT_BUS_MAX_DELAY"),
            "{e}"
        );
    }

    #[test]
    fn times_parse_and_refuse_in_words() {
        let t = parse_deliver_at("2026-05-01T11:00:00+02:00").unwrap();
        assert_eq!(t, parse_deliver_at("2026-05-01T09:00:00Z").unwrap());
        for bad in [
            "",
            "tomorrow",
            "2026-05-01",
            "2026-05-01 09:00",
            "2026-13-01T00:00:00Z",
        ] {
            let e = parse_deliver_at(bad).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_are_described_in_their_largest_unit() {
        assert_eq!(describe(DEFAULT_MAX_DELAY), "30d");
        assert_eq!(describe(Duration::from_secs(7200)), "2h");
        assert_eq!(describe(Duration::from_secs(90)), "90s");
        assert_eq!(describe(Duration::from_millis(250)), "250ms");
    }
}
