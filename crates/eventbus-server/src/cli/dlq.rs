//! Command-line definitions of `eventbus dlq ...`.

use std::time::Duration;

use clap::{Args, Subcommand};
use uuid::Uuid;

/// `eventbus dlq`.
#[derive(Debug, Args)]
#[command(after_help = "\
Dead letters are in the Redis stream <namespace>:dead and, with their status and
history, in PostgreSQL (eventbus_dead_letters) when DATABASE_URL is set, else in
Redis beside the stream; these commands work on whichever holds them (`dlq sync`
needs PostgreSQL). A replay publishes the original event, with its id, to the
replay stream of the group that failed it, so no other group sees it again;
inboxes skip events already handled. An event that fails again returns to dead
letters with its history (see `dlq show`).")]
pub(crate) struct DlqArgs {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: DlqCommand,
}

/// Which dead letters.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct DlqFilterArgs {
    /// Failed by this consumer group.
    #[arg(long)]
    pub(crate) group: Option<String>,
    /// Of this event type.
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) event_type: Option<String>,
    /// With this partition key.
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// retryable (attempts used up), permanent, invalid or parked (park mode).
    #[arg(long, value_name = "CLASS", value_parser = parse_class)]
    pub(crate) error_class: Option<eventbus::ErrorClass>,
    /// Last failed at or after this RFC 3339 time, or this long ago (30m, 2h, 7d).
    #[arg(long, value_name = "TIME|AGO", value_parser = parse_since)]
    pub(crate) since: Option<chrono::DateTime<chrono::Utc>>,
}

/// The `dlq` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead letters, most recent failure first.
    List {
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// new, replayed or discarded [default: any].
        #[arg(long, value_parser = parse_status)]
        status: Option<eventbus::deadletter::DeadLetterStatus>,
        /// At most this many.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        /// Skip this many (pagination).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
        offset: i64,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter: the envelope, the error, and its history.
    Show {
        /// The dead letter id.
        id: Uuid,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Publish dead letters again to the group that failed them.
    #[command(
        after_help = "Say which: dead letter ids, --all, or filters (acting on `new` ones)."
    )]
    Replay {
        /// Dead letter ids.
        ids: Vec<Uuid>,
        /// Every `new` dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// Show what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most N events per second.
        #[arg(long, value_name = "N")]
        rate: Option<f64>,
        /// Send to this group instead of the one that failed them.
        #[arg(long, value_name = "GROUP")]
        to_group: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mark dead letters discarded (kept for the record, out of the queue).
    #[command(
        after_help = "Say which: dead letter ids, --all, or filters (acting on `new` ones)."
    )]
    Discard {
        /// Dead letter ids.
        ids: Vec<Uuid>,
        /// Every `new` dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// Show what would be discarded; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Copy dead letters that reached only the Redis stream (PostgreSQL was
    /// down or refused them; marked dl_store=missing) into PostgreSQL
    /// (needs DATABASE_URL).
    #[command(
        after_help = "Consumers do this by themselves when the store is back; this is for a consumer that \
                      stopped before it could. Safe to repeat: a dead letter already stored is left as it is."
    )]
    Sync {
        /// Look at dead letters since this RFC 3339 time or this long ago.
        #[arg(long, value_name = "TIME|AGO", value_parser = parse_since, default_value = "7d")]
        since: chrono::DateTime<chrono::Utc>,
    },
    /// Delete dead letters (any status) whose last failure is older than a duration.
    Purge {
        /// e.g. 30d, 12h.
        #[arg(long, value_name = "DURATION", value_parser = parse_age)]
        older_than: Duration,
        /// Count what would be deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_class(s: &str) -> Result<eventbus::ErrorClass, String> {
    eventbus::deadletter::parse_error_class(s).ok_or_else(|| {
        format!("{s:?} is not an error class (retryable, permanent, invalid or parked)")
    })
}

fn parse_status(s: &str) -> Result<eventbus::deadletter::DeadLetterStatus, String> {
    eventbus::deadletter::DeadLetterStatus::parse(s)
        .ok_or_else(|| format!("{s:?} is not a status (new, replayed or discarded)"))
}

fn parse_age(s: &str) -> Result<Duration, String> {
    match crate::config::pg::parse_retention(s) {
        Some(Some(d)) => Ok(d),
        _ => Err(format!("{s:?} is not a duration like 30m, 12h or 7d")),
    }
}

fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let ago = parse_age(s).map_err(|_| {
        format!("{s:?} is neither an RFC 3339 time (2026-11-29T10:00:00Z) nor a duration ago (30m, 2h, 7d)")
    })?;
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| chrono::Utc::now().checked_sub_signed(ago))
        .ok_or_else(|| format!("{s:?} ago is before any time that can be written"))
}
