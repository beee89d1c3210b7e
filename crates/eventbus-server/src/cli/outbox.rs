//! Command-line definitions of the PostgreSQL commands: `migrate`, `relay`,
//! `outbox status|replay`.

use std::time::Duration;

use clap::{Args, Subcommand};

/// `eventbus migrate`.
#[derive(Debug, Args)]
#[command(after_help = "\
Creates or updates the eventbus tables (eventbus_outbox, eventbus_inbox, ...) in
EVENT_BUS_DB_SCHEMA (created if missing). Idempotent, and safe to run from several
processes at once: one applies each migration, the others wait and find it done.")]
pub(crate) struct MigrateArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `eventbus relay`.
#[derive(Debug, Args)]
#[command(after_help = "\
Moves committed outbox rows to their Redis streams until SIGINT/SIGTERM. Run as
many relays as you like: each partition is relayed by one of them at a time, in
order. A relay crash never loses a row; it can publish a row twice (inboxes skip
the duplicate). Rows with a later deliver_at wait in Redis until due; every relay
also runs a scheduler that moves due events to their streams (docs/scheduled.md).")]
pub(crate) struct RelayArgs {
    /// Rows per batch: one transaction and one pipelined round trip.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) batch_size: u64,
    /// Partitions relayed in parallel by this process.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub(crate) workers: u64,
    /// Keep published rows this long for `outbox replay` (e.g. 7d), or `off`
    /// [env: EVENT_BUS_OUTBOX_RETENTION; default: off].
    #[arg(long, value_name = "DURATION|off", value_parser = parse_retention_arg)]
    pub(crate) retention: Option<Option<Duration>>,
    /// Serve Prometheus `/metrics` (the series of `serve`) on this address,
    /// e.g. 127.0.0.1:9464 [env: EVENT_BUS_METRICS_ADDR; default: off].
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
}

/// `eventbus outbox`.
#[derive(Debug, Args)]
pub(crate) struct OutboxArgs {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: OutboxCommand,
}

/// The `outbox` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum OutboxCommand {
    /// Backlog and age of the oldest waiting row, per partition.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Publish again the retained rows created since a time (after Redis lost data).
    #[command(after_help = "\
Needs outbox retention (EVENT_BUS_OUTBOX_RETENTION) on the relay, so published rows
are kept. Marks the retained rows created at or after --since as unpublished; the
relays then publish them again, in order. Consumers get duplicates of what they
already had; inboxes skip those.")]
    Replay {
        /// RFC 3339 time, e.g. 2026-11-29T10:00:00Z.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: chrono::DateTime<chrono::Utc>,
        /// Only count the rows that would be replayed.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_retention_arg(s: &str) -> Result<Option<Duration>, String> {
    crate::config::pg::parse_retention(s)
        .ok_or_else(|| format!("{s:?} is not a duration like 7d, 12h or 30m, or `off`"))
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time like 2026-11-29T10:00:00Z: {e}"))
}
