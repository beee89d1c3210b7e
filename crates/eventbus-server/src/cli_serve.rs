//! Flags of `eventbus serve`.

use std::net::SocketAddr;

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
