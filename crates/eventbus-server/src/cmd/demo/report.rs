//! The demo's summary: what was published, who consumed what, how long it took.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::time::Duration;

use eventbus::Envelope;
use serde::Serialize;
use uuid::Uuid;

use super::samples::EVENT_TYPES;

/// What the summary is computed from.
pub(super) struct Inputs<'a> {
    pub(super) namespace: String,
    pub(super) schema: String,
    pub(super) partitions: u32,
    pub(super) group: String,
    pub(super) events: &'a [Envelope],
    pub(super) batches: usize,
    pub(super) consumers: Vec<String>,
    pub(super) by_id: &'a HashMap<Uuid, u64>,
    pub(super) by_consumer: &'a BTreeMap<String, u64>,
    pub(super) by_partition: &'a BTreeMap<(String, u32), u64>,
    pub(super) pending: u64,
    pub(super) outbox_backlog: i64,
    pub(super) relay_published: u64,
    pub(super) duplicates_published: u64,
    pub(super) duplicates_skipped: u64,
    pub(super) poison: PoisonStory,
    pub(super) result_rows: i64,
    pub(super) result_distinct: i64,
    pub(super) publish_time: Duration,
    pub(super) consume_time: Duration,
    pub(super) total_time: Duration,
}

/// The demo's failing event: retried, dead-lettered, replayed, handled.
#[derive(Debug, Serialize)]
pub(super) struct PoisonStory {
    pub(super) event_id: Uuid,
    pub(super) event_type: String,
    /// Deliveries before it was dead-lettered.
    pub(super) attempts: i32,
    pub(super) dead_letter_id: Option<Uuid>,
    pub(super) error: String,
    pub(super) replayed: bool,
    pub(super) handled_after_replay: bool,
}

/// Published events of one type.
#[derive(Debug, Serialize)]
pub(super) struct TypeCount {
    #[serde(rename = "type")]
    event_type: String,
    count: u64,
}

/// The demo's outcome, printed as text or JSON.
#[derive(Debug, Serialize)]
pub(super) struct Summary {
    namespace: String,
    schema: String,
    partitions_per_topic: u32,
    group: String,
    published: u64,
    published_by_type: Vec<TypeCount>,
    publish_batches: usize,
    /// Deliveries to handlers, redeliveries included.
    consumed: u64,
    /// Distinct event ids handled.
    distinct: u64,
    /// Deliveries of an id already handled.
    duplicates: u64,
    consumed_by_consumer: BTreeMap<String, u64>,
    /// Topic → handled count per partition (index = partition).
    consumed_by_partition: BTreeMap<String, Vec<u64>>,
    pending_after_shutdown: u64,
    /// Outbox rows still waiting at the end (0: drained).
    outbox_backlog_after: i64,
    /// Events the relay published.
    relay_published: u64,
    /// Events published a second time straight to Redis (a simulated relay crash).
    duplicates_published: u64,
    /// Deliveries the inboxes skipped as already handled.
    duplicates_skipped: u64,
    /// Result rows written by handlers (one per event when effects happen once).
    result_rows: i64,
    /// Distinct events among the result rows.
    result_distinct_events: i64,
    /// The failing event's story.
    retry_and_dead_letter: PoisonStory,
    publish_ms: u128,
    /// From the first publish until every event was handled.
    consume_ms: u128,
    total_ms: u128,
    publish_events_per_sec: u64,
    end_to_end_events_per_sec: u64,
    /// Keys deleted at the end (0 with `--keep`).
    pub(super) deleted_keys: u64,
    /// Whether the namespace was kept.
    pub(super) kept: bool,
}

fn per_sec(n: u64, d: Duration) -> u64 {
    (n as f64 / d.as_secs_f64().max(1e-6)).round() as u64
}

impl Summary {
    pub(super) fn new(i: Inputs<'_>) -> Self {
        let published = i.events.len() as u64;
        let published_by_type = EVENT_TYPES
            .iter()
            .map(|t| TypeCount {
                event_type: (*t).to_owned(),
                count: i.events.iter().filter(|e| e.event_type == *t).count() as u64,
            })
            .collect();
        let consumed: u64 = i.by_id.values().sum();
        let distinct = i.by_id.len() as u64;
        let mut consumed_by_consumer: BTreeMap<String, u64> =
            i.consumers.iter().map(|c| (c.clone(), 0)).collect();
        consumed_by_consumer.extend(i.by_consumer.iter().map(|(k, v)| (k.clone(), *v)));
        let mut consumed_by_partition: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for t in EVENT_TYPES {
            let topic = eventbus::topic_of(t).to_owned();
            consumed_by_partition
                .entry(topic)
                .or_insert_with(|| vec![0; i.partitions as usize]);
        }
        for ((topic, partition), n) in i.by_partition {
            let row = consumed_by_partition
                .entry(topic.clone())
                .or_insert_with(|| vec![0; i.partitions as usize]);
            if let Some(slot) = row.get_mut(*partition as usize) {
                *slot += n;
            }
        }
        Summary {
            namespace: i.namespace,
            schema: i.schema,
            outbox_backlog_after: i.outbox_backlog,
            relay_published: i.relay_published,
            duplicates_published: i.duplicates_published,
            duplicates_skipped: i.duplicates_skipped,
            result_rows: i.result_rows,
            result_distinct_events: i.result_distinct,
            retry_and_dead_letter: i.poison,
            partitions_per_topic: i.partitions,
            group: i.group,
            published,
            published_by_type,
            publish_batches: i.batches,
            consumed,
            distinct,
            duplicates: consumed - distinct,
            consumed_by_consumer,
            consumed_by_partition,
            pending_after_shutdown: i.pending,
            publish_ms: i.publish_time.as_millis(),
            consume_ms: i.consume_time.as_millis(),
            total_ms: i.total_time.as_millis(),
            publish_events_per_sec: per_sec(published, i.publish_time),
            end_to_end_events_per_sec: per_sec(published, i.consume_time),
            deleted_keys: 0,
            kept: false,
        }
    }

    /// The human-readable summary.
    pub(super) fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = self.write_text(&mut s);
        s
    }

    fn write_text(&self, s: &mut String) -> std::fmt::Result {
        writeln!(
            s,
            "eventbus demo: namespace {}, schema {}, {} partitions per topic, group \"{}\"\n",
            self.namespace, self.schema, self.partitions_per_topic, self.group
        )?;
        writeln!(
            s,
            "Committed {} events ({} types) to the outbox in {} transactions, {} ms",
            self.published,
            self.published_by_type.len(),
            self.publish_batches,
            self.publish_ms
        )?;
        for t in &self.published_by_type {
            writeln!(s, "  {:<32} {:>6}", t.event_type, t.count)?;
        }
        writeln!(
            s,
            "\nRelay published {} events; outbox backlog at the end: {}{}",
            self.relay_published,
            self.outbox_backlog_after,
            if self.outbox_backlog_after == 0 {
                " (drained)"
            } else {
                ""
            }
        )?;
        writeln!(
            s,
            "\nHandled {} events through the inbox: {} distinct, {} handled twice",
            self.consumed, self.distinct, self.duplicates
        )?;
        writeln!(
            s,
            "  duplicates published again to Redis (as after a relay crash): {}, skipped by the inbox: {}",
            self.duplicates_published, self.duplicates_skipped
        )?;
        writeln!(
            s,
            "  result rows: {} for {} distinct events{}",
            self.result_rows,
            self.result_distinct_events,
            if self.result_rows == self.result_distinct_events {
                " (each effect exactly once)"
            } else {
                ""
            }
        )?;
        let p = &self.retry_and_dead_letter;
        writeln!(
            s,
            "  failing event {} ({}): tried {} times, dead-lettered ({}){}{}",
            p.event_id,
            p.event_type,
            p.attempts,
            p.error,
            if p.replayed {
                ", replayed after the fix"
            } else {
                ""
            },
            if p.handled_after_replay {
                ", then handled"
            } else {
                ""
            }
        )?;
        writeln!(s, "  by consumer:")?;
        for (name, n) in &self.consumed_by_consumer {
            writeln!(s, "    {name:<28} {n:>6}")?;
        }
        writeln!(
            s,
            "  by partition (columns are partitions 0..{}):",
            self.partitions_per_topic.saturating_sub(1)
        )?;
        let width = self
            .consumed_by_partition
            .values()
            .flatten()
            .map(|n| n.to_string().len())
            .max()
            .unwrap_or(1);
        for (topic, row) in &self.consumed_by_partition {
            let cells: Vec<String> = row.iter().map(|n| format!("{n:>width$}")).collect();
            writeln!(s, "    {topic:<12} {}", cells.join(" "))?;
        }
        writeln!(
            s,
            "  pending after shutdown: {}",
            self.pending_after_shutdown
        )?;
        writeln!(
            s,
            "\nTime: {} ms in all; every event but the failing one handled {} ms after the first commit",
            self.total_ms, self.consume_ms
        )?;
        writeln!(
            s,
            "Throughput: {} events/s published, {} events/s end to end",
            self.publish_events_per_sec, self.end_to_end_events_per_sec
        )?;
        if self.kept {
            writeln!(s, "Namespace {} kept.", self.namespace)
        } else {
            writeln!(
                s,
                "Namespace {} deleted ({} keys) and schema {} dropped; pass --keep to keep them.",
                self.namespace, self.deleted_keys, self.schema
            )
        }
    }
}
