//! One trim of one stream (a Lua script), and of every stream of a namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use super::RetentionPolicy;
use crate::connection::RedisConn;
use crate::topology::Topology;
use crate::Result;

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
    /// Entries trimmed (on a dry run: that would be).
    pub trimmed: u64,
    /// On a dry run, true when `trimmed` is a lower bound: past 100,000
    /// entries the count stops (it must not hold Redis for long).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub trimmed_at_least: bool,
    /// The group whose position is the safe point: it holds retention back.
    pub held_by: Option<String>,
    /// The groups reading the stream.
    pub groups: Vec<String>,
    /// Per group, the oldest entry of the stream it has not acknowledged
    /// (pending to it, or not yet delivered); a group that has acknowledged
    /// everything is absent.
    pub oldest_unacked: BTreeMap<String, String>,
    /// True when another process held this stream's trim lease: nothing was
    /// trimmed here, the figures are read only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub leased_elsewhere: bool,
}

impl TrimReport {
    /// The stream's length after the trim.
    pub fn length_after(&self) -> u64 {
        self.length_before.saturating_sub(self.trimmed)
    }
}

/// What the script does besides reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Trim to the safe point.
    Trim,
    /// Count what a trim would remove; change nothing.
    DryRun,
    /// Read the groups' positions only (retention off, or the lease is
    /// held elsewhere).
    Report,
}

impl Mode {
    /// What a trim by `policy` does: nothing but read when retention is off.
    pub(super) fn of(policy: &RetentionPolicy, dry_run: bool) -> Self {
        match (policy.acked_after, dry_run) {
            (None, _) => Mode::Report,
            (Some(_), true) => Mode::DryRun,
            (Some(_), false) => Mode::Trim,
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Mode::Trim => "trim",
            Mode::DryRun => "dry",
            Mode::Report => "report",
        }
    }
}

/// The key of `stream`'s trim lease: in the stream's hash slot, and under
/// the stream's own prefix (so ACL key patterns like `~eventbus:*` cover it).
pub fn lease_key(stream: &str) -> String {
    if stream.contains('{') {
        format!("{stream}:trim-lease")
    } else {
        // A key without a hash tag hashes whole: tag the name whole.
        format!("{stream}:{{{stream}}}:trim-lease")
    }
}

/// Computes the safe point and trims to it, atomically.
///
/// KEYS: [1] the stream, [2] its trim lease (optional). ARGV: [1] the
/// oldest id the age rule allows trimming below ("" = no age rule),
/// [2] the id below which a stream without groups is trimmed ("" = never),
/// [3] `trim`, `dry` or `report`, [4] the lease's time to live in ms and
/// [5] this process's name (with KEYS[2]).
///
/// Returns {length, safe point or "", trimmed, holding group or "",
/// group names, per group its oldest unacknowledged id or "", 1 when the
/// lease is held elsewhere, 1 when a dry run's count is a lower bound}.
///
/// The dry-run count is the length when every entry is below the safe
/// point; else it walks the entries below it in pages inside the script,
/// at most 100,000 (then the count is a lower bound: the script must not
/// hold Redis for long).
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
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, '', 0, '', {}, {}, 0, 0} end
local mode = ARGV[3]
local elsewhere = 0
if KEYS[2] and mode == 'trim' then
  local took = redis.call('SET', KEYS[2], ARGV[5], 'NX', 'PX', ARGV[4])
  if not took and redis.call('GET', KEYS[2]) ~= ARGV[5] then
    mode, elsewhere = 'report', 1
  end
end
local len = redis.call('XLEN', KEYS[1])
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
local safe, holder, names, oldest = nil, '', {}, {}
for _, g in ipairs(groups) do
  local name, pending, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1]
    elseif g[i] == 'pending' then pending = g[i + 1]
    elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  table.insert(names, name)
  local floor = after(last)
  local need = ''
  if pending > 0 then
    local summary = redis.call('XPENDING', KEYS[1], name)
    if summary[2] then
      need = summary[2]
      if less(summary[2], floor) then floor = summary[2] end
    end
  end
  local nxt = redis.call('XRANGE', KEYS[1], floor, '+', 'COUNT', 1)
  if nxt[1] and (need == '' or less(nxt[1][1], need)) then need = nxt[1][1] end
  table.insert(oldest, need)
  if safe == nil or less(floor, safe) then safe, holder = floor, name end
end
if #groups == 0 then
  if ARGV[2] == '' then return {len, '', 0, '', names, oldest, elsewhere, 0} end
  safe = ARGV[2]
elseif ARGV[1] ~= '' and less(ARGV[1], safe) then
  safe, holder = ARGV[1], ''
end
local trimmed, more = 0, 0
if len == 0 or mode == 'report' then
  trimmed = 0
elseif mode == 'dry' then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if last[1] and less(last[1][1], safe) then
    trimmed = len
  else
    local from = '-'
    for i = 1, 100 do
      local page = redis.call('XRANGE', KEYS[1], from, '(' .. safe, 'COUNT', 1000)
      trimmed = trimmed + #page
      if #page < 1000 then break end
      from = '(' .. page[#page][1]
      if i == 100 then more = 1 end
    end
  end
else
  trimmed = redis.call('XTRIM', KEYS[1], 'MINID', safe)
end
-- A group holds retention back only if entries are kept because of it.
if mode ~= 'report' and len - trimmed == 0 then holder = '' end
return {len, safe, trimmed, holder, names, oldest, elsewhere, more}
"#;

/// Trims one stream by `policy` (nothing when retention is off: the
/// groups' positions are still read).
pub async fn trim_stream(
    conn: &RedisConn,
    stream: &str,
    policy: &RetentionPolicy,
    dry_run: bool,
) -> Result<TrimReport> {
    let mode = Mode::of(policy, dry_run);
    run_script(conn, stream, policy, mode, None).await
}

/// One run of [`TRIM`] on `stream`; `lease`: this process's name and the
/// lease's time to live, so that processes trimming the same streams take
/// turns (only [`Mode::Trim`] takes it).
pub(super) async fn run_script(
    conn: &RedisConn,
    stream: &str,
    policy: &RetentionPolicy,
    mode: Mode,
    lease: Option<(&str, Duration)>,
) -> Result<TrimReport> {
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u128;
    let before = |age: Duration| format!("{}-0", now_ms.saturating_sub(age.as_millis()));
    let age_floor = match policy.acked_after {
        Some(age) if !age.is_zero() => before(age),
        _ => String::new(),
    };
    static SCRIPT: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new(TRIM));
    let mut script = SCRIPT.prepare_invoke();
    script.key(stream);
    script
        .arg(age_floor)
        .arg(before(policy.unread_keep))
        .arg(mode.arg());
    match lease {
        Some((owner, ttl)) => {
            script
                .key(lease_key(stream))
                .arg(ttl.as_millis().max(1) as u64)
                .arg(owner);
        }
        None => {
            script.arg(0).arg("");
        }
    }
    type Reply = (u64, String, u64, String, Vec<String>, Vec<String>, u8, u8);
    let (length_before, safe, trimmed, holder, groups, oldest, elsewhere, more): Reply =
        script.invoke_async(&mut conn.clone()).await?;
    if groups.is_empty() && trimmed > 0 && mode == Mode::Trim {
        metrics::counter!("eventbus_stream_unread_trimmed_total").increment(trimmed);
        if !stream.ends_with(":dead") {
            tracing::warn!(
                stream, trimmed, keep = ?policy.unread_keep,
                "trimmed entries of a stream no group reads (older than the unread retention)"
            );
        }
    }
    if mode == Mode::Trim {
        metrics::counter!("eventbus_stream_trimmed_total").increment(trimmed);
    }
    let oldest_unacked = groups
        .iter()
        .zip(oldest)
        .filter(|(_, id)| !id.is_empty())
        .map(|(g, id)| (g.clone(), id))
        .collect();
    let reported = mode != Mode::Report;
    Ok(TrimReport {
        stream: stream.to_owned(),
        length_before,
        safe_point: (reported && !safe.is_empty()).then_some(safe),
        trimmed,
        held_by: (reported && !holder.is_empty()).then_some(holder),
        groups,
        oldest_unacked,
        leased_elsewhere: elsewhere == 1,
        trimmed_at_least: more == 1,
    })
}

/// The partition streams retention looks after in `topology`: every
/// partition of `topics`, or of every topic published to (the topics
/// registry). [`trim_streams`] adds the replay and dead-letter streams.
pub(super) async fn streams(
    conn: &RedisConn,
    topology: &Topology,
    topics: Option<&[String]>,
) -> Result<Vec<String>> {
    let mut topics: Vec<String> = match topics {
        Some(t) => t.to_vec(),
        None => {
            redis::cmd("SMEMBERS")
                .arg(topology.topics_key())
                .query_async(&mut conn.clone())
                .await?
        }
    };
    topics.sort();
    topics.dedup();
    Ok(topics
        .iter()
        .flat_map(|t| (0..topology.partitions()).map(move |p| topology.stream_key(t, p)))
        .collect())
}

/// Runs the script on each of `streams`, then on the replay streams of the
/// groups found (those that exist) and on the dead-letter stream.
pub(super) async fn trim_streams(
    conn: &RedisConn,
    topology: &Topology,
    streams: Vec<String>,
    policy: &RetentionPolicy,
    mode: Mode,
    lease: Option<(&str, Duration)>,
) -> Result<Vec<TrimReport>> {
    let mut reports = Vec::with_capacity(streams.len() + 2);
    let mut groups = BTreeSet::new();
    for stream in &streams {
        let report = run_script(conn, stream, policy, mode, lease).await?;
        groups.extend(report.groups.iter().cloned());
        reports.push(report);
    }
    let mut extra: Vec<String> = groups.iter().map(|g| topology.replay_stream(g)).collect();
    extra.push(topology.dead_stream());
    for stream in extra {
        // The script answers a stream that does not exist with nothing.
        let report = run_script(conn, &stream, policy, mode, lease).await?;
        if report.length_before > 0 || !report.groups.is_empty() {
            reports.push(report);
        }
    }
    Ok(reports)
}

/// Trims every partition stream of every topic published to in `topology`
/// (the topics registry), the replay streams of the groups found on them
/// and the dead-letter stream (kept [`RetentionPolicy::unread_keep`]: it
/// has no group; with no PostgreSQL, dead letters are kept apart from it).
/// Returns one report per stream, in order.
pub async fn trim_all(
    conn: &RedisConn,
    topology: &Topology,
    policy: &RetentionPolicy,
    dry_run: bool,
) -> Result<Vec<TrimReport>> {
    let mode = Mode::of(policy, dry_run);
    let streams = streams(conn, topology, None).await?;
    trim_streams(conn, topology, streams, policy, mode, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_stay_in_their_stream_slot() {
        use redis::cluster_routing::Slot;
        for stream in ["ns:{orders:3}", "ns:{_replay:billing}", "ns:dead"] {
            assert_eq!(
                Slot::for_key(lease_key(stream)),
                Slot::for_key(stream),
                "{stream}"
            );
        }
    }
}
