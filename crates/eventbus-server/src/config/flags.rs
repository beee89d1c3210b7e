//! The flags that override configuration variables: the global ones and
//! `eventbus serve`'s. They live with the settings they feed, so that
//! `config` never imports `cli` (imports run `cli` → `config`).

use std::net::SocketAddr;

use clap::Args;

/// Flags shared by every command; each overrides an environment variable.
#[derive(Debug, Default, Clone, Args)]
pub(crate) struct GlobalArgs {
    /// Redis URL [env: REDIS_URL] (prefer the variable: flags show in `ps`).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "URL"
    )]
    pub(crate) redis_url: Option<String>,
    /// Key prefix of every stream [env: EVENT_BUS_NAMESPACE].
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "NS"
    )]
    pub(crate) namespace: Option<String>,
    /// Partitions per topic; must match every publisher and consumer [env: EVENT_BUS_PARTITIONS].
    #[arg(long, global = true, help_heading = "Global options", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) partitions: Option<u32>,
    /// PostgreSQL URL for the outbox, relay and inbox [env: DATABASE_URL]
    /// (prefer the variable: flags show in `ps`).
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) database_url: Option<String>,
    /// Schema of the eventbus tables [env: EVENT_BUS_DB_SCHEMA; default: public].
    #[arg(long, global = true, value_name = "SCHEMA")]
    pub(crate) db_schema: Option<String>,
    /// PostgreSQL connections this process holds at most, shared by all its
    /// parts and independent of handler concurrency
    /// [env: EVENT_BUS_PG_POOL_SIZE; default: 6] (sizing: docs/operations.md).
    #[arg(long, global = true, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) pg_pool_size: Option<u32>,
}

/// `eventbus serve`: the HTTP admin API, the relay and the dead-letter alerter in one process.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on [env: EVENT_BUS_HTTP_ADDR] [default: 127.0.0.1:8080].
    /// A non-loopback address needs EVENT_BUS_API_TOKEN.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) addr: Option<SocketAddr>,
    /// Largest request body in bytes [env: EVENT_BUS_HTTP_BODY_LIMIT] [default: 2097152].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) body_limit: Option<u64>,
    /// Do not run the outbox relay in this process (run `eventbus relay` elsewhere).
    #[arg(long)]
    pub(crate) no_relay: bool,
    /// Also run the consumers listed in this JSON file:
    /// {"consumers": [{"name": "billing", "args": ["--group", "billing", "--exec", "./handle.sh"]}]}
    /// where `args` are `eventbus consume` flags (sinks, group, mode, retry policy).
    #[arg(long, value_name = "FILE")]
    pub(crate) consumers: Option<std::path::PathBuf>,
}
