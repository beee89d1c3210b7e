//! `eventbus-bench-ordered`: ordered consumption beside unordered, and
//! rebalance times, in one run — the `unordered`, `ordered` and
//! `rebalance` sections of the eventbus-bench library (see its docs):
//!
//! - **throughput**: `--events` events published in pipelined batches to one
//!   topic, consumed by a no-op handler until every one is acknowledged, with
//!   unordered mode (2 consumers × `--concurrency`) and ordered mode with 1,
//!   2 and 4 members. Consumers start first; in ordered mode the clock starts
//!   once every partition is leased.
//! - **rebalance**: 3 idle ordered members; the time from starting a 4th
//!   until the 16 partitions are balanced 4/4/4/4 (a join), and from
//!   crashing one (its task aborted, nothing released) until all its
//!   partitions are owned by the others (a kill), for the default timings
//!   (1 s heartbeat, 10 s session timeout) and a fast setting (200 ms, 2 s).

use clap::Parser;
use eventbus_bench::{Params, Target};

#[derive(Parser, Debug)]
#[command(about = "Ordered vs unordered consumption throughput, and rebalance times, in one run")]
struct Args {
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Events per throughput scenario.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Payload size of `data` in bytes.
    #[arg(long, default_value_t = 200)]
    payload: usize,
    /// Partitions per topic.
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// Handler concurrency per unordered consumer.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Rebalance measurements per timing setting (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The library's parameters, parsed from flags like any command line.
#[derive(Parser, Debug)]
struct WithParams {
    #[command(flatten)]
    params: Params,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut flags: Vec<String> = [
        "eventbus-bench-ordered",
        "--only",
        "unordered,ordered,rebalance",
        "--skip-baselines",
        "--skip-peers",
        "--ordered-members",
        "1,2,4",
    ]
    .map(str::to_owned)
    .to_vec();
    flags.extend(["--events".into(), args.events.to_string()]);
    flags.extend(["--payload".into(), args.payload.to_string()]);
    flags.extend(["--concurrency".into(), args.concurrency.to_string()]);
    flags.extend(["--rebalance-rounds".into(), args.rounds.to_string()]);
    if args.json {
        flags.push("--json".into());
    }
    let params = WithParams::parse_from(flags).params;
    let target = Target {
        redis_url: args.redis_url,
        // No PostgreSQL scenario runs here.
        database_url: String::new(),
        partitions: args.partitions,
        self_args: Vec::new(),
    };
    match eventbus_bench::run(target, params).await {
        Ok(Some(report)) if args.json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report serializes")
        ),
        Ok(Some(report)) => print!("{}", report.table()),
        Ok(None) => {}
        Err(e) => {
            eprintln!("eventbus-bench-ordered: error: {e}");
            std::process::exit(1);
        }
    }
}
