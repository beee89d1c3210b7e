//! `eventbus bench`: the scenarios of `eventbus-bench` (the library in
//! `bench/`, also run by `bench/run`) against the configured Redis and
//! PostgreSQL. Peers run only when their programs are given
//! (`--peer-rust-bin`, `--peer-node-dir`; `bench/run` builds them).

use std::io::Write;

use crate::config::Settings;
use crate::error::{CliError, Result};

/// PostgreSQL when `DATABASE_URL` is unset: the local server, as the demo uses.
const LOCAL_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Runs the benchmark and prints its table (or JSON with `--json`).
pub(crate) async fn run(params: eventbus_bench::Params, settings: &Settings) -> Result<()> {
    let json = params.json;
    let target = eventbus_bench::Target {
        redis_url: settings.redis_url().to_owned(),
        database_url: settings
            .pg
            .database_url()
            .unwrap_or(LOCAL_DATABASE_URL)
            .to_owned(),
        partitions: settings.partitions,
        self_args: vec!["bench".to_owned()],
    };
    let Some(report) = eventbus_bench::run(target, params)
        .await
        .map_err(|e| CliError::Failed(format!("bench: {e}")))?
    else {
        return Ok(()); // this process was the soak's consumer
    };
    let text = if json {
        serde_json::to_string_pretty(&report).expect("a report serializes") + "\n"
    } else {
        report.table()
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(CliError::Output)
}
