//! `eventbus relay`: move committed outbox rows to Redis until stopped.

use eventbus::pg::{Relay, RelayConfig};
use eventbus::{Publisher, PublisherConfig};

use crate::cli_outbox::RelayArgs;
use crate::config::Settings;
use crate::error::Result;

/// Runs `eventbus relay`.
pub(crate) async fn run(args: RelayArgs, settings: &Settings) -> Result<()> {
    let workers = usize::try_from(args.workers).unwrap_or(4);
    let pool = settings.pg.pool(workers as u32 + 2, "relay").await?;
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
