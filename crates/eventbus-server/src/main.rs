//! # `eventbus`, the binary
//!
//! The command line of the eventbus: publish events, consume them with a
//! consumer group (printing them or running a command per event), tail and
//! inspect streams, and run a self-contained demo.
//!
//! ## Layout
//!
//! - [`cli`]: the `clap` definitions of every command and flag.
//! - [`config`]: the only place that reads environment variables; flags
//!   override them.
//! - [`error`]: the one error type and its exit codes (0 ok, 1 failure,
//!   2 bad input or usage, 69 Redis or PostgreSQL unreachable).
//! - [`output`]: JSON lines on stdout.
//! - [`cmd`]: one module per command; `cmd::demo` holds the sample-event
//!   generator.
//!
//! `main` parses the command line, loads the settings, starts logging on
//! stderr, runs the command on a Tokio runtime and turns an error into one
//! line on stderr and an exit status.

mod cli;
mod cmd;
mod config;
mod error;
mod http;
mod output;
mod sink;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::config::{Env, LogFormat, LogSettings, Settings};
use crate::error::{CliError, EXIT_USAGE};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    let env = Env::from_process();
    let mut settings = match Settings::load(&cli.global, &env) {
        Ok(s) => s,
        Err(e) => return e.report(),
    };
    // The demo keeps stderr to warnings unless -v; an explicit EVENT_BUS_LOG wins.
    if let cli::Command::Demo(demo) = &cli.command {
        if !matches!(env.get("EVENT_BUS_LOG"), Ok(Some(_))) {
            settings.log.filter = cmd::demo::log_filter(demo.verbose).to_owned();
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("eventbus: error: cannot start the async runtime: {e}");
            return ExitCode::from(error::EXIT_FAILURE);
        }
    };
    // The span exporter runs on the runtime: start it inside.
    let tracing = {
        let _inside = runtime.enter();
        match init_logging(&settings.log, settings.telemetry.tracing.as_ref()) {
            Ok(t) => t,
            Err(e) => return e.report(),
        }
    };
    let result = runtime.block_on(cmd::run(cli.command, settings));
    // Short-lived commands (`publish`, `dlq replay`) end here: export the
    // spans still queued (bounded by the export timeout) before exiting.
    if let Some(t) = tracing {
        t.shutdown();
    }
    // Do not wait for abandoned handler tasks (e.g. an --exec child past the
    // shutdown deadline): their entries stay pending and are redelivered.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

/// Prints a clap error as one line (help and version go out as clap prints them).
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            // clap's text: "error: ...", detail lines (missing arguments,
            // tips), then "Usage: ...". Fold it into one line.
            let text = e.to_string();
            let mut parts = Vec::new();
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if line.starts_with("Usage:") || line.starts_with("For more information") {
                    break;
                }
                parts.push(line.strip_prefix("error: ").unwrap_or(line));
            }
            let message = if parts.is_empty() {
                "invalid usage".to_owned()
            } else {
                parts
                    .join(" ")
                    .replace(": tip: ", "; ")
                    .replace(" tip: ", "; ")
            };
            // clap repeats the values it refuses: a URL or header may be one.
            let message = eventbus::redact(&message);
            eprintln!("eventbus: error: {message} (try --help)");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Logs go to stderr, filtered by `EVENT_BUS_LOG`, as JSON or text; with
/// an OTLP endpoint, spans also go to OpenTelemetry (see `config::telemetry`).
fn init_logging(
    log: &LogSettings,
    tracing: Option<&eventbus::telemetry::TracingConfig>,
) -> Result<Option<eventbus::telemetry::Tracing>, CliError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = tracing_subscriber::EnvFilter::try_new(&log.filter)
        .map_err(|e| CliError::Setting {
            var: "EVENT_BUS_LOG",
            reason: format!("{:?} is not a log filter: {e}", log.filter),
        })?
        // The spans made for OpenTelemetry are not log lines.
        .add_directive(
            format!("{}=off", eventbus::telemetry::SPAN_TARGET)
                .parse()
                .expect("a valid directive"),
        );
    let format = log.format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(|| Redacting(std::io::stderr()));
    let fmt = match format {
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    let started =
        match tracing {
            Some(config) => Some(eventbus::telemetry::Tracing::start(config).map_err(|e| {
                CliError::Setting {
                    var: "OTEL_EXPORTER_OTLP_ENDPOINT",
                    reason: config::strip_config_prefix(&e),
                }
            })?),
            None => None,
        };
    tracing_subscriber::registry()
        .with(fmt)
        .with(started.as_ref().map(|t| t.layer()))
        .init();
    Ok(started)
}

/// A writer for log lines (stderr), each redacted ([`eventbus::redact`])
/// on its way out: the last guard against a secret in a logged error,
/// after the redaction where messages are made.
struct Redacting<W>(W);

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter writes each event whole, in one call.
        let line = eventbus::redact(&String::from_utf8_lossy(buf));
        self.0.write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::Redacting;

    #[test]
    fn log_lines_are_redacted() {
        let mut w = Redacting(Vec::new());
        let line = r#"{"level":"WARN","error":"cannot reach PostgreSQL at postgres://u:SENTINEL@h/x?sslpassword=SENTINEL","n":1}"#;
        w.write_all(line.as_bytes()).unwrap();
        let out = String::from_utf8(w.0).unwrap();
        assert!(!out.contains("SENTINEL"), "{out}");
        assert!(out.contains(r#""n":1}"#), "{out}");
    }
}
