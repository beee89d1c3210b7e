//! The Prometheus recorder behind the `metrics` facade, and the task that
//! refreshes the gauges read from Redis and PostgreSQL.
//!
//! Series: `eventbus_published_total{type,via}`, `eventbus_retries_total`,
//! `eventbus_dead_letters_total`, `eventbus_dlq_depth`,
//! `eventbus_outbox_backlog{partition}`, `eventbus_outbox_oldest_age_seconds{partition}`,
//! `eventbus_relay_lag_seconds`, `eventbus_relay_published_total`,
//! `eventbus_group_lag{group,topic,partition}`, `eventbus_group_pending{group,topic,partition}`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use super::AppState;

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
        let partitions = eventbus::pg::outbox_status(&pg.pool, &pg.schema).await?;
        let mut oldest: f64 = 0.0;
        for p in &partitions {
            let partition = p.partition.to_string();
            metrics::gauge!("eventbus_outbox_backlog", "partition" => partition.clone())
                .set(p.backlog as f64);
            let age = p.oldest_age_seconds.unwrap_or(0.0);
            oldest = oldest.max(age);
            metrics::gauge!("eventbus_outbox_oldest_age_seconds", "partition" => partition)
                .set(age);
        }
        // How long the oldest committed event has waited for a relay.
        metrics::gauge!("eventbus_relay_lag_seconds").set(oldest);
    }
    let depth = super::dlq_store(app).depth().await?;
    metrics::gauge!("eventbus_dlq_depth").set(depth.depth as f64);
    let topics = eventbus::admin::known_topics(&app.redis, &app.topology).await?;
    let groups = eventbus::admin::groups(&app.redis, &app.topology, &topics, None).await?;
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
