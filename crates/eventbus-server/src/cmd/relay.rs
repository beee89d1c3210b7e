//! `eventbus relay`: move committed outbox rows to Redis until stopped.

use eventbus::pg::{Relay, RelayConfig};
use eventbus::{Publisher, PublisherConfig};

use crate::cli_outbox::RelayArgs;
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
    let publisher = Publisher::connect(
        &settings.connector()?,
        settings.topology()?,
        PublisherConfig {
            max_len: settings.max_len,
            max_event_bytes: settings.pg.max_event_bytes.max(1024 * 1024),
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
    let relay = Relay::new(pool, publisher, settings.pg.schema.clone(), config)?;
    let shutdown = super::shutdown_on_signal();
    Ok(relay.run(shutdown).await?)
}
