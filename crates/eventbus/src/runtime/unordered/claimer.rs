//! The claimer task of the unordered runtime: `XAUTOCLAIM` of entries left
//! idle in pending lists, and removal of stale consumers from the group.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{dispatch, Shared};
use crate::connection::RedisConn;
use crate::handler::Handler;
use crate::reply::parse_autoclaim;
use crate::runtime::failure::delivery_counts;
use crate::runtime::ConsumerConfig;
use crate::Result;

/// Removes consumers of the group on one stream that are idle for at least
/// `ARGV[2]` ms and own no pending entries, atomically (a consumer with
/// pending entries is never removed, so nothing pending is forgotten).
pub(crate) const REMOVE_STALE_CONSUMERS: &str = r#"
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return {} end
local removed = {}
for _, c in ipairs(consumers) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1]
    elseif c[i] == 'pending' then pending = c[i + 1]
    elseif c[i] == 'idle' then idle = c[i + 1] end
  end
  if name ~= ARGV[3] and pending == 0 and idle >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    table.insert(removed, name)
  end
end
return removed
"#;

pub(super) async fn run_claimer<H: Handler>(
    shared: Arc<Shared<H>>,
    conn: RedisConn,
    config: ConsumerConfig,
    shutdown: CancellationToken,
) {
    let stale_script = redis::Script::new(REMOVE_STALE_CONSUMERS);
    let stale_every = (config.stale_check_interval.as_millis()
        / config.claim_interval.as_millis().max(1))
    .max(1) as u64;
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.claim_interval) => {}
        }
        round += 1;
        for idx in 0..shared.streams.len() {
            if shutdown.is_cancelled() {
                return;
            }
            if let Err(e) = claim_stream(&shared, &conn, &config, idx, &shutdown).await {
                tracing::warn!(stream = %shared.streams[idx], error = %e, "claiming idle entries failed");
            }
        }
        if round % stale_every == 0 {
            for stream in &shared.streams {
                let removed: redis::RedisResult<Vec<String>> = stale_script
                    .key(stream)
                    .arg(&shared.group)
                    .arg(config.stale_consumer_after.as_millis() as u64)
                    .arg(&shared.name)
                    .invoke_async(&mut conn.clone())
                    .await;
                match removed {
                    Ok(names) if !names.is_empty() => {
                        tracing::info!(stream = %stream, removed = ?names, "removed stale consumers")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(stream = %stream, error = %e, "stale consumer cleanup failed")
                    }
                }
            }
        }
    }
}

/// One `XAUTOCLAIM` pass over a stream, following the cursor to the end.
async fn claim_stream<H: Handler>(
    shared: &Arc<Shared<H>>,
    conn: &RedisConn,
    config: &ConsumerConfig,
    idx: usize,
    shutdown: &CancellationToken,
) -> Result<()> {
    let mut cursor = "0-0".to_owned();
    loop {
        let reply: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(&shared.streams[idx])
            .arg(&shared.group)
            .arg(&shared.name)
            .arg(config.claim_idle.as_millis() as u64)
            .arg(&cursor)
            .arg("COUNT")
            .arg(config.read_count)
            .query_async(&mut conn.clone())
            .await?;
        let (next, claimed, deleted) = parse_autoclaim(&reply);
        if deleted > 0 {
            tracing::warn!(stream = %shared.streams[idx], deleted, "pending entries were trimmed before being handled");
        }
        shared
            .stats
            .claimed
            .fetch_add(claimed.len() as u64, Ordering::Relaxed);
        let ids: Vec<String> = claimed.iter().map(|e| e.id.clone()).collect();
        let counts = delivery_counts(
            conn,
            &shared.streams[idx],
            &shared.group,
            &shared.name,
            &ids,
        )
        .await;
        for entry in claimed {
            let attempt = counts.get(&entry.id).copied().unwrap_or(1);
            dispatch(shared, idx, entry, true, attempt).await;
        }
        if next == "0-0" || shutdown.is_cancelled() {
            return Ok(());
        }
        cursor = next;
    }
}
