//! Queries and actions on dead-letter records, in PostgreSQL or in Redis.
//!
//! The actions (replay, discard, purge) are written once here; a backend
//! only lists, reads and changes records (`store_pg`, `store_redis`).

use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::store_pg::PgRecords;
use super::store_redis::RedisRecords;
use super::{AuditEntry, DeadLetter, DeadLetterStatus};
use crate::connection::RedisConn;
use crate::db::DbSchema;
use crate::envelope::Envelope;
use crate::handler::ErrorClass;
use crate::topology::Topology;
use crate::{Error, Result};

/// 0000-01-01T00:00:00Z in seconds since 1970.
const YEAR_0000: i64 = -62_167_219_200;

/// Which dead letters an action applies to. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// Exactly these ids (when not empty).
    pub ids: Vec<Uuid>,
    /// Failed by this group.
    pub group: Option<String>,
    /// Of this event type.
    pub event_type: Option<String>,
    /// With this partition key.
    pub key: Option<String>,
    /// Of this error class.
    pub error_class: Option<ErrorClass>,
    /// Last failed at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// In this status. Listing defaults to any; replay and discard act on `new` only.
    pub status: Option<DeadLetterStatus>,
    /// At most this many (default 100 for listing, all for actions).
    pub limit: Option<i64>,
    /// Skip this many (pagination), in last-failure order.
    pub offset: Option<i64>,
}

impl DeadLetterFilter {
    /// True when nothing narrows the selection.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
            && self.group.is_none()
            && self.event_type.is_none()
            && self.key.is_none()
            && self.error_class.is_none()
            && self.since.is_none()
    }

    /// Refuses what is the caller's mistake, with [`Error::InvalidInput`]:
    /// U+0000 in the group, type or key (PostgreSQL refuses to compare
    /// such text; the Redis records are refused it alike, so that both
    /// stores answer the same), a `since` outside the years 0000-9999 (no
    /// record is that old or young, and PostgreSQL cannot compare years
    /// before 4713 BC).
    pub fn validate(&self) -> Result<()> {
        let texts = [
            ("group", &self.group),
            ("type", &self.event_type),
            ("key", &self.key),
        ];
        if let Some((name, _)) = texts
            .iter()
            .find(|(_, v)| v.as_deref().is_some_and(|v| v.contains('\0')))
        {
            return Err(Error::InvalidInput(format!(
                "the {name} filter holds U+0000 (filters are text without it; select such a dead letter by its id)"
            )));
        }
        if let Some(since) = self.since {
            if !(0..=9999).contains(&since.year()) {
                return Err(Error::InvalidInput(format!(
                    "since {} is outside the years 0000-9999",
                    since.to_rfc3339()
                )));
            }
        }
        Ok(())
    }

    /// The page size: `limit`, 100 by default, at most 10,000.
    pub(crate) fn limit(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, 10_000)
    }

    /// How many to skip: `offset`, 0 by default.
    pub(crate) fn offset(&self) -> i64 {
        self.offset.unwrap_or(0).max(0)
    }
}

/// How a replay runs.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Only report what would be replayed.
    pub dry_run: bool,
    /// At most this many events per second.
    pub rate_per_sec: Option<f64>,
    /// Send to this group's replay stream instead of the group that failed it.
    pub to_group: Option<String>,
    /// Who asked (recorded in the audit trail).
    pub actor: String,
}

/// What a replay did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplayReport {
    /// The dead letters selected.
    pub selected: Vec<Uuid>,
    /// How many were published again (0 on a dry run).
    pub replayed: usize,
    /// Whether it was a dry run.
    pub dry_run: bool,
}

/// Size and age of the dead-letter queue.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DlqDepth {
    /// Dead letters in status `new`.
    pub depth: i64,
    /// Age in seconds of the oldest `new` one.
    pub oldest_age_seconds: Option<f64>,
    /// Dead letters (re)recorded in the last minute.
    pub last_minute: i64,
}

/// What an operator's action changes in a record: its status, and the
/// entry added to its history.
#[derive(Debug, Clone)]
pub(crate) struct Mark {
    pub(crate) status: DeadLetterStatus,
    /// `replayed` or `discarded`.
    pub(crate) action: &'static str,
    pub(crate) detail: serde_json::Value,
}

/// Where the records are.
#[derive(Debug, Clone)]
enum Backend {
    /// `eventbus_dead_letters` and its audit trail.
    Postgres(PgRecords),
    /// Hashes beside `<namespace>:dead`, when there is no PostgreSQL.
    Redis(RedisRecords),
}

/// The dead-letter store: records in PostgreSQL, or in Redis when there is
/// no PostgreSQL, with the Redis connection replays go through. Both
/// backends list, filter, order, replay, discard and purge alike.
#[derive(Debug, Clone)]
pub struct DeadLetterStore {
    backend: Backend,
    topology: Topology,
    redis: RedisConn,
}

impl DeadLetterStore {
    /// A store in `schema`; replays go to `topology`'s replay streams.
    pub fn new(pool: PgPool, schema: DbSchema, topology: Topology, redis: RedisConn) -> Self {
        DeadLetterStore {
            backend: Backend::Postgres(PgRecords { pool, schema }),
            topology,
            redis,
        }
    }

    /// A store of the records a [`super::DeadLetterWriter`] without
    /// PostgreSQL keeps in Redis beside `topology`'s dead stream.
    pub fn in_redis(topology: Topology, redis: RedisConn) -> Self {
        DeadLetterStore {
            backend: Backend::Redis(RedisRecords::new(&topology, redis.clone())),
            topology,
            redis,
        }
    }

    /// True when the records are in PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Dead letters matching the filter, most recent failure first (ties:
    /// by id).
    pub async fn list(&self, f: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        f.validate()?;
        match &self.backend {
            Backend::Postgres(pg) => pg.list(f).await,
            Backend::Redis(r) => r.list(f).await,
        }
    }

    /// One dead letter and its history.
    pub async fn get(&self, id: Uuid) -> Result<Option<(DeadLetter, Vec<AuditEntry>)>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.get(id).await,
            Backend::Redis(r) => r.get(id).await,
        }
    }

    /// Depth, oldest age and last-minute rate of the queue.
    pub async fn depth(&self) -> Result<DlqDepth> {
        match &self.backend {
            Backend::Postgres(pg) => super::dlq_depth(&pg.pool, &pg.schema).await,
            Backend::Redis(r) => r.depth().await,
        }
    }

    /// Selects for an action: `new` dead letters matching the filter
    /// (explicit ids may also be `replayed` ones, to replay again).
    async fn select_for_action(&self, f: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let mut f = f.clone();
        if f.status.is_none() && f.ids.is_empty() {
            f.status = Some(DeadLetterStatus::New);
        }
        f.limit = Some(f.limit.unwrap_or(10_000));
        let mut selected = self.list(&f).await?;
        selected.retain(|d| d.status != "discarded");
        selected.reverse(); // oldest failure first
        Ok(selected)
    }

    /// Publishes the selected dead letters again, each to the replay stream
    /// of the group that failed it (or `to_group`), keeping the event id,
    /// and records the replay.
    pub async fn replay(&self, f: &DeadLetterFilter, opts: &ReplayOptions) -> Result<ReplayReport> {
        let mut selected = self.select_for_action(f).await?;
        // A row the relay could not publish is not an event a group failed:
        // it is fixed and inserted again, not replayed (docs/dead-letters.md).
        if let Some(dl) = selected.iter().find(|d| d.origin == "outbox") {
            if !f.ids.is_empty() {
                return Err(Error::InvalidEvent(format!(
                    "dead letter {} is an outbox row the relay could not publish ({}); it cannot be \
                     replayed: fix the row and INSERT it into the outbox again, then discard this one",
                    dl.id, dl.error_message
                )));
            }
        }
        selected.retain(|d| d.origin != "outbox");
        let ids: Vec<Uuid> = selected.iter().map(|d| d.id).collect();
        if opts.dry_run {
            return Ok(ReplayReport {
                selected: ids,
                replayed: 0,
                dry_run: true,
            });
        }
        let pause = opts
            .rate_per_sec
            .filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r));
        let mut replayed = 0;
        for dl in &selected {
            let mut envelope: Envelope =
                serde_json::from_value(dl.envelope.clone()).map_err(|e| {
                    Error::InvalidEvent(format!(
                        "dead letter {} holds no valid envelope: {e}",
                        dl.id
                    ))
                })?;
            envelope
                .headers
                .insert("eventbus-replay-of".into(), dl.id.to_string());
            envelope.headers.insert(
                "eventbus-replay-count".into(),
                (dl.replay_count + 1).to_string(),
            );
            let group = opts.to_group.clone().unwrap_or_else(|| dl.group.clone());
            let stream = self.topology.replay_stream(&group);
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&stream).arg("*");
            for (k, v) in envelope.to_fields() {
                cmd.arg(k).arg(v);
            }
            let _: String = cmd.query_async(&mut self.redis.clone()).await?;
            let mark = Mark {
                status: DeadLetterStatus::Replayed,
                action: "replayed",
                detail: serde_json::json!({"to_group": group, "stream": stream, "by": opts.actor}),
            };
            self.mark(dl.id, mark).await?;
            replayed += 1;
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
            }
        }
        Ok(ReplayReport {
            selected: ids,
            replayed,
            dry_run: false,
        })
    }

    /// Marks the selected `new` dead letters discarded. Returns their ids.
    pub async fn discard(
        &self,
        f: &DeadLetterFilter,
        actor: &str,
        dry_run: bool,
    ) -> Result<Vec<Uuid>> {
        let selected = self.select_for_action(f).await?;
        let ids: Vec<Uuid> = selected.iter().map(|d| d.id).collect();
        if !dry_run {
            for (id, dl) in ids.iter().zip(&selected) {
                // Park mode: a discarded dead letter no longer holds its
                // key. Released first, so that a failure leaves the dead
                // letter `new`, to be discarded again (a no-op for keys it
                // did not hold).
                super::park::resolve_event(
                    &self.redis,
                    &self.topology,
                    &dl.group,
                    &dl.event_type,
                    &dl.key,
                    *id,
                )
                .await?;
                let mark = Mark {
                    status: DeadLetterStatus::Discarded,
                    action: "discarded",
                    detail: serde_json::json!({"by": actor}),
                };
                self.mark(*id, mark).await?;
            }
        }
        Ok(ids)
    }

    /// Deletes dead letters (any status) whose last failure is older than
    /// `older_than`, with their history, and trims the Redis dead stream
    /// to the same age. Returns how many were deleted (on a dry run: how
    /// many would be, and nothing changes).
    pub async fn purge(&self, older_than: Duration, dry_run: bool) -> Result<u64> {
        // An age beyond the year 0000 purges everything there is: the
        // cutoff stops there (PostgreSQL cannot compare earlier times).
        let floor = DateTime::<Utc>::from_timestamp(YEAR_0000, 0).expect("a valid time");
        let cutoff = chrono::Duration::from_std(older_than)
            .ok()
            .and_then(|age| Utc::now().checked_sub_signed(age))
            .map_or(floor, |c| c.max(floor));
        let n = match &self.backend {
            Backend::Postgres(pg) => pg.purge(cutoff, dry_run).await?,
            Backend::Redis(r) => r.purge(cutoff, dry_run).await?,
        };
        if !dry_run {
            // Stream ids start with a millisecond timestamp: MINID drops older entries.
            let _: i64 = redis::cmd("XTRIM")
                .arg(self.topology.dead_stream())
                .arg("MINID")
                .arg(cutoff.timestamp_millis().max(0))
                .query_async(&mut self.redis.clone())
                .await?;
        }
        Ok(n)
    }

    async fn mark(&self, id: Uuid, mark: Mark) -> Result<()> {
        match &self.backend {
            Backend::Postgres(pg) => pg.mark(id, &mark).await,
            Backend::Redis(r) => r.mark(id, &mark).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_refuse_nul_and_absurd_times() {
        assert!(DeadLetterFilter::default().validate().is_ok());
        let nul = Some("a\0b".to_owned());
        for f in [
            DeadLetterFilter {
                group: nul.clone(),
                ..Default::default()
            },
            DeadLetterFilter {
                event_type: nul.clone(),
                ..Default::default()
            },
            DeadLetterFilter {
                key: nul,
                ..Default::default()
            },
        ] {
            let e = f.validate().unwrap_err();
            assert!(matches!(e, Error::InvalidInput(_)), "{e}");
            assert!(e.to_string().contains("U+0000"), "{e}");
        }
        for (since, ok) in [
            ("0000-01-01T00:00:00Z", true),
            ("9999-12-31T23:59:59Z", true),
            ("-0001-12-31T23:59:59Z", false),
            ("+10000-01-01T00:00:00Z", false),
        ] {
            let f = DeadLetterFilter {
                since: Some(since.parse().unwrap()),
                ..Default::default()
            };
            assert_eq!(f.validate().is_ok(), ok, "{since}");
        }
    }
}
