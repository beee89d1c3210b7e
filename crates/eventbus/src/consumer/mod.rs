//! The consumer-group front: [`Consumer`], built with [`Consumer::builder`]
//! (handler layers in one documented order) or [`Consumer::new`].
//!
//! [`Consumer::run`] starts the runtime (`crate::runtime`) in its
//! [`ConsumerMode`]: ordered (partitions leased to the live members of the
//! group, the default) or unordered (competing consumers), and beside it
//! the competing reader of the group's replay stream.

mod builder;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tower_layer::Identity;

pub use self::builder::ConsumerBuilder;
use crate::layer::{Outer, Policies};

use crate::connection::RedisConnector;
use crate::deadletter::DeadLetterWriter;
use crate::handler::Handler;
use crate::runtime::failure::FailureHandling;
use crate::runtime::unordered::run_unordered;
use crate::runtime::{
    ensure_groups, prepare_streams, ConsumerConfig, ConsumerMode, ConsumerStats, REPLAY_TOPIC,
};
use crate::topology::Topology;
use crate::Result;

/// A consumer in a group. Build with [`Consumer::builder`] (or
/// [`Consumer::new`]), then [`Consumer::run`].
pub struct Consumer<H> {
    connector: RedisConnector,
    topology: Topology,
    config: ConsumerConfig,
    name: String,
    handler: H,
    stats: Arc<ConsumerStats>,
    dead_letter_store: Option<(sqlx::PgPool, crate::pg::DbSchema)>,
}

impl<H> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish()
    }
}

/// A unique consumer name for this process: `<host>-<pid>-<random>`.
pub fn unique_consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &rand[..8])
}

impl Consumer<()> {
    /// A builder: handler layers (validation, inbox, max events, your own)
    /// composed in the order of [`crate::layer`], then the handler.
    pub fn builder(
        connector: RedisConnector,
        topology: Topology,
        config: ConsumerConfig,
    ) -> ConsumerBuilder<Identity> {
        ConsumerBuilder::new(connector, topology, config)
    }

    /// A consumer calling `handler` with the standard layers only (trace
    /// span, metrics, the attempt timeout of `config.retry`); checks the
    /// config. Same as `Consumer::builder(..).handler(handler)`.
    pub fn new<H: Handler>(
        connector: RedisConnector,
        topology: Topology,
        config: ConsumerConfig,
        handler: H,
    ) -> Result<Consumer<Outer<Policies<H>>>> {
        Self::builder(connector, topology, config).handler(handler)
    }
}

impl<H: Handler> Consumer<H> {
    /// A consumer calling `handler` as it is (no layers added).
    fn with_handler(
        connector: RedisConnector,
        topology: Topology,
        config: ConsumerConfig,
        handler: H,
    ) -> Result<Self> {
        config.validate()?;
        let name = config
            .consumer_name
            .clone()
            .unwrap_or_else(unique_consumer_name);
        Ok(Consumer {
            connector,
            topology,
            config,
            name,
            handler,
            stats: Arc::default(),
            dead_letter_store: None,
        })
    }

    /// Also records dead letters in PostgreSQL (`eventbus_dead_letters` in
    /// `schema`), so they can be listed, replayed and discarded. Without it
    /// they go to the Redis stream `<namespace>:dead` only.
    pub fn with_dead_letter_store(
        mut self,
        pool: sqlx::PgPool,
        schema: crate::pg::DbSchema,
    ) -> Self {
        self.dead_letter_store = Some((pool, schema));
        self
    }

    /// This consumer's name in its group.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<ConsumerStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` is cancelled, then drains (see the module docs).
    /// Fails early if Redis is unreachable at start, or on an error that
    /// retrying cannot fix (e.g. a key of the wrong type).
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let Consumer {
            connector,
            topology,
            config,
            name,
            handler,
            stats,
            dead_letter_store,
        } = self;
        let conn = connector.shared().await?;
        // The trimmer lives as long as this run (a child token, dropped
        // with the guard, never cancels the caller's token).
        let trimming = shutdown.child_token();
        let _stop_trimming = trimming.clone().drop_guard();
        if let Some(trim) = config.trim {
            let trimmer = crate::retention::Trimmer::new(conn.clone(), topology.clone(), trim)
                .topics(config.topics.iter().cloned());
            tokio::spawn(trimmer.run(trimming.clone()));
        }
        // Retries through the scheduler must not depend on another process
        // running one: each consumer runs a slow one for its group's replay
        // stream (moves are atomic, so any number of schedulers may run;
        // `docs/scheduled.md`).
        let mut scheduled_retry_after = config.scheduled_retry_after;
        if scheduled_retry_after.is_some() {
            let replay = topology.replay_stream(&config.group);
            if let Err(why) = crate::schedule::may_schedule_into(&conn, &topology, &replay).await? {
                tracing::warn!(group = %config.group, %why,
                    "long retries wait in memory (a restart starts their wait again): \
                     grant XADD on the group's replay stream and ZADD, ZREM, ZRANGEBYSCORE \
                     on the scheduled hint (deploy/users.acl, docs/scheduled.md)");
                scheduled_retry_after = None;
            }
        }
        if scheduled_retry_after.is_some() {
            let scheduler = crate::schedule::Scheduler::connect(
                &connector,
                topology.clone(),
                crate::schedule::SchedulerConfig {
                    poll: std::time::Duration::from_millis(200),
                    only: Some(vec![topology.replay_stream(&config.group)]),
                    ..Default::default()
                },
            )
            .await?;
            tokio::spawn(scheduler.run(trimming.clone()));
        }
        let failures = Arc::new(FailureHandling {
            policy: config.retry.clone(),
            writer: DeadLetterWriter::new(conn.clone(), &topology, dead_letter_store),
            scheduled_retry_after,
            topology: topology.clone(),
        });
        // Replays of this group's dead letters arrive on its own stream, read
        // by every member competitively (replays have no order to keep).
        let replay = topology.replay_stream(&config.group);
        ensure_groups(&conn, std::slice::from_ref(&replay), &config.group).await?;
        if config.mode == ConsumerMode::Ordered {
            // Partitions and replays run side by side; either ending (an
            // error) ends the other. A child token, so that this never
            // cancels the caller's token, which others may share.
            let both = shutdown.child_token();
            let handler = Arc::new(handler);
            let replays = run_unordered(
                connector.clone(),
                conn.clone(),
                config.clone(),
                name.clone(),
                crate::deadletter::park::ParkedReplays::new(
                    handler.clone(),
                    &topology,
                    config.park_keys.then(|| config.group.clone()),
                    conn.clone(),
                    config.claim_idle,
                ),
                stats.clone(),
                failures.clone(),
                vec![(replay, (REPLAY_TOPIC.to_owned(), 0))],
                both.clone(),
            );
            let partitions = crate::runtime::ordered::run(
                connector,
                conn,
                topology,
                config,
                name,
                handler,
                stats,
                failures,
                both.clone(),
            );
            let (a, b) = tokio::join!(
                cancel_when_done(partitions, &both),
                cancel_when_done(replays, &both)
            );
            return a.and(b);
        }
        let mut streams = prepare_streams(&conn, &topology, &config).await?;
        streams.push((replay, (REPLAY_TOPIC.to_owned(), 0)));
        run_unordered(
            connector, conn, config, name, handler, stats, failures, streams, shutdown,
        )
        .await
    }
}

/// Awaits `fut`, then cancels `token`.
async fn cancel_when_done<T>(
    fut: impl std::future::Future<Output = T>,
    token: &CancellationToken,
) -> T {
    let out = fut.await;
    token.cancel();
    out
}
