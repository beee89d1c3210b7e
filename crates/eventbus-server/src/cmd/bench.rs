//! `eventbus bench`: runs the benchmark program `eventbus-bench` (bench/,
//! also run by `bench/run`) against the configured Redis and PostgreSQL.
//!
//! The benchmark harness (and the private servers of the testkit it starts
//! for `--cluster`) is a program of its own, so the `eventbus` binary links
//! neither (docs/benchmarks.md, "Binary size"). It is found in
//! `EVENTBUS_BENCH_BIN`, next to this executable, or on `PATH`.

use std::path::{Path, PathBuf};

use crate::cli::BenchArgs;
use crate::config::Settings;
use crate::error::{CliError, Result};

/// The variable naming the benchmark program (as in bench/run).
const BENCH_BIN: &str = "EVENTBUS_BENCH_BIN";

/// Runs `eventbus-bench` with the arguments, its exit status ours.
pub(crate) async fn run(args: BenchArgs, settings: &Settings) -> Result<()> {
    let program = find(std::env::var_os(BENCH_BIN).map(PathBuf::from))?;
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args.args)
        .env("REDIS_URL", settings.redis_url())
        .env("EVENT_BUS_PARTITIONS", settings.partitions.to_string());
    if let Some(url) = settings.pg.database_url() {
        cmd.env("DATABASE_URL", url);
    }
    let status = cmd
        .status()
        .await
        .map_err(|e| CliError::Failed(format!("bench: cannot run {}: {e}", program.display())))?;
    match status.code() {
        Some(0) => Ok(()),
        code => Err(CliError::Child(
            code.and_then(|c| u8::try_from(c).ok()).unwrap_or(1),
        )),
    }
}

/// The benchmark program: `explicit` if given, else `eventbus-bench` next
/// to this executable, else on `PATH`.
fn find(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(CliError::Input(format!(
                "{BENCH_BIN}={} is not a file: build it with `cargo build --release -p eventbus-bench`",
                path.display()
            )))
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("eventbus-bench")));
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("eventbus-bench"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    beside
        .into_iter()
        .chain(on_path)
        .find(|p: &PathBuf| Path::is_file(p))
        .ok_or_else(|| {
            CliError::Input(format!(
                "eventbus bench runs the separate program eventbus-bench, which was not found next to \
                 this executable or on PATH: build it with `cargo build --release -p eventbus-bench` \
                 (bench/run does), or set {BENCH_BIN}"
            ))
        })
}
