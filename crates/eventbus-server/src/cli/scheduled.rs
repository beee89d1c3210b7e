//! Command-line definitions of `eventbus scheduled list|cancel|run`.

use clap::{Args, Subcommand};

/// `eventbus scheduled`.
#[derive(Debug, Args)]
#[command(after_help = "\
Events published with --delay or --deliver-at (or with deliver_at in a batch line, the
outbox or POST /v1/events) wait in Redis, per partition, until they are due; a scheduler
then adds them to their stream with their id. `eventbus relay` and `eventbus serve` each
run a scheduler; `scheduled run` runs one alone. Any number may run at once: each event
is moved exactly once. See docs/scheduled.md.")]
pub(crate) struct ScheduledArgs {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: ScheduledCommand,
}

/// The `scheduled` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ScheduledCommand {
    /// The events waiting for their time, earliest first.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Show at most N events.
        #[arg(long, value_name = "N", default_value_t = 100,
              value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
    },
    /// Cancel a scheduled event by its id: it is never delivered. Exits 1
    /// if no event with this id is waiting (never scheduled, or delivered).
    Cancel {
        /// The event id (a UUID).
        #[arg(value_name = "ID", value_parser = parse_event_id)]
        id: uuid::Uuid,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a scheduler alone (no relay, no HTTP) until SIGINT/SIGTERM.
    Run,
}

fn parse_event_id(s: &str) -> Result<uuid::Uuid, String> {
    uuid::Uuid::try_parse(s.trim()).map_err(|_| {
        format!("{s:?} is not an event id (a UUID such as 0190a6a4-3b1c-7c3e-9a55-5c1f0b1e2d3a)")
    })
}

/// Parses `--delay`: a whole number and a unit (ms, s, m, h, d).
pub(crate) fn parse_delay(s: &str) -> Result<std::time::Duration, String> {
    eventbus::schedule::parse_delay(s)
}

/// Parses `--deliver-at`: an RFC 3339 time.
pub(crate) fn parse_deliver_at(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    eventbus::schedule::parse_deliver_at(s)
}
