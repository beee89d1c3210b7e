//! Command-line definitions (`clap` derive). Flags override the environment
//! variables read in [`crate::config`]; this module never reads them itself.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub(crate) mod dlq;
pub(crate) mod ordered;
pub(crate) mod outbox;
pub(crate) mod retry;
pub(crate) mod scheduled;
pub(crate) mod schemas;
pub(crate) mod serve;

pub(crate) use crate::config::flags::GlobalArgs;

use crate::error::EXIT_CODES_HELP;

const ENV_HELP: &str = "\
Environment (flags win over variables):
  REDIS_URL                  Redis URL (default built from the parts below)
  REDIS_HOST, REDIS_PORT     default 127.0.0.1, 6379
  REDIS_USERNAME, REDIS_PASSWORD, REDIS_DB
  EVENT_BUS_NAMESPACE        key prefix (default eventbus)
  EVENT_BUS_PARTITIONS       partitions per topic (default 16)
  EVENT_BUS_CONSUMER_GROUP   default for `consume --group`
  EVENT_BUS_MAX_LEN          approximate stream length cap for publish (default off)
  EVENT_BUS_MAX_DELAY        longest --delay / deliver_at ahead accepted (default 30d)
  EVENT_BUS_STREAM_RETENTION what relay, serve and `trim` keep: acked, acked:<age> or off (default acked)
  EVENT_BUS_TRIM_INTERVAL    how often relay and serve trim (default 10s)
  EVENT_BUS_HEARTBEAT_MS     ordered consumers' heartbeat interval (default 1000)
  EVENT_BUS_SESSION_TIMEOUT_MS  ordered consumers' session timeout (default 10000)
  EVENT_BUS_LOG              log filter (default info); logs go to stderr
  EVENT_BUS_LOG_FORMAT       json | text (default text on a terminal, json otherwise)
  EVENT_BUS_SCHEMA_DIR       event catalogue directory (default: the one built in)
  EVENT_BUS_HTTP_HEADERS     `consume --http`: headers such as Authorization, one `Name: value` a line";

/// The `eventbus` command line.
#[derive(Debug, Parser)]
#[command(
    name = "eventbus",
    version,
    about = "An event bus on Redis Streams: publish, consume, inspect, demo",
    after_help = format!("{ENV_HELP}\n\n{EXIT_CODES_HELP}")
)]
pub(crate) struct Cli {
    /// Connection and topology flags, accepted by every command.
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
// Parsed once per process: the size of a variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Publish one event, or a batch from a JSON-lines file.
    Publish(PublishArgs),
    /// Consume with a consumer group, printing events or running a command per event.
    Consume(ConsumeArgs),
    /// Print stream entries as JSON lines, without a consumer group.
    Tail(TailArgs),
    /// Show partitions: length, and pending and lag per group.
    Streams(StreamsArgs),
    /// Show consumer groups: members, partition leases, pending and lag.
    Groups(crate::cli::ordered::GroupsArgs),
    /// Trim streams to what some group still needs (ack-aware retention).
    Trim(TrimArgs),
    /// Inspect, replay, discard and purge dead letters.
    Dlq(crate::cli::dlq::DlqArgs),
    /// Events waiting for their due time: list, cancel, or run a scheduler.
    Scheduled(crate::cli::scheduled::ScheduledArgs),
    /// Run the HTTP admin API, the relay, the scheduler and the dead-letter alerter.
    Serve(crate::cli::serve::ServeArgs),
    /// Create or update the eventbus tables in PostgreSQL.
    Migrate(crate::cli::outbox::MigrateArgs),
    /// Move committed outbox rows to Redis, until stopped.
    Relay(crate::cli::outbox::RelayArgs),
    /// Inspect the outbox, or publish retained rows again.
    Outbox(crate::cli::outbox::OutboxArgs),
    /// The event catalogue: list, show, validate files, check compatibility, write docs.
    Schemas(crate::cli::schemas::SchemasArgs),
    /// Publish sample events of every catalogue type to a throw-away
    /// namespace, consume them with two consumers, print a summary.
    Demo(DemoArgs),
    /// Benchmark publish, consume, outbox and latency beside redis-benchmark,
    /// pgbench and peers: runs the separate `eventbus-bench` program (built
    /// by bench/run or `cargo build --release -p eventbus-bench`; found in
    /// EVENTBUS_BENCH_BIN, next to this program, or on PATH) with these
    /// arguments, against the configured Redis and PostgreSQL
    /// (`eventbus bench --help` shows its flags; see docs/benchmarks.md).
    #[command(disable_help_flag = true)]
    Bench(BenchArgs),
}

/// `eventbus bench`: everything after it goes to `eventbus-bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Arguments for eventbus-bench (e.g. --only publish --json).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) args: Vec<String>,
}

/// `eventbus publish`.
#[derive(Debug, Args)]
#[command(after_help = "\
Prints one JSON line per event: {\"id\",\"type\",\"key\",\"stream\",\"partition\",\"entry_id\"}.

Batch files have one JSON object per line: {\"type\", \"key\", \"data\"} and optionally
\"version\", \"headers\" (string map), \"source\", \"correlation_id\", \"causation_id\",
\"traceparent\". Blank lines are skipped. Every line is checked before anything is
sent; if one is bad, nothing is published and the error names its line number.
--version, --source and --header give defaults for lines that lack them.
A line may also have \"deliver_at\" (RFC 3339): the event is due then (--delay and
--deliver-at give the default). A due event is printed with \"deliver_at\" and an empty
entry_id: it waits in Redis until a scheduler (in relay, serve or `scheduled run`) adds
it to its stream with the same id. Past times are delivered at once.")]
pub(crate) struct PublishArgs {
    /// Event type, `topic.name`, e.g. `work_order.created`.
    #[arg(long = "type", value_name = "TYPE", required_unless_present = "batch")]
    pub(crate) event_type: Option<String>,
    /// Partition key: events with one key stay in order in one partition.
    #[arg(long, required_unless_present = "batch")]
    pub(crate) key: Option<String>,
    /// The payload: JSON text, `@FILE` to read it from a file, or `@-` for stdin.
    #[arg(long, value_name = "JSON|@FILE", required_unless_present = "batch")]
    pub(crate) data: Option<String>,
    /// Publish every event of a JSON-lines file (`-` for stdin) instead.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["event_type", "key", "data"])]
    pub(crate) batch: Option<String>,
    /// Schema version of the payload [default: 1].
    #[arg(long, value_name = "N")]
    pub(crate) version: Option<u32>,
    /// A header, repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    pub(crate) headers: Vec<(String, String)>,
    /// The producing service [default: eventbus-cli].
    #[arg(long)]
    pub(crate) source: Option<String>,
    /// Correlation id (groups the events of one flow).
    #[arg(long, value_name = "ID")]
    pub(crate) correlation_id: Option<String>,
    /// Id of the event or command that caused this one.
    #[arg(long, value_name = "ID")]
    pub(crate) causation_id: Option<String>,
    /// Approximate cap on each stream's length (`XADD MAXLEN ~`) [env: EVENT_BUS_MAX_LEN; default: no trimming].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_len: Option<u64>,
    /// Write the events to the PostgreSQL outbox (one transaction) instead of
    /// straight to Redis; a relay publishes them.
    #[arg(long)]
    pub(crate) via_outbox: bool,
    /// Do not validate events against the catalogue (by default an unknown
    /// type or version, or invalid data, refuses the whole publish).
    #[arg(long)]
    pub(crate) no_validate: bool,
    /// Deliver in DURATION from now (e.g. 30s, 15m, 2h, 7d), at most
    /// EVENT_BUS_MAX_DELAY [default: now].
    #[arg(long, value_name = "DURATION", value_parser = crate::cli::scheduled::parse_delay,
          conflicts_with = "deliver_at")]
    pub(crate) delay: Option<Duration>,
    /// Deliver at this time, RFC 3339 (e.g. 2026-05-01T09:00:00Z); a past
    /// time delivers at once.
    #[arg(long, value_name = "TIME", value_parser = crate::cli::scheduled::parse_deliver_at)]
    pub(crate) deliver_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Events per pipelined round trip in batch mode.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) chunk_size: u64,
}

/// `eventbus consume`.
#[derive(Debug, Args)]
#[command(after_help = "\
With --exec, CMD runs under `sh -c` once per event, with the envelope JSON on stdin
and EVENTBUS_EVENT_ID, EVENTBUS_EVENT_TYPE, EVENTBUS_EVENT_KEY, EVENTBUS_GROUP,
EVENTBUS_STREAM, EVENTBUS_ENTRY_ID and EVENTBUS_REDELIVERED in its environment.
  exit 0          done: the entry is acknowledged
  exit 65         permanent failure: dead-lettered at once
  anything else   retryable failure (also a timeout: the command is killed)
A failed event is tried again: in ordered mode after a pause, while only its partition
waits; in unordered mode once idle for --claim-idle.

With --http URL, each envelope is POSTed as JSON (headers Eventbus-Event-Id,
Eventbus-Event-Type, Eventbus-Event-Key, Eventbus-Group, Eventbus-Redelivered,
Idempotency-Key, traceparent, and any extra headers: plain ones from --http-header,
secret ones such as Authorization only from --http-headers-file or EVENT_BUS_HTTP_HEADERS,
`Name: value` lines, since flags show in `ps`):
  2xx                          done: the entry is acknowledged
  408, 429, 5xx, timeout       retryable (a Retry-After of up to 60 s is waited out first)
  any other 4xx                permanent failure

Ordered mode (the default): the group's partitions are leased to its live members, each
partition handled one event at a time in order; members heartbeat every --heartbeat and
a member silent for --session-timeout is dead, its partitions move. `eventbus groups`
shows who holds what. --unordered: competing consumers (--concurrency at once).

SIGINT/SIGTERM stop reading, let running handlers finish, acknowledge and exit 0;
a second signal exits at once.")]
pub(crate) struct ConsumeArgs {
    /// Consumer group [env: EVENT_BUS_CONSUMER_GROUP].
    #[arg(long, short = 'g')]
    pub(crate) group: Option<String>,
    /// Topics, comma-separated [default: work_order, work_item, attempt, system and every topic seen in the namespace].
    #[arg(long, value_delimiter = ',', value_name = "TOPIC,...")]
    pub(crate) topics: Vec<String>,
    /// Run CMD (via `sh -c`) for each event; see below.
    #[arg(long, value_name = "CMD", conflicts_with = "print", value_parser = parse_command)]
    pub(crate) exec: Option<String>,
    /// Print each envelope as a JSON line on stdout (the default).
    #[arg(long)]
    pub(crate) print: bool,
    /// Unordered mode: events handled at once.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub(crate) concurrency: u64,
    /// This consumer's name in the group [default: <host>-<pid>-<random>].
    #[arg(long, value_name = "NAME")]
    pub(crate) consumer: Option<String>,
    /// Kill an --exec command running longer than this (a retryable failure).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) exec_timeout: Duration,
    /// Claim entries left pending (by a failure or a dead consumer) once idle this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) claim_idle: Duration,
    /// How long one read waits for new entries (ordered mode: at most 500 ms
    /// per read). Shutdown does not wait for a read to end.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub(crate) block: Duration,
    /// With --inbox: run this SQL statement per event inside the inbox
    /// transaction (exactly-once effects without code). Bound: $1 event id
    /// (uuid), $2 type, $3 key, $4 data (jsonb), $5 the envelope (jsonb).
    #[arg(long, value_name = "STATEMENT", requires = "inbox", conflicts_with_all = ["exec", "print"],
          value_parser = parse_command)]
    pub(crate) sql: Option<String>,
    /// Record handled events in the PostgreSQL inbox and skip events already
    /// recorded for this group (see docs/outbox.md for what that guarantees
    /// with --exec).
    #[arg(long)]
    pub(crate) inbox: bool,
    /// With --inbox: most events in one PostgreSQL round. --sql: one
    /// transaction, each statement in a savepoint of its own (a failing one
    /// is rolled back alone); --exec: one lookup before and one record after
    /// the commands. Events ready together share it; none waits for a batch
    /// to fill. 1 = one per event.
    #[arg(long, value_name = "N", default_value_t = eventbus::pg::DEFAULT_INBOX_BATCH as u64,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub(crate) inbox_batch: u64,
    /// With --inbox --sql: `per-event` runs each event's statement in a
    /// savepoint of its own; `on-failure` runs the batch without savepoints
    /// (one round trip per event fewer) and, when a statement fails, rolls
    /// the batch back and runs it again with them (the statements before
    /// the failing one run twice; the effects still commit once).
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        default_value = "per-event",
        env = "EVENT_BUS_INBOX_SAVEPOINTS",
        requires = "sql"
    )]
    pub(crate) inbox_savepoints: InboxSavepoints,
    /// Ordered or unordered consumption, static membership, timings.
    #[command(flatten)]
    pub(crate) membership: crate::cli::ordered::MembershipArgs,
    /// The HTTP push sink.
    #[command(flatten)]
    pub(crate) http: crate::cli::ordered::HttpArgs,
    /// Retries before dead letters.
    #[command(flatten)]
    pub(crate) retry: crate::cli::retry::RetryArgs,
    /// Stop after N events were handled successfully. Entries read beyond N are
    /// not handled: they stay pending and go to another consumer after --claim-idle.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_events: Option<u64>,
    /// Do not validate events against the catalogue (by default an invalid
    /// event never reaches the handler: it is dead-lettered with the schema errors).
    #[arg(long, conflicts_with = "upcast")]
    pub(crate) no_validate: bool,
    /// Hand every event over at its type's latest schema version (older ones
    /// are upcast) instead of the version it was published with.
    #[arg(long)]
    pub(crate) upcast: bool,
    /// Serve Prometheus `/metrics` (the series of `serve`) on this address,
    /// e.g. 127.0.0.1:9464 [env: EVENT_BUS_METRICS_ADDR; default: off].
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
}

/// `eventbus tail`.
#[derive(Debug, Args)]
#[command(after_help = "\
Prints one JSON line per entry: {\"stream\", \"entry_id\", \"event\"} or, for an entry that
is not a valid envelope, {\"stream\", \"entry_id\", \"error\", \"error_kind\"}. Order holds
within a stream, not across streams. Nothing is acknowledged; no group is involved.

Without --from-start: prints entries published from now on, until interrupted.
With --from-start: prints every entry, then exits once caught up (add --follow to
keep printing new entries). --count stops after N entries in either mode.")]
pub(crate) struct TailArgs {
    /// Start at the beginning of each stream rather than at its end.
    #[arg(long)]
    pub(crate) from_start: bool,
    /// Topics, comma-separated [default: the catalogue topics and every topic seen in the namespace].
    #[arg(long, value_delimiter = ',', value_name = "TOPIC,...")]
    pub(crate) topics: Vec<String>,
    /// Stop after printing N entries.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,
    /// Keep waiting for new entries [default without --from-start].
    #[arg(long, overrides_with = "no_follow")]
    pub(crate) follow: bool,
    /// Exit once caught up [default with --from-start].
    #[arg(long, overrides_with = "follow")]
    pub(crate) no_follow: bool,
}

impl TailArgs {
    /// Whether to keep waiting for new entries once caught up.
    pub(crate) fn follows(&self) -> bool {
        if self.follow {
            true
        } else if self.no_follow {
            false
        } else {
            !self.from_start
        }
    }
}

/// `eventbus streams`.
#[derive(Debug, Args)]
pub(crate) struct StreamsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Topics, comma-separated [default: every topic seen in the namespace].
    #[arg(long, value_delimiter = ',', value_name = "TOPIC,...")]
    pub(crate) topics: Vec<String>,
}

/// `eventbus trim`.
#[derive(Debug, Args)]
#[command(after_help = "\
Per stream (every partition of every topic seen, and the groups' replay streams), trims
the entries every consumer group has acknowledged, and never one a group still needs:
its oldest pending entry, or the first it has not read. Prints the length before, the
safe point (the oldest entry kept), how many entries were trimmed, and the group at the
safe point: the one holding retention back. A stream no group reads keeps its entries 7
days. `eventbus relay` and `eventbus serve` trim the same way every
EVENT_BUS_TRIM_INTERVAL by themselves; this command trims now, and is safe to run from
several hosts at once.")]
pub(crate) struct TrimArgs {
    /// acked (trim once every group acknowledged), acked:<age> (and keep at
    /// least that long, e.g. acked:1h), or off.
    #[arg(long, env = "EVENT_BUS_STREAM_RETENTION", default_value = "acked", value_parser = parse_retention, hide_env_values = true)]
    pub(crate) retention: eventbus::retention::RetentionPolicy,
    /// Report what would be trimmed; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

fn parse_retention(s: &str) -> std::result::Result<eventbus::retention::RetentionPolicy, String> {
    eventbus::retention::RetentionPolicy::parse(s)
        .map_err(|e| crate::config::strip_config_prefix(&e))
}

/// `eventbus demo`.
#[derive(Debug, Args)]
#[command(after_help = "\
The demo works in a fresh namespace `demo-<random>` (never your data), deleted at the
end unless --keep. It exits 0 once every published event was handled. The summary goes
to stdout; stderr gets warnings only, unless -v.")]
pub(crate) struct DemoArgs {
    /// Sample events to publish for each of the twelve event types.
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) events_per_type: u64,
    /// Keep the demo namespace afterwards (to look at it with `streams`/`tail`).
    #[arg(long)]
    pub(crate) keep: bool,
    /// Fail if the events are not all handled within this time.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Log at info on stderr (by default the demo logs only warnings there;
    /// EVENT_BUS_LOG, when set, overrides both).
    #[arg(short = 'v', long)]
    pub(crate) verbose: bool,
}

/// Parses `NAME=VALUE`.
fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

/// The longest duration any flag takes. Every duration ends up in a Redis
/// command (`BLOCK`, `XAUTOCLAIM` idle times, lease expiries) or a timer,
/// and a day is beyond any sensible value of each; a larger number would be
/// accepted here and then refused by Redis on every cycle.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses a duration: a whole number with a unit `ms`, `s`, `m` or `h`
/// (a bare number is seconds), e.g. `500ms`, `30s`, `2m`; more than zero and
/// at most [`MAX_DURATION`].
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let too_long = || format!("{s:?} is longer than 24h, the longest duration taken");
    let n: u64 = match number.parse() {
        Ok(n) => n,
        Err(_) if !number.is_empty() => return Err(too_long()),
        Err(_) => return Err(format!("{s:?} is not a duration like 500ms, 30s, 2m or 1h")),
    };
    let scale = |per: u64| n.checked_mul(per).map(Duration::from_secs);
    let d = match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => scale(1),
        "m" => scale(60),
        "h" => scale(3600),
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    match d {
        Some(d) if d.is_zero() => Err("must be more than zero".into()),
        Some(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(too_long()),
    }
}

/// A shell command or SQL statement: not empty or blank (an empty `--exec`
/// would "handle" every event by doing nothing).
fn parse_command(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "1d", "-1s", "0s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
        for too_long in [
            "25h",
            "86401s",
            "86400001ms",
            "18446744073709551615s",
            "18446744073709551615m",
            "99999999999999999999999s",
        ] {
            let e = parse_duration(too_long).unwrap_err();
            assert!(e.contains("longer than 24h"), "{too_long}: {e}");
        }
    }

    #[test]
    fn headers() {
        assert_eq!(parse_header("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_header("novalue").is_err());
        assert!(parse_header("=x").is_err());
    }

    #[test]
    fn tail_follow_defaults() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Tail(t) => t.follows(),
            _ => unreachable!(),
        };
        assert!(parse(&["eventbus", "tail"]));
        assert!(!parse(&["eventbus", "tail", "--from-start"]));
        assert!(parse(&["eventbus", "tail", "--from-start", "--follow"]));
        assert!(!parse(&["eventbus", "tail", "--follow", "--no-follow"]));
    }
}

/// `consume --inbox-savepoints`: when the inbox's handlers get savepoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum InboxSavepoints {
    /// Each handler in its own savepoint.
    PerEvent,
    /// Savepoints only to isolate a failure.
    OnFailure,
}

impl From<InboxSavepoints> for eventbus::pg::Savepoints {
    fn from(s: InboxSavepoints) -> Self {
        match s {
            InboxSavepoints::PerEvent => eventbus::pg::Savepoints::PerEvent,
            InboxSavepoints::OnFailure => eventbus::pg::Savepoints::OnFailure,
        }
    }
}
