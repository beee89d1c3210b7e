//! The commands, one module each, and what they share: choosing topics and
//! turning SIGINT/SIGTERM into a cancellation token.

mod bench;
mod consume;
mod consume_sql;
pub(crate) mod demo;
mod dlq;
mod groups;
mod input;
mod migrate;
mod outbox;
mod publish;
mod relay;
mod scheduled;
mod schemas;
mod serve;
mod serve_consumers;
mod streams;
mod tail;
mod trim;

use std::collections::BTreeSet;

use eventbus::RedisConn;
use tokio_util::sync::CancellationToken;

use crate::cli::Command;
use crate::config::Settings;
use crate::error::{CliError, Result};

/// The topics of the first user's event catalogue.
pub(crate) const CATALOGUE_TOPICS: [&str; 4] = ["work_order", "work_item", "attempt", "system"];

/// Runs one command.
pub(crate) async fn run(command: Command, settings: Settings) -> Result<()> {
    match command {
        Command::Publish(args) => publish::run(args, &settings).await,
        Command::Consume(args) => consume::run(args, &settings).await,
        Command::Tail(args) => tail::run(args, &settings).await,
        Command::Streams(args) => streams::run(args, &settings).await,
        Command::Groups(args) => groups::run(args, &settings).await,
        Command::Trim(args) => trim::run(args, &settings).await,
        Command::Demo(args) => demo::run(args, &settings).await,
        Command::Bench(args) => bench::run(args, &settings).await,
        Command::Migrate(args) => migrate::run(args, &settings).await,
        Command::Dlq(args) => dlq::run(args, &settings).await,
        Command::Relay(args) => relay::run(args, &settings).await,
        Command::Scheduled(args) => scheduled::run(args, &settings).await,
        Command::Outbox(args) => outbox::run(args, &settings).await,
        Command::Schemas(args) => schemas::run(args, &settings).await,
        Command::Serve(args) => serve::run(args, &settings).await,
    }
}

/// The dead letters: in PostgreSQL when `DATABASE_URL` is set (a pool of
/// `pool_size` connections named `name`), else the records in Redis.
pub(crate) async fn dead_letters(
    settings: &Settings,
    redis: RedisConn,
    pool_size: u32,
    name: &str,
) -> Result<eventbus::deadletter::DeadLetterStore> {
    use eventbus::deadletter::DeadLetterStore;
    Ok(if settings.pg.has_database() {
        DeadLetterStore::new(
            settings.pg.pool(pool_size, name).await?,
            settings.pg.schema.clone(),
            settings.topology()?,
            redis,
        )
    } else {
        DeadLetterStore::in_redis(settings.topology()?, redis)
    })
}

/// Checks topic names given with `--topics`: letters, digits, `_` or `-`.
pub(crate) fn check_topics(topics: &[String]) -> Result<()> {
    for t in topics {
        let ok = !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(CliError::Input(format!(
                "--topics: {t:?} is not a topic name (letters, digits, `_` or `-`)"
            )));
        }
    }
    Ok(())
}

/// The topics asked for (already checked), or every topic registered in the
/// namespace.
pub(crate) async fn topics_or_known(
    conn: &RedisConn,
    topology: &eventbus::Topology,
    asked: &[String],
) -> Result<BTreeSet<String>> {
    Ok(if asked.is_empty() {
        eventbus::admin::known_topics(conn, topology).await?
    } else {
        asked.iter().cloned().collect()
    })
}

/// The topics asked for, or by default the catalogue topics plus every topic
/// registered in the namespace.
pub(crate) async fn topics_or_default(
    conn: &RedisConn,
    settings: &Settings,
    asked: &[String],
) -> Result<BTreeSet<String>> {
    check_topics(asked)?;
    if !asked.is_empty() {
        return Ok(asked.iter().cloned().collect());
    }
    let mut topics = eventbus::admin::known_topics(conn, &settings.topology()?).await?;
    topics.extend(CATALOGUE_TOPICS.iter().map(|t| (*t).to_owned()));
    Ok(topics)
}

/// A token cancelled on the first SIGINT or SIGTERM. A second signal exits
/// at once with status 130, for when a graceful shutdown takes too long.
pub(crate) fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; shutting down (send it again to exit at once)");
        cancel.cancel();
        wait_for_signal().await;
        eprintln!("eventbus: error: interrupted again; exiting without waiting");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
