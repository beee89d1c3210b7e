//! The acker task of the unordered runtime: collects acknowledgements and
//! sends them as one pipelined `XACK` per stream per batch.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::connection::{backoff, RedisConn, SlotPipeline};
use crate::error::is_transient_redis;
use crate::runtime::ConsumerStats;

pub(super) async fn run_acker(
    conn: RedisConn,
    group: String,
    streams: Vec<String>,
    mut rx: mpsc::UnboundedReceiver<(usize, String)>,
    batch: usize,
    stats: Arc<ConsumerStats>,
) {
    let mut buf = Vec::with_capacity(batch);
    loop {
        if rx.recv_many(&mut buf, batch).await == 0 {
            return; // every sender is gone and the queue is empty
        }
        let mut by_stream: HashMap<usize, Vec<&str>> = HashMap::new();
        for (idx, id) in &buf {
            by_stream.entry(*idx).or_default().push(id);
        }
        let mut pipe = SlotPipeline::new(&conn);
        for (idx, ids) in &by_stream {
            let mut xack = redis::cmd("XACK");
            xack.arg(&streams[*idx]).arg(&group).arg(ids);
            pipe.add_ignored(&streams[*idx], xack);
        }
        let mut attempt = 0;
        loop {
            match pipe.query::<()>(&conn).await {
                Ok(_) => {
                    stats.acked.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    break;
                }
                Err(e) if is_transient_redis(&e) && attempt < 20 => {
                    attempt += 1;
                    let delay = backoff(attempt, Duration::from_millis(50), Duration::from_secs(2));
                    tracing::warn!(error = %e, attempt, "ack failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    // The entries stay pending and are delivered again: at least once.
                    tracing::error!(error = %e, entries = buf.len(), "ack failed; entries will be redelivered");
                    break;
                }
            }
        }
        buf.clear();
    }
}
