//! `eventbus consume --inbox --sql STATEMENT`: a projection that runs one
//! SQL statement per event inside the inbox transaction, so its effect
//! happens exactly once per group, without writing any code.
//!
//! Parameters bound to the statement: `$1` event id (uuid), `$2` type (text),
//! `$3` key (text), `$4` data (jsonb), `$5` the whole envelope (jsonb). The
//! statement may use any of them (PostgreSQL needs each `$n` it is given to
//! have a known type, so all five are bound with explicit types).

use std::sync::atomic::Ordering;

use eventbus::pg::{Inbox, InboxConfig, InboxHandler};
use eventbus::{Consumer, ConsumerConfig, Delivery, HandlerError, RedisConnector, Topology};
use sqlx::PgConnection;

use crate::config::Settings;
use crate::error::Result;

/// Runs the statement per event; see the module docs.
struct SqlHandler {
    statement: String,
    /// Crash tests: kill the process after the statement, before the commit,
    /// once every N events on average.
    kill_one_in: Option<u32>,
}

impl InboxHandler for SqlHandler {
    async fn handle<'a>(
        &'a self,
        d: &'a Delivery,
        tx: &'a mut PgConnection,
    ) -> Result<(), HandlerError> {
        let envelope = serde_json::to_value(&d.envelope).expect("an envelope always serializes");
        // The statement's text is the operator's own (a flag of this command),
        // not data from an event; event values are bound parameters only.
        sqlx::query(sqlx::AssertSqlSafe(self.statement.clone()))
            .bind(d.envelope.id)
            .bind(&d.envelope.event_type)
            .bind(&d.envelope.key)
            .bind(sqlx::types::Json(&d.envelope.data))
            .bind(sqlx::types::Json(&envelope))
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(&e))?;
        if let Some(n) = self.kill_one_in {
            if rand::random_range(0..n.max(1)) == 0 {
                tracing::warn!(event_id = %d.envelope.id, "failpoint: killing the consumer inside its inbox transaction");
                let _ = std::process::Command::new("kill")
                    .args(["-9", &std::process::id().to_string()])
                    .status();
                std::process::abort();
            }
        }
        Ok(())
    }
}

/// Errors in the statement itself (syntax, a missing table, a constraint)
/// will not go away by retrying; everything else may.
fn classify(e: &sqlx::Error) -> HandlerError {
    let permanent = matches!(e, sqlx::Error::Database(db)
        if db.code().is_some_and(|c| c.starts_with("42") || c.starts_with("22") || c.starts_with("23")));
    let message = format!("--sql statement failed: {e}");
    if permanent {
        HandlerError::permanent(message)
    } else {
        HandlerError::retryable(message)
    }
}

/// Runs the consumer with the SQL projection until `shutdown`.
pub(crate) async fn run(
    statement: String,
    inbox_config: InboxConfig,
    connector: RedisConnector,
    topology: Topology,
    config: ConsumerConfig,
    settings: &Settings,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<()> {
    let pool = settings
        .pg
        .pool(settings.pg.pool_size, "consume --sql")
        .await?;
    // Check the statement once, so a typo fails at start and not per event.
    let mut tx = pool.begin().await.map_err(eventbus::Error::from)?;
    let probe = sqlx::query(sqlx::AssertSqlSafe(format!(
        "PREPARE eventbus_probe (uuid, text, text, jsonb, jsonb) AS {statement}"
    )))
    .execute(&mut *tx)
    .await;
    drop(tx);
    if let Err(e) = probe {
        return Err(crate::error::CliError::Input(format!(
            "--sql: the statement does not prepare: {e}"
        )));
    }
    let kill_one_in = settings.pg.consumer_failpoint;
    let inbox = Inbox::new(
        pool,
        &settings.pg.schema,
        SqlHandler {
            statement,
            kill_one_in,
        },
    )
    .with_config(inbox_config)?;
    let inbox_stats = inbox.stats();
    let dead_letters = settings
        .pg
        .pool(settings.pg.pool_size, "consume --sql")
        .await?;
    let consumer = Consumer::new(connector, topology, config, inbox)?
        .with_dead_letter_store(dead_letters, settings.pg.schema.clone());
    let stats = consumer.stats();
    tracing::info!(consumer = consumer.name(), "consuming into SQL");
    let result = consumer.run(shutdown).await;
    tracing::info!(
        committed = inbox_stats.committed.load(Ordering::Relaxed),
        duplicates_skipped = inbox_stats.duplicates.load(Ordering::Relaxed),
        handled = stats.handled.load(Ordering::Relaxed),
        failed = stats.failed.load(Ordering::Relaxed),
        "consumer finished"
    );
    Ok(result?)
}
