//! The Prometheus recorder behind the `metrics` facade, and the task that
//! refreshes the gauges read from Redis and PostgreSQL.
//!
//! Series: `eventbus_published_total{type,via}`, `eventbus_retries_total`,
//! `eventbus_dead_letters_total`, `eventbus_dlq_depth`,
//! `eventbus_outbox_backlog{partition}`, `eventbus_outbox_oldest_age_seconds{partition}`,
//! `eventbus_relay_lag_seconds`, `eventbus_relay_published_total`,
//! `eventbus_group_lag{group,topic,partition}`, `eventbus_group_pending{group,topic,partition}`,
//! `eventbus_scheduled_events` (waiting for their due time), and from the
//! scheduler `eventbus_scheduled_lateness_seconds` (histogram: moved after
//! the due time by this much) and `eventbus_scheduled_moved_total`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::error::{CliError, Result};

/// How often the gauges are refreshed.
pub(crate) const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// The process-wide recorder (installed once; later calls share it).
pub(crate) fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests); then this
            // handle renders nothing of theirs, which only tests can see.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Refreshes the gauges every `every` until `shutdown`.
pub(crate) async fn refresh_gauges(
    app: AppState,
    relay: Option<Arc<eventbus::pg::RelayStats>>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut relayed = 0;
    loop {
        if let Err(e) = refresh_once(&app).await {
            tracing::warn!(error = %e, "cannot refresh the metrics gauges");
        }
        if let Some(stats) = &relay {
            let now = stats.published.load(Ordering::Relaxed);
            metrics::counter!("eventbus_relay_published_total").increment(now - relayed);
            relayed = now;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// One refresh of every gauge.
pub(crate) async fn refresh_once(app: &AppState) -> eventbus::Result<()> {
    if let Some(pg) = &app.pg {
        refresh_outbox(&pg.pool, &pg.schema).await?;
    }
    let scheduled = eventbus::schedule::count(&app.redis, &app.topology).await?;
    metrics::gauge!("eventbus_scheduled_events").set(scheduled as f64);
    let depth = super::dlq_store(app).depth().await?;
    metrics::gauge!("eventbus_dlq_depth").set(depth.depth as f64);
    refresh_groups(&app.redis, &app.topology).await
}

/// The outbox gauges: backlog and oldest age per partition, relay lag.
async fn refresh_outbox(
    pool: &sqlx::PgPool,
    schema: &eventbus::pg::DbSchema,
) -> eventbus::Result<()> {
    let partitions = eventbus::pg::outbox_status(pool, schema).await?;
    let mut oldest: f64 = 0.0;
    for p in &partitions {
        let partition = p.partition.to_string();
        metrics::gauge!("eventbus_outbox_backlog", "partition" => partition.clone())
            .set(p.backlog as f64);
        let age = p.oldest_age_seconds.unwrap_or(0.0);
        oldest = oldest.max(age);
        metrics::gauge!("eventbus_outbox_oldest_age_seconds", "partition" => partition).set(age);
    }
    // How long the oldest committed event has waited for a relay.
    metrics::gauge!("eventbus_relay_lag_seconds").set(oldest);
    Ok(())
}

/// Every group's lag and pending count per partition.
async fn refresh_groups(
    redis: &eventbus::RedisConn,
    topology: &eventbus::Topology,
) -> eventbus::Result<()> {
    let topics = eventbus::admin::known_topics(redis, topology).await?;
    let groups = eventbus::admin::groups(redis, topology, &topics, None).await?;
    for g in &groups {
        for p in &g.partitions {
            let labels = [
                ("group", g.group.clone()),
                ("topic", p.topic.clone()),
                ("partition", p.partition.to_string()),
            ];
            metrics::gauge!("eventbus_group_pending", &labels).set(p.pending as f64);
            if let Some(lag) = p.lag {
                metrics::gauge!("eventbus_group_lag", &labels).set(lag as f64);
            }
        }
    }
    Ok(())
}

/// What a standalone `/metrics` ([`serve_alone`]) refreshes besides the
/// series its process records.
pub(crate) enum Gauges {
    /// `consume`: the groups' lag and pending counts.
    Groups {
        redis: eventbus::RedisConn,
        topology: eventbus::Topology,
    },
    /// `relay`: the outbox gauges and `eventbus_relay_published_total`.
    Relay {
        pool: sqlx::PgPool,
        schema: eventbus::pg::DbSchema,
        stats: Arc<eventbus::pg::RelayStats>,
    },
}

/// `GET /metrics` on `addr` for `consume` and `relay` (`--metrics-addr`):
/// the recorder and series of `serve`, on the same accept loop (timeouts,
/// connection limit), with `gauges` refreshed every `every`. Both tasks
/// stop with `shutdown`. A busy address is refused at once (exit 2).
pub(crate) async fn serve_alone(
    addr: std::net::SocketAddr,
    gauges: Gauges,
    every: Duration,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinSet<()>> {
    let handle = prometheus();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Input(format!("cannot listen on {addr} for /metrics: {e}")))?;
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = handle.render();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        super::routes::METRICS_CONTENT_TYPE,
                    )],
                    text,
                )
            }
        }),
    );
    let mut tasks = tokio::task::JoinSet::new();
    let token = shutdown.clone();
    tasks.spawn(async move {
        let options = super::HttpOptions::default();
        if let Err(e) = super::server::serve(listener, router, &options, token).await {
            tracing::error!(error = %e, "the /metrics listener stopped");
        }
    });
    tasks.spawn(async move {
        let mut relayed = 0;
        loop {
            let refreshed = match &gauges {
                Gauges::Groups { redis, topology } => refresh_groups(redis, topology).await,
                Gauges::Relay {
                    pool,
                    schema,
                    stats,
                } => {
                    let now = stats.published.load(Ordering::Relaxed);
                    metrics::counter!("eventbus_relay_published_total").increment(now - relayed);
                    relayed = now;
                    refresh_outbox(pool, schema).await
                }
            };
            if let Err(e) = refreshed {
                tracing::warn!(error = %e, "cannot refresh the metrics gauges");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    });
    Ok(tasks)
}
