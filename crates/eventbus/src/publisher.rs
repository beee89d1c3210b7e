//! Publishing envelopes to their partition streams.
//!
//! A batch is one pipelined round trip: one `XADD` per event (with optional
//! approximate trimming), plus an `SADD` that registers any topic this
//! process has not published to before. A write whose outcome is unknown
//! (connection lost, timeout) is retried with backoff: a retry may write a
//! duplicate entry, which consumers tolerate (the event id is unchanged and
//! inboxes deduplicate on it); a lost event is not acceptable.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::connection::RedisConn;

use crate::catalog::Catalog;
use crate::connection::{backoff, RedisConnector, SlotPipeline};
use crate::envelope::Envelope;
use crate::error::is_transient_redis;
use crate::topology::{validate_event_type, Topology};
use crate::{Error, Result};

/// Publisher settings.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Approximate cap on each stream's length (`XADD MAXLEN ~ n`). `None`
    /// (the default) never trims: trimming can drop entries a group has not
    /// acknowledged yet, so turn it on only with a cap far above any lag.
    pub max_len: Option<usize>,
    /// How long to keep retrying a write whose outcome is unknown before
    /// giving up with the error.
    pub retry_for: Duration,
    /// Refuse events whose encoded size is larger than this many bytes.
    pub max_event_bytes: usize,
    /// Refuse due times further ahead than this (`EVENT_BUS_MAX_DELAY`).
    /// Default 30 days.
    pub max_delay: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            max_len: None,
            retry_for: Duration::from_secs(30),
            max_event_bytes: 1024 * 1024,
            max_delay: crate::schedule::DEFAULT_MAX_DELAY,
        }
    }
}

impl PublisherConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.max_len == Some(0) {
            return Err(Error::Config("max_len must be positive when set".into()));
        }
        if self.max_event_bytes == 0 {
            return Err(Error::Config("max_event_bytes must be positive".into()));
        }
        Ok(())
    }
}

/// Where an event was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The stream key.
    pub stream: String,
    /// The partition.
    pub partition: u32,
    /// The stream entry id Redis assigned (empty while scheduled).
    pub entry_id: String,
    /// When the event is due, if it was scheduled for later instead of
    /// added to the stream now (see [`Publisher::publish_at`]).
    pub deliver_at: Option<DateTime<Utc>>,
}

/// Publishes envelopes to Redis. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Publisher {
    conn: RedisConn,
    topology: Topology,
    config: PublisherConfig,
    known_topics: std::sync::Arc<Mutex<HashSet<String>>>,
    /// When set, every event is validated against it before it is sent.
    catalog: Option<std::sync::Arc<Catalog>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topology", &self.topology)
            .field("config", &self.config)
            .field("validates", &self.catalog.is_some())
            .finish()
    }
}

impl Publisher {
    /// Connects a publisher.
    pub async fn connect(
        connector: &RedisConnector,
        topology: Topology,
        config: PublisherConfig,
    ) -> Result<Self> {
        config.validate()?;
        let conn = connector.shared().await?;
        Ok(Publisher {
            conn,
            topology,
            config,
            known_topics: Default::default(),
            catalog: None,
        })
    }

    /// Validates every event against `catalog` before sending it (see
    /// [`Catalog::validate`]): an unknown type or version, invalid data or a
    /// key that differs from the data's partition-key field is refused with
    /// [`Error::Schema`], listing every error, and nothing of the batch is sent.
    pub fn with_catalog(mut self, catalog: std::sync::Arc<Catalog>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// The topology events are routed by.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Checks that an event can be published: a `topic.name` type, a
    /// non-empty key, an encoded size within the limit and, with a catalogue,
    /// a valid event.
    pub fn check(&self, event: &Envelope) -> Result<()> {
        self.encode_checked(event).map(|_| ())
    }

    /// Checks an event and returns its encoded fields (encoded once).
    fn encode_checked(&self, event: &Envelope) -> Result<Vec<(&'static str, String)>> {
        validate_event_type(&event.event_type)?;
        if event.key.is_empty() {
            return Err(Error::InvalidEvent(format!(
                "event {} of type {} has an empty key",
                event.id, event.event_type
            )));
        }
        if let Some(catalog) = &self.catalog {
            catalog.validate(event)?;
        }
        let fields = event.to_fields();
        let size: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > self.config.max_event_bytes {
            return Err(Error::InvalidEvent(format!(
                "event {} is {size} bytes, over the limit of {} bytes",
                event.id, self.config.max_event_bytes
            )));
        }
        Ok(fields)
    }

    /// Publishes one event.
    pub async fn publish(&self, event: &Envelope) -> Result<Published> {
        let mut out = self.publish_batch(std::slice::from_ref(event)).await?;
        Ok(out.remove(0))
    }

    /// Publishes a typed event: its envelope is built from the type
    /// ([`Event::to_envelope`](crate::Event::to_envelope): type, version,
    /// key from the partition-key field, `data` as JSON), then published
    /// like [`Publisher::publish`], validated when the publisher has a
    /// catalogue.
    pub async fn send<E: crate::events::Event>(&self, event: &E) -> Result<Published> {
        self.publish(&event.to_envelope()?).await
    }

    /// Publishes a batch in one pipelined round trip. Every event is checked
    /// first; if one is refused, nothing is sent.
    ///
    /// With tracing on ([`crate::telemetry`]) each event gets a PRODUCER
    /// span (child of the caller's current span, or of the `traceparent`
    /// the event carries) whose context is written into the entry.
    pub async fn publish_batch(&self, events: &[Envelope]) -> Result<Vec<Published>> {
        self.publish_batch_at(events, &[]).await
    }

    /// Publishes one event due at `deliver_at`: a time not after now is
    /// published at once; a later one waits in its partition's scheduled
    /// set until a [`Scheduler`](crate::schedule::Scheduler) moves it to the
    /// stream, with the same event id (`docs/scheduled.md`). A time more
    /// than [`PublisherConfig::max_delay`] ahead is refused.
    pub async fn publish_at(
        &self,
        event: &Envelope,
        deliver_at: DateTime<Utc>,
    ) -> Result<Published> {
        let mut out = self
            .publish_batch_at(std::slice::from_ref(event), &[Some(deliver_at)])
            .await?;
        Ok(out.remove(0))
    }

    /// Publishes a batch, `deliver_at[i]` the due time of `events[i]`
    /// (`None`: now), like [`Publisher::publish_at`] for each event, in one
    /// pipelined round trip. Every event and time is checked first; if one
    /// is refused, nothing is sent.
    ///
    /// With tracing on, each event gets a PRODUCER span like
    /// [`Publisher::publish_batch`].
    pub async fn publish_batch_at(
        &self,
        events: &[Envelope],
        deliver_at: &[Option<DateTime<Utc>>],
    ) -> Result<Vec<Published>> {
        crate::telemetry::produce(
            "send",
            events,
            |e| {
                self.topology
                    .stream_key(e.topic(), self.topology.partition_of(&e.key))
            },
            async |events: &[Envelope]| {
                self.publish_batch_within(events, deliver_at, self.config.retry_for)
                    .await
            },
        )
        .await
    }

    /// [`Publisher::publish_batch_at`] in a single attempt, like
    /// [`Publisher::publish_batch_once`].
    pub async fn publish_batch_at_once(
        &self,
        events: &[Envelope],
        deliver_at: &[Option<DateTime<Utc>>],
    ) -> Result<Vec<Published>> {
        self.publish_batch_within(events, deliver_at, Duration::ZERO)
            .await
    }

    /// Checks a due time: at most [`PublisherConfig::max_delay`] ahead.
    /// Past times are fine (delivered at once).
    pub fn check_deliver_at(&self, deliver_at: DateTime<Utc>) -> Result<()> {
        crate::schedule::check_deliver_at(deliver_at, self.config.max_delay)
            .map_err(Error::InvalidEvent)
    }

    /// Publishes a batch in a single attempt (no retry on an unknown
    /// outcome): for a caller that retries itself (the relay rolls back and
    /// claims again) or must find out whether Redis refuses these events.
    /// The events are sent as they are, with no span of their own (the
    /// relay makes its own).
    pub async fn publish_batch_once(&self, events: &[Envelope]) -> Result<Vec<Published>> {
        self.publish_batch_within(events, &[], Duration::ZERO).await
    }

    /// True when Redis answers a `PING`.
    ///
    /// A refused event may have closed the connection (Redis drops a client
    /// that sends a value over `proto-max-bulk-len`); the shared connection
    /// reconnects on the next command. So a failed `PING` is tried again
    /// twice, briefly, before Redis counts as unreachable: otherwise one
    /// refused event would look like an outage, now and then, at random.
    pub async fn is_reachable(&self) -> bool {
        self.answers_soon(redis::cmd("PING")).await
    }

    /// True when Redis takes a small write in `stream`'s hash slot: an
    /// entry in `<stream>:relay-probe` (capped at one entry). Tells a
    /// refusal of one event (too large for the server, say) from a server
    /// that refuses every write (out of memory, read-only, no permission).
    /// Tried again like [`Publisher::is_reachable`].
    pub async fn takes_writes_near(&self, stream: &str) -> bool {
        let mut probe = redis::cmd("XADD");
        probe
            .arg(format!("{stream}:relay-probe"))
            .arg("MAXLEN")
            .arg(1)
            .arg("*")
            .arg("probe")
            .arg("1");
        self.answers_soon(probe).await
    }

    /// True when `cmd` succeeds within three tries (0, 100 and 400 ms
    /// after a failure): time for the shared connection to reconnect.
    async fn answers_soon(&self, cmd: redis::Cmd) -> bool {
        for pause in [0, 100, 400] {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let reply: redis::RedisResult<redis::Value> =
                cmd.query_async(&mut self.conn.clone()).await;
            if reply.is_ok() {
                return true;
            }
        }
        false
    }

    /// This publisher's settings.
    pub fn config(&self) -> &PublisherConfig {
        &self.config
    }

    /// `deliver_at`: empty (all now) or one due time per event.
    async fn publish_batch_within(
        &self,
        events: &[Envelope],
        deliver_at: &[Option<DateTime<Utc>>],
        retry_for: Duration,
    ) -> Result<Vec<Published>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        if !deliver_at.is_empty() && deliver_at.len() != events.len() {
            return Err(Error::InvalidInput(format!(
                "{} due times for {} events",
                deliver_at.len(),
                events.len()
            )));
        }
        let encoded = events
            .iter()
            .map(|e| self.encode_checked(e))
            .collect::<Result<Vec<_>>>()?;
        // Due times not after now are published at once.
        let now = Utc::now();
        let mut later: Vec<Option<DateTime<Utc>>> = Vec::new();
        for at in deliver_at.iter().flatten() {
            self.check_deliver_at(*at)?;
        }
        if deliver_at.iter().any(|at| at.is_some_and(|t| t > now)) {
            later = deliver_at
                .iter()
                .map(|at| at.filter(|t| *t > now))
                .collect();
        }
        let routes: Vec<(String, u32)> = events
            .iter()
            .map(|e| {
                let p = self.topology.partition_of(&e.key);
                (self.topology.stream_key(e.topic(), p), p)
            })
            .collect();
        let new_topics = self.unseen_topics(events);

        // One pipeline on a server; one per partition (hash slot) on a cluster.
        let mut pipe = SlotPipeline::new(&self.conn);
        let mut earliest = BTreeMap::new();
        for (i, (fields, (stream, _))) in encoded.iter().zip(&routes).enumerate() {
            match later.get(i).copied().flatten() {
                None => pipe.add(stream, xadd(stream, self.config.max_len, fields)),
                Some(at) => {
                    let due = crate::schedule::due_ms(at);
                    let first = earliest.entry(stream.clone()).or_insert(due);
                    *first = (*first).min(due);
                    pipe.add(
                        stream,
                        crate::schedule::schedule_cmd(
                            stream,
                            due,
                            &events[i].id.to_string(),
                            fields,
                        ),
                    )
                }
            };
        }
        if !new_topics.is_empty() {
            let topics_key = self.topology.topics_key();
            let mut sadd = redis::cmd("SADD");
            sadd.arg(&topics_key).arg(&new_topics);
            pipe.add_ignored(&topics_key, sadd);
        }

        let started = tokio::time::Instant::now();
        let mut attempt = 0u32;
        let ids: Vec<String> = loop {
            match pipe.query::<String>(&self.conn).await {
                Ok(ids) => break ids,
                Err(e) if is_transient_redis(&e) && started.elapsed() < retry_for => {
                    let delay = backoff(attempt, Duration::from_millis(50), Duration::from_secs(2));
                    tracing::warn!(error = %e, attempt, ?delay, events = events.len(), "publish failed, retrying");
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    self.forget_topics(&new_topics);
                    return Err(e.into());
                }
            }
        };
        if !earliest.is_empty() {
            self.lower_hints(&earliest, started, retry_for).await?;
        }
        Ok(routes
            .into_iter()
            .zip(ids)
            .enumerate()
            .map(|(i, ((stream, partition), entry_id))| {
                let deliver_at = later.get(i).copied().flatten();
                Published {
                    stream,
                    partition,
                    entry_id: if deliver_at.is_some() {
                        String::new()
                    } else {
                        entry_id
                    },
                    deliver_at,
                }
            })
            .collect())
    }

    /// Lowers the scheduler's hint for streams that got scheduled events:
    /// after the events, so a scheduler that rewrote the hint meanwhile
    /// re-reads the sets and sees them (see `schedule`'s docs). Retried like
    /// the batch (the write is idempotent); if it still fails, the
    /// schedulers' sweep finds the events within `sweep_every`.
    async fn lower_hints(
        &self,
        earliest: &BTreeMap<String, i64>,
        started: tokio::time::Instant,
        retry_for: Duration,
    ) -> Result<()> {
        let mut attempt = 0u32;
        loop {
            match crate::schedule::lower_hints(&self.conn, &self.topology, earliest).await {
                Ok(()) => return Ok(()),
                Err(e) if is_transient_redis(&e) && started.elapsed() < retry_for => {
                    attempt += 1;
                    tokio::time::sleep(backoff(
                        attempt,
                        Duration::from_millis(50),
                        Duration::from_secs(2),
                    ))
                    .await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "events scheduled, but the scheduler hint was not updated; the next sweep finds them");
                    return Ok(());
                }
            }
        }
    }

    fn unseen_topics(&self, events: &[Envelope]) -> Vec<String> {
        let mut known = self.known_topics.lock().expect("topic cache poisoned");
        let mut out = Vec::new();
        for e in events {
            if known.insert(e.topic().to_owned()) {
                out.push(e.topic().to_owned());
            }
        }
        out
    }

    fn forget_topics(&self, topics: &[String]) {
        let mut known = self.known_topics.lock().expect("topic cache poisoned");
        for t in topics {
            known.remove(t);
        }
    }
}

/// One `XADD` with its buffers sized up front: growing them argument by
/// argument (a realloc and copy each time) was a tenth of the cost of a
/// batch (see docs/benchmarks.md, "Hot spots").
fn xadd(stream: &str, max_len: Option<usize>, fields: &[(&'static str, String)]) -> redis::Cmd {
    let data: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
    let mut cmd = redis::Cmd::with_capacity(2 * fields.len() + 6, data + stream.len() + 32);
    cmd.arg("XADD").arg(stream);
    if let Some(n) = max_len {
        cmd.arg("MAXLEN").arg("~").arg(n);
    }
    cmd.arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(v);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xadd_has_every_field_in_order() {
        let fields = vec![("v", "1".to_owned()), ("data", "{\"a\":1}".to_owned())];
        let plain = xadd("ns:{t:0}", None, &fields);
        let args: Vec<Vec<u8>> = plain
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => b"<cursor>".to_vec(),
            })
            .collect();
        let expected: Vec<&[u8]> = vec![
            b"XADD",
            b"ns:{t:0}",
            b"*",
            b"v",
            b"1",
            b"data",
            b"{\"a\":1}",
        ];
        assert_eq!(args, expected);
        let capped = xadd("s", Some(100), &fields);
        assert_eq!(capped.args_iter().count(), 10); // XADD s MAXLEN ~ 100 * + 2 pairs
    }
}
