//! `eventbus relay`: move committed outbox rows to Redis until stopped, and
//! trim the streams (ack-aware retention) in the background.

use eventbus::pg::{Relay, RelayConfig};
use eventbus::retention::Trimmer;
use eventbus::{Publisher, PublisherConfig};

use crate::cli::outbox::RelayArgs;
use crate::config::Settings;
use crate::error::{CliError, Result};

/// Runs `eventbus relay`.
pub(crate) async fn run(args: RelayArgs, settings: &Settings) -> Result<()> {
    // The pool holds the workers, the LISTEN connection and one for the
    // sweeps (retention, out-of-range rows): workers beyond that would only
    // wait for a connection.
    let pool_size = settings.pg.pool_size;
    if pool_size < 3 {
        return Err(CliError::Setting {
            var: "EVENT_BUS_PG_POOL_SIZE",
            reason: format!(
                "is {pool_size}; the relay needs at least 3 connections (a worker, LISTEN and the sweeps)"
            ),
        });
    }
    let asked = usize::try_from(args.workers).unwrap_or(4);
    let workers = asked.min(pool_size as usize - 2);
    if workers < asked {
        tracing::warn!(
            asked,
            workers,
            pool_size,
            "fewer relay workers than asked: each needs a connection of the pool (raise --pg-pool-size)"
        );
    }
    let pool = settings.pg.pool(pool_size, "relay").await?;
    let connector = settings.connector()?;
    let topology = settings.topology()?;
    let publisher = Publisher::connect(
        &connector,
        topology.clone(),
        PublisherConfig {
            max_len: settings.max_len,
            max_event_bytes: settings.pg.max_event_bytes.max(1024 * 1024),
            max_delay: settings.max_delay,
            ..PublisherConfig::default()
        },
    )
    .await?;
    let config = RelayConfig {
        batch_size: usize::try_from(args.batch_size).unwrap_or(1000),
        workers,
        retention: args.retention.unwrap_or(settings.pg.outbox_retention),
        failpoint: settings.pg.failpoint,
        ..RelayConfig::default()
    };
    let relay = Relay::new(pool.clone(), publisher, settings.pg.schema.clone(), config)?;
    let shutdown = super::shutdown_on_signal();
    let _metrics = match args.metrics_addr.or(settings.telemetry.metrics_addr) {
        Some(addr) => Some(
            crate::http::metrics::serve_alone(
                addr,
                crate::http::metrics::Gauges::Relay {
                    pool,
                    schema: settings.pg.schema.clone(),
                    stats: relay.stats(),
                },
                crate::http::metrics::GAUGE_INTERVAL,
                shutdown.clone(),
            )
            .await?,
        ),
        None => None,
    };
    // Ack-aware retention of every stream, taking turns with the other
    // relays, servers and consumers (per-stream leases).
    let trimmer = Trimmer::new(connector.shared().await?, topology.clone(), settings.trim);
    let trimming = tokio::spawn(trimmer.run(shutdown.clone()));
    // Scheduled delivery: due events (the outbox's deliver_at among them)
    // reach their streams from every relay; moves are atomic, so relays
    // may all run one (docs/scheduled.md).
    let scheduler = super::scheduled::scheduler(&connector, topology.clone(), settings).await?;
    let scheduling = tokio::spawn(scheduler.run(shutdown.clone()));
    let relayed = relay.run(shutdown.clone()).await;
    shutdown.cancel();
    let _ = trimming.await;
    let _ = scheduling.await;
    Ok(relayed?)
}
