//! The binary's one error type and how each kind maps to an exit code.
//!
//! Exit codes (also shown in `eventbus --help`):
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success |
//! | 1    | anything else (a Redis command failed, the demo timed out, ...) |
//! | 2    | bad input or usage: unknown flags, bad JSON, unreadable input file, invalid event, a value PostgreSQL refuses, bad environment variable or URL (also a server that refuses the settings: unknown user, role or database, wrong password) |
//! | 69   | a service is unavailable (`EX_UNAVAILABLE`): Redis or PostgreSQL cannot be reached |
//! | 130  | the demo was interrupted by a signal (`consume` and `tail` stop gracefully and exit 0) |

use std::io;
use std::process::ExitCode;
use std::time::Duration;

/// Exit status for success.
pub(crate) const EXIT_OK: u8 = 0;
/// Exit status for failures that are neither bad input nor an unavailable service.
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Exit status for bad input or usage (clap uses it for bad flags too).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit status when Redis or PostgreSQL cannot be reached (`EX_UNAVAILABLE` from `sysexits.h`).
pub(crate) const EXIT_UNAVAILABLE: u8 = 69;

/// Exit status after an interrupting signal (128 + SIGINT), where a command
/// cannot finish its job (the demo).
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

/// The exit codes, for `--help`.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   success
  1   any other failure (a Redis command failed, the demo timed out, a schemas
      check found a breaking change, ...)
  2   bad input or usage: unknown flag, bad JSON, unreadable file, invalid event,
      a value PostgreSQL refuses, bad environment variable or URL, a server that
      refuses the settings (unknown user, role or database, wrong password)
  69  Redis or PostgreSQL unreachable (URLs are shown with passwords replaced by ***)
  130 the demo was interrupted (consume and tail stop gracefully and exit 0)

Errors are printed as one line on stderr, starting with `eventbus: error: `;
secrets (passwords in URLs and DSNs, credential headers) are shown as ***.";

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// An environment variable (or the flag overriding it) has an unusable value.
    #[error("{var}: {reason}")]
    Setting {
        /// The variable or flag, e.g. `EVENT_BUS_PARTITIONS`.
        var: &'static str,
        /// What is wrong with it (never the value of a secret).
        reason: String,
    },

    /// Bad input given on the command line or in an input file.
    #[error("{0}")]
    Input(String),

    /// An input file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        /// What the file is for, e.g. `--data file`.
        what: &'static str,
        /// The file as given (`-` for stdin).
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// Writing to stdout failed (a closed pipe ends the command quietly).
    #[error("cannot write output: {0}")]
    Output(#[source] io::Error),

    /// A bus operation failed.
    #[error(transparent)]
    Bus(#[from] eventbus::Error),

    /// A signal interrupted a command that cannot stop early with success.
    #[error("{0} interrupted")]
    Interrupted(&'static str),

    /// A check found problems (`schemas check`, `schemas docs --check`).
    #[error("{0}")]
    Failed(String),

    /// A program this command runs (`eventbus bench` runs eventbus-bench)
    /// failed with this exit status; it reported why itself.
    #[error("eventbus-bench exited with status {0}")]
    Child(u8),

    /// The demo did not see every published event handled in time.
    #[error("demo: {missing} of {published} events were not handled within {timeout:?}")]
    DemoIncomplete {
        /// Events not handled.
        missing: usize,
        /// Events published.
        published: usize,
        /// How long the demo waited.
        timeout: Duration,
    },
}

impl CliError {
    /// The process exit status for this error (see the module docs).
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Setting { .. } | CliError::Input(_) | CliError::ReadFile { .. } => EXIT_USAGE,
            CliError::Bus(e) => match e {
                eventbus::Error::Config(_)
                | eventbus::Error::InvalidEvent(_)
                | eventbus::Error::InvalidInput(_)
                | eventbus::Error::Schema(_)
                | eventbus::Error::Catalog(_) => EXIT_USAGE,
                e if e.is_transient() => EXIT_UNAVAILABLE,
                _ => EXIT_FAILURE,
            },
            CliError::Interrupted(_) => EXIT_INTERRUPTED,
            CliError::Child(code) => *code,
            CliError::Output(_) | CliError::Failed(_) | CliError::DemoIncomplete { .. } => {
                EXIT_FAILURE
            }
        }
    }

    /// True for a closed stdout (e.g. `eventbus tail | head`): not worth a message.
    pub(crate) fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// Prints the error as one line on stderr, secrets redacted, and
    /// returns the exit status.
    pub(crate) fn report(&self) -> ExitCode {
        if self.is_broken_pipe() {
            return ExitCode::from(EXIT_OK);
        }
        let message = eventbus::redact(&self.to_string()).replace('\n', " ");
        eprintln!("eventbus: error: {message}");
        ExitCode::from(self.exit_code())
    }
}

/// The binary's result type.
pub(crate) type Result<T, E = CliError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_by_kind() {
        assert_eq!(CliError::Input("x".into()).exit_code(), 2);
        assert_eq!(
            CliError::Setting {
                var: "EVENT_BUS_PARTITIONS",
                reason: "x".into()
            }
            .exit_code(),
            2
        );
        assert_eq!(
            CliError::Bus(eventbus::Error::InvalidEvent("x".into())).exit_code(),
            2
        );
        assert_eq!(
            CliError::Bus(eventbus::Error::Timeout(Duration::from_secs(1))).exit_code(),
            69
        );
        let decode = eventbus::Envelope::from_fields(std::iter::empty()).unwrap_err();
        assert_eq!(CliError::Bus(decode.into()).exit_code(), 1);
        assert!(CliError::Output(io::ErrorKind::BrokenPipe.into()).is_broken_pipe());
    }
}
