//! `eventbus outbox status|replay`.

use eventbus::pg::{outbox_status, replay_published};

use crate::cli::outbox::{OutboxArgs, OutboxCommand};
use crate::config::Settings;
use crate::error::Result;
use crate::output;

/// Runs `eventbus outbox ...`.
pub(crate) async fn run(args: OutboxArgs, settings: &Settings) -> Result<()> {
    let pool = settings.pg.pool(1, "outbox").await?;
    let schema = &settings.pg.schema;
    match args.command {
        OutboxCommand::Status { json } => {
            let partitions = outbox_status(&pool, schema).await?;
            let total: i64 = partitions.iter().map(|p| p.backlog).sum();
            let oldest = partitions
                .iter()
                .filter_map(|p| p.oldest_age_seconds)
                .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))));
            if json {
                output::json_line(&serde_json::json!({
                    "schema": schema.name(),
                    "backlog": total,
                    "oldest_age_seconds": oldest,
                    "partitions": partitions,
                }))?;
            } else {
                let mut text = format!("outbox in schema {}: {total} waiting", schema.name());
                if let Some(age) = oldest {
                    text.push_str(&format!(", oldest {age:.1}s old"));
                }
                text.push('\n');
                if !partitions.is_empty() {
                    text.push_str(&format!(
                        "{:>9}  {:>9}  {:>14}\n",
                        "partition", "backlog", "oldest age (s)"
                    ));
                    for p in &partitions {
                        text.push_str(&format!(
                            "{:>9}  {:>9}  {:>14.1}\n",
                            p.partition,
                            p.backlog,
                            p.oldest_age_seconds.unwrap_or(0.0)
                        ));
                    }
                }
                output::write_stdout(text.as_bytes())?;
            }
        }
        OutboxCommand::Replay { since, dry_run } => {
            let n = if dry_run {
                let mut tx = pool.begin().await.map_err(eventbus::Error::from)?;
                let n = replay_published(&mut *tx, schema, since).await?;
                tx.rollback().await.map_err(eventbus::Error::from)?;
                n
            } else {
                replay_published(&pool, schema, since).await?
            };
            let verb = if dry_run { "would be" } else { "were" };
            output::write_stdout(
                format!(
                    "{n} retained rows created since {since} {verb} marked for publishing again\n"
                )
                .as_bytes(),
            )?;
        }
    }
    Ok(())
}
