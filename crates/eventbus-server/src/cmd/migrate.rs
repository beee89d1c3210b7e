//! `eventbus migrate`: create or update the eventbus tables.

use crate::cli::outbox::MigrateArgs;
use crate::config::Settings;
use crate::error::Result;
use crate::output;

/// Runs `eventbus migrate`.
pub(crate) async fn run(args: MigrateArgs, settings: &Settings) -> Result<()> {
    let pool = settings.pg.pool(1, "migrate").await?;
    let mut conn = pool.acquire().await.map_err(eventbus::Error::from)?;
    let applied = eventbus::pg::migrate(&mut conn, &settings.pg.schema).await?;
    // The outbox refuses rows outside these (docs/outbox.md).
    let recorded = eventbus::pg::OutboxSettings {
        partitions: settings.topology()?.partitions(),
        max_event_bytes: settings.pg.max_event_bytes,
    };
    let before = eventbus::pg::record_settings(&mut conn, &settings.pg.schema, recorded).await?;
    if before.is_some_and(|b| b != recorded) {
        tracing::warn!(?before, now = ?recorded, "outbox settings changed");
    }
    let schema = settings.pg.schema.name();
    if args.json {
        output::json_line(&serde_json::json!({"schema": schema, "applied": applied}))?;
    } else if applied.is_empty() {
        output::write_stdout(format!("schema {schema}: up to date\n").as_bytes())?;
    } else {
        output::write_stdout(
            format!("schema {schema}: applied migrations {applied:?}\n").as_bytes(),
        )?;
    }
    Ok(())
}
