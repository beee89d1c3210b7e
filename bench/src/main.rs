//! `eventbus-bench`: every benchmark scenario of eventbus beside the Redis
//! and PostgreSQL baselines and the peers, in one run (see the library docs
//! and docs/benchmarks.md). `bench/run` builds it in release mode and runs it.

use clap::Parser;
use eventbus_bench::{Params, Persistence, Target};

#[derive(Parser, Debug)]
#[command(
    about = "Benchmarks eventbus beside redis-benchmark, pgbench and peer libraries, in one run"
)]
struct Cli {
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// PostgreSQL URL for the outbox scenarios and pgbench.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Partitions per topic.
    #[arg(long, env = "EVENT_BUS_PARTITIONS", default_value_t = 16)]
    partitions: u32,
    /// Instead of the sections: one Redis vs a 3-master Redis Cluster. Starts
    /// a private Redis (master + replica) and a private cluster (3 masters +
    /// 3 replicas), both with --persistence, and runs publish batched,
    /// publish one at a time, and publish → consume → ack (unordered,
    /// ordered) on each in the same run (`--only` picks among those).
    /// Needs redis-server and redis-cli; ignores --redis-url and PostgreSQL.
    #[arg(long)]
    cluster: bool,
    /// With --cluster: persistence of every node of both deployments.
    #[arg(long, value_enum, default_value = "always")]
    persistence: Persistence,
    #[command(flatten)]
    params: Params,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // Tracing on (docs/benchmarks.md, "Tracing on and off") when an OTLP
    // endpoint is set: every span of the library exported, as in `eventbus`.
    let tracing = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .map(|base| {
            use tracing_subscriber::layer::SubscriberExt;
            use tracing_subscriber::util::SubscriberInitExt;
            let url = format!("{}/v1/traces", base.trim_end_matches('/'));
            let mut config = eventbus::telemetry::TracingConfig::new(
                url.parse().expect("OTEL_EXPORTER_OTLP_ENDPOINT is a URL"),
                "eventbus-bench",
            );
            config.sampler = eventbus::telemetry::TraceSampler::AlwaysOn;
            let t = eventbus::telemetry::Tracing::start(&config).expect("the OTLP exporter starts");
            tracing_subscriber::registry().with(t.layer()).init();
            t
        });
    let json = cli.params.json;
    let result = if cli.cluster {
        eventbus_bench::single_vs_cluster(cli.params, cli.partitions, cli.persistence)
            .await
            .map(Some)
    } else {
        let target = Target {
            redis_url: cli.redis_url,
            database_url: cli.database_url,
            partitions: cli.partitions,
            self_args: Vec::new(),
        };
        eventbus_bench::run(target, cli.params).await
    };
    if let Some(t) = tracing {
        eprintln!(
            "eventbus-bench: {} trace spans dropped (queue full)",
            eventbus::telemetry::spans_dropped()
        );
        tokio::task::spawn_blocking(move || t.shutdown()).await.ok();
    }
    match result {
        Ok(Some(report)) if json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report serializes")
        ),
        Ok(Some(report)) => print!("{}", report.table()),
        Ok(None) => {}
        Err(e) => {
            eprintln!("eventbus-bench: error: {e}");
            std::process::exit(1);
        }
    }
}
