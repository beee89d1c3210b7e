//! `eventbus tail`: stream entries as JSON lines, read with `XREAD` (no
//! group, nothing acknowledged). See `eventbus tail --help` for when it stops.

use std::time::Duration;

use eventbus::admin::{Tail, TailEntry};
use serde_json::{json, Value};

use crate::cli::TailArgs;
use crate::config::Settings;
use crate::error::Result;
use crate::output;

/// How long a read waits for new entries when following.
const FOLLOW_BLOCK: Duration = Duration::from_secs(2);
/// Entries asked for per stream per read.
const READ_COUNT: usize = 500;

/// Runs `eventbus tail`.
pub(crate) async fn run(args: TailArgs, settings: &Settings) -> Result<()> {
    let follow = args.follows();
    let connector = settings.connector()?;
    let topology = settings.topology()?;
    super::check_topics(&args.topics)?;
    let conn = connector.shared().await?;
    let topics = super::topics_or_default(&conn, settings, &args.topics).await?;
    let streams: Vec<String> = topics
        .iter()
        .flat_map(|t| topology.topic_streams(t))
        .collect();
    // Not following: a read that finds nothing new means we are caught up,
    // so it need not wait (XREAD BLOCK 0 would wait forever; 1 ms is the least).
    let block = if follow {
        FOLLOW_BLOCK
    } else {
        Duration::from_millis(1)
    };
    let mut tail = Tail::new(
        connector.dedicated(block).await?,
        streams,
        args.from_start,
        block,
    );
    let shutdown = super::shutdown_on_signal();
    let mut remaining = args.count;
    loop {
        let want = remaining.map_or(READ_COUNT, |r| r.min(READ_COUNT as u64) as usize);
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            batch = tail.next_batch(want) => batch?,
        };
        if batch.is_empty() {
            if follow {
                continue;
            }
            return Ok(());
        }
        let take = remaining.map_or(batch.len(), |r| batch.len().min(r as usize));
        let lines: Vec<Value> = batch.iter().take(take).map(entry_json).collect();
        output::json_lines(&lines)?;
        if let Some(r) = remaining.as_mut() {
            *r -= take as u64;
            if *r == 0 {
                return Ok(());
            }
        }
    }
}

/// `{stream, entry_id, event}` or `{stream, entry_id, error, error_kind}`.
fn entry_json(e: &TailEntry) -> Value {
    match &e.envelope {
        Ok(envelope) => json!({
            "stream": e.stream,
            "entry_id": e.entry_id,
            "event": envelope,
        }),
        Err(err) => json!({
            "stream": e.stream,
            "entry_id": e.entry_id,
            "error": err.to_string(),
            "error_kind": err.kind(),
        }),
    }
}
