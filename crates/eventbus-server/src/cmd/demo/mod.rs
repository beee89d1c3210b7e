//! `eventbus demo`: sample events of every catalogue type published to a
//! fresh namespace, consumed by two consumers of one group running
//! concurrently in this process, then a summary.
//!
//! Shutdown handshake: the consumers share one token. Once every published
//! id has been handled (or the timeout passes, or a signal arrives) the token
//! is cancelled; each consumer drains and acknowledges, and the namespace is
//! deleted unless `--keep`.

mod report;
mod samples;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus::{
    handler_fn, Consumer, ConsumerConfig, Delivery, Publisher, PublisherConfig, RedisConnector,
    Topology,
};
use redis::aio::ConnectionManager;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::report::Summary;
use super::CATALOGUE_TOPICS;
use crate::cli::DemoArgs;
use crate::config::Settings;
use crate::error::{CliError, Result};
use crate::output;

/// The demo's consumer group.
const GROUP: &str = "demo";
/// Events per pipelined publish.
const PUBLISH_CHUNK: usize = 250;

/// What the consumers saw, shared by their handlers.
#[derive(Default)]
struct Seen {
    /// Deliveries per event id.
    by_id: HashMap<Uuid, u64>,
    /// Deliveries per consumer name.
    by_consumer: BTreeMap<String, u64>,
    /// Deliveries per (topic, partition).
    by_partition: BTreeMap<(String, u32), u64>,
}

/// Runs `eventbus demo`.
pub(crate) async fn run(args: DemoArgs, settings: &Settings) -> Result<()> {
    let suffix = Uuid::new_v4().simple().to_string();
    let topology = Topology::new(format!("demo-{}", &suffix[..8]), settings.partitions)?;
    let connector = settings.connector()?;
    let conn = connector.shared().await?;
    let interrupted = super::shutdown_on_signal();

    let outcome = run_in(&args, &connector, &conn, &topology, &interrupted).await;

    let cleanup = if args.keep {
        eprintln!(
            "eventbus: kept namespace {ns}; look at it with `EVENT_BUS_NAMESPACE={ns} eventbus streams`",
            ns = topology.namespace()
        );
        Ok(0)
    } else {
        delete_namespace(&conn, &topology).await
    };
    let mut summary = outcome?;
    summary.deleted_keys = cleanup?;
    summary.kept = args.keep;
    if args.json {
        output::json_line(&summary)
    } else {
        output::write_stdout(summary.to_text().as_bytes())
    }
}

async fn run_in(
    args: &DemoArgs,
    connector: &RedisConnector,
    conn: &ConnectionManager,
    topology: &Topology,
    interrupted: &CancellationToken,
) -> Result<Summary> {
    let per_type = usize::try_from(args.events_per_type).unwrap_or(50);
    let events = samples::generate(per_type, &mut rand::rng());
    let published_ids: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    let seen = Arc::new(Mutex::new(Seen::default()));

    // Two consumers, one group, concurrently. Reads of at most 64 entries per
    // stream keep one consumer from taking everything the other could share.
    let stop = interrupted.child_token();
    let mut consumers = JoinSet::new();
    let mut names = Vec::new();
    for n in 1..=2 {
        let mut config = ConsumerConfig::new(GROUP, CATALOGUE_TOPICS);
        let name = format!("demo-consumer-{n}");
        config.consumer_name = Some(name.clone());
        config.concurrency = 32;
        config.read_count = 64;
        config.block = Duration::from_millis(200);
        config.shutdown_timeout = Duration::from_secs(10);
        let seen = seen.clone();
        let handler = handler_fn(move |d: Delivery| {
            let seen = seen.clone();
            async move {
                let mut s = seen.lock().expect("seen poisoned");
                *s.by_id.entry(d.envelope.id).or_default() += 1;
                *s.by_consumer.entry(d.consumer).or_default() += 1;
                *s.by_partition.entry((d.topic, d.partition)).or_default() += 1;
                Ok(())
            }
        });
        let consumer = Consumer::new(connector.clone(), topology.clone(), config, handler)?;
        names.push(name);
        consumers.spawn(consumer.run(stop.clone()));
    }

    let started = Instant::now();
    let publisher =
        Publisher::connect(connector, topology.clone(), PublisherConfig::default()).await?;
    let mut batches = 0;
    for chunk in events.chunks(PUBLISH_CHUNK) {
        publisher.publish_batch(chunk).await?;
        batches += 1;
    }
    let publish_time = started.elapsed();
    tracing::info!(
        events = events.len(),
        ?publish_time,
        "demo events published"
    );

    // Wait until every published id was handled by one of the consumers.
    let deadline = tokio::time::Instant::now() + args.timeout;
    let waited = loop {
        let missing = {
            let s = seen.lock().expect("seen poisoned");
            published_ids
                .iter()
                .filter(|id| !s.by_id.contains_key(id))
                .count()
        };
        if missing == 0 {
            break Ok(started.elapsed());
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(CliError::DemoIncomplete {
                missing,
                published: published_ids.len(),
                timeout: args.timeout,
            });
        }
        tokio::select! {
            _ = interrupted.cancelled() => break Err(CliError::Interrupted("demo")),
            ended = consumers.join_next() => {
                // A consumer stopped before the end: report why.
                if let Some(Ok(Err(e))) = ended {
                    stop.cancel();
                    return Err(e.into());
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    };

    stop.cancel();
    while let Some(ended) = consumers.join_next().await {
        if let Ok(Err(e)) = ended {
            tracing::warn!(error = %e, "demo consumer stopped with an error");
        }
    }
    let consume_time = waited?;
    let total_time = started.elapsed();

    let pending = pending_after(conn, topology).await?;
    let seen = seen.lock().expect("seen poisoned");
    Ok(Summary::new(report::Inputs {
        namespace: topology.namespace().to_owned(),
        partitions: topology.partitions(),
        group: GROUP.to_owned(),
        events: &events,
        batches,
        consumers: names,
        by_id: &seen.by_id,
        by_consumer: &seen.by_consumer,
        by_partition: &seen.by_partition,
        pending,
        publish_time,
        consume_time,
        total_time,
    }))
}

/// Entries still pending for the demo group once the consumers stopped (0 when
/// every acknowledgement was flushed).
async fn pending_after(conn: &ConnectionManager, topology: &Topology) -> Result<u64> {
    let topics = CATALOGUE_TOPICS.iter().map(|t| (*t).to_owned()).collect();
    let stats = eventbus::admin::partition_stats(conn, topology, &topics).await?;
    Ok(stats
        .iter()
        .flat_map(|p| &p.groups)
        .filter(|g| g.name == GROUP)
        .map(|g| g.pending)
        .sum())
}

/// Deletes every key of the namespace (`SCAN MATCH <ns>:*` then `UNLINK`).
async fn delete_namespace(conn: &ConnectionManager, topology: &Topology) -> Result<u64> {
    let pattern = format!("{}:*", topology.namespace());
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn.clone())
            .await
            .map_err(eventbus::Error::from)?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn.clone())
                .await
                .map_err(eventbus::Error::from)?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}
