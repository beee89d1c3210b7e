//! Ack-aware stream retention: trim what every group has acknowledged,
//! never an entry some group still needs.
//!
//! A stream's **safe point** is the oldest entry some group still needs:
//! for each group on the stream (`XINFO GROUPS`), the smaller of its oldest
//! pending entry (`XPENDING`) and the entry after its last-delivered id.
//! Entries below the safe point were delivered to every group and
//! acknowledged by it; `XTRIM <stream> MINID <safe point>` removes exactly
//! those. The ordered runtime holds nothing else: a partition's entries are
//! either pending to an owner (a new owner claims them from the pending
//! list) or not yet delivered; park state and replays refer to dead letters
//! and replay streams, not to partition entries.
//!
//! Reading the groups and trimming happen in one Lua script, so no group can
//! acknowledge, read or be created between the two (one key: on Redis
//! Cluster the script runs in the stream's slot). Redis 8.2's
//! `XTRIM … ACKED` is not used: 7.0 and 7.2 must work, and the script does
//! the same there.
//!
//! A stream with no group keeps its entries for [`RetentionPolicy::unread_keep`]
//! (nobody reads it; the entries may be meant for a group not created yet),
//! then they are trimmed with a warning.

use std::time::Duration;

use serde::Serialize;

use crate::connection::RedisConn;
use crate::topology::Topology;
use crate::{Error, Result};

/// How long entries are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// `None`: retention off (nothing is trimmed). `Some(age)`: trim what
    /// every group acknowledged and is older than `age` (zero: as soon as
    /// acknowledged).
    pub acked_after: Option<Duration>,
    /// Entries of a stream without any group are kept this long. Default 7 days.
    pub unread_keep: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            acked_after: Some(Duration::ZERO),
            unread_keep: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl RetentionPolicy {
    /// Parses `acked`, `acked:<duration>` (`30m`, `2h`, `7d`, `45s`) or `off`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "stream retention {s:?}: expected `acked`, `acked:<duration>` (e.g. acked:1h) or `off`"
            ))
        };
        let acked_after = match s.trim() {
            "off" => None,
            "acked" => Some(Duration::ZERO),
            other => {
                let d = other.strip_prefix("acked:").ok_or_else(bad)?;
                Some(parse_duration(d).ok_or_else(bad)?)
            }
        };
        Ok(RetentionPolicy {
            acked_after,
            ..Default::default()
        })
    }
}

/// `45s`, `30m`, `2h`, `7d` (a whole number and a unit).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => n,
        'm' => n.checked_mul(60)?,
        'h' => n.checked_mul(3600)?,
        'd' => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// What a trim of one stream found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrimReport {
    /// The stream.
    pub stream: String,
    /// Its length before the trim.
    pub length_before: u64,
    /// The oldest entry kept (entries below it were, or on a dry run would
    /// be, trimmed); `None` when nothing may be trimmed.
    pub safe_point: Option<String>,
    /// Entries trimmed (on a dry run: that would be; an upper bound, since
    /// ids below the safe point are counted from the stream's first id).
    pub trimmed: u64,
    /// The group whose position is the safe point: it holds retention back.
    pub held_by: Option<String>,
    /// The groups reading the stream.
    pub groups: Vec<String>,
}

/// Computes the safe point and trims to it, atomically. ARGV: [1] the
/// oldest id the age rule allows trimming below ("" = no age rule),
/// [2] the id below which a stream without groups is trimmed ("" = never),
/// [3] "1" for a dry run. Returns {length, safe point or "", trimmed,
/// holding group or "", group names}.
const TRIM: &str = r#"
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local function after(id)
  local ms, seq = parse(id)
  return string.format('%d-%d', ms, seq + 1)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, '', 0, '', {}} end
local len = redis.call('XLEN', KEYS[1])
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
local safe, holder, names = nil, '', {}
for _, g in ipairs(groups) do
  local name, pending, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1]
    elseif g[i] == 'pending' then pending = g[i + 1]
    elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  table.insert(names, name)
  local floor = after(last)
  if pending > 0 then
    local summary = redis.call('XPENDING', KEYS[1], name)
    if summary[2] and less(summary[2], floor) then floor = summary[2] end
  end
  if safe == nil or less(floor, safe) then safe, holder = floor, name end
end
if #groups == 0 then
  if ARGV[2] == '' then return {len, '', 0, '', {}} end
  safe = ARGV[2]
elseif ARGV[1] ~= '' and less(ARGV[1], safe) then
  safe, holder = ARGV[1], ''
end
local trimmed = 0
if len == 0 then
  trimmed = 0
elseif ARGV[3] == '1' then
  local below = redis.call('XRANGE', KEYS[1], '-', '(' .. safe, 'COUNT', len)
  trimmed = #below
else
  trimmed = redis.call('XTRIM', KEYS[1], 'MINID', safe)
end
-- A group holds retention back only if entries are kept because of it.
if len - trimmed == 0 then holder = '' end
return {len, safe, trimmed, holder, names}
"#;

/// Trims one stream by `policy` (nothing when retention is off).
pub async fn trim_stream(
    conn: &RedisConn,
    stream: &str,
    policy: &RetentionPolicy,
    dry_run: bool,
) -> Result<TrimReport> {
    let Some(acked_after) = policy.acked_after else {
        let length_before: u64 = redis::cmd("XLEN")
            .arg(stream)
            .query_async(&mut conn.clone())
            .await?;
        return Ok(TrimReport {
            stream: stream.to_owned(),
            length_before,
            safe_point: None,
            trimmed: 0,
            held_by: None,
            groups: Vec::new(),
        });
    };
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u128;
    let before = |age: Duration| format!("{}-0", now_ms.saturating_sub(age.as_millis()));
    let age_floor = if acked_after.is_zero() {
        String::new()
    } else {
        before(acked_after)
    };
    let (length_before, safe, trimmed, holder, groups): (u64, String, u64, String, Vec<String>) =
        redis::Script::new(TRIM)
            .key(stream)
            .arg(age_floor)
            .arg(before(policy.unread_keep))
            .arg(if dry_run { "1" } else { "0" })
            .invoke_async(&mut conn.clone())
            .await?;
    if groups.is_empty() && trimmed > 0 {
        metrics::counter!("eventbus_stream_unread_trimmed_total").increment(trimmed);
        tracing::warn!(
            stream, trimmed, keep = ?policy.unread_keep, dry_run,
            "trimmed entries of a stream no group reads (older than the unread retention)"
        );
    }
    if !dry_run {
        metrics::counter!("eventbus_stream_trimmed_total").increment(trimmed);
    }
    Ok(TrimReport {
        stream: stream.to_owned(),
        length_before,
        safe_point: (!safe.is_empty()).then_some(safe),
        trimmed,
        held_by: (!holder.is_empty()).then_some(holder),
        groups,
    })
}

/// Trims every partition stream of every topic published to in `topology`
/// (the topics registry), and the replay streams of the groups found on
/// them. Returns one report per stream, in order.
pub async fn trim_all(
    conn: &RedisConn,
    topology: &Topology,
    policy: &RetentionPolicy,
    dry_run: bool,
) -> Result<Vec<TrimReport>> {
    let mut topics: Vec<String> = redis::cmd("SMEMBERS")
        .arg(topology.topics_key())
        .query_async(&mut conn.clone())
        .await?;
    topics.sort();
    let mut reports = Vec::new();
    let mut groups = std::collections::BTreeSet::new();
    for topic in &topics {
        for p in 0..topology.partitions() {
            let stream = topology.stream_key(topic, p);
            let report = trim_stream(conn, &stream, policy, dry_run).await?;
            groups.extend(report.groups.iter().cloned());
            reports.push(report);
        }
    }
    for group in groups {
        let stream = topology.replay_stream(&group);
        let exists: bool = redis::cmd("EXISTS")
            .arg(&stream)
            .query_async(&mut conn.clone())
            .await?;
        if exists {
            reports.push(trim_stream(conn, &stream, policy, dry_run).await?);
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_refuse_in_words() {
        assert_eq!(
            RetentionPolicy::parse("acked").unwrap().acked_after,
            Some(Duration::ZERO)
        );
        assert_eq!(
            RetentionPolicy::parse("acked:2h").unwrap().acked_after,
            Some(Duration::from_secs(7200))
        );
        assert_eq!(RetentionPolicy::parse("off").unwrap().acked_after, None);
        for bad in ["", "ack", "acked:", "acked:5x", "acked:-1h", "maxlen:10"] {
            let e = RetentionPolicy::parse(bad).unwrap_err().to_string();
            assert!(e.contains("expected `acked`"), "{bad}: {e}");
        }
    }
}
