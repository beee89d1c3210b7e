//! `consume` flags of the retry policy and the dead-letter alerter.

use std::time::Duration;

use clap::Args;
use eventbus::{Backoff, RetryPolicy};

use crate::cli::parse_duration;
use crate::error::{CliError, Result};

/// How failed events are retried before they are dead-lettered.
#[derive(Debug, Default, Clone, Args)]
pub(crate) struct RetryArgs {
    /// Deliveries before an event is dead-lettered [env: EVENT_BUS_RETRY_ATTEMPTS; default: 5].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000),
          help_heading = "Retries and dead letters")]
    pub(crate) retry_attempts: Option<u32>,
    /// Exponential backoff with full jitter: the first wait's cap.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration,
          help_heading = "Retries and dead letters")]
    pub(crate) retry_initial: Duration,
    /// Exponential backoff: the largest wait.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration,
          help_heading = "Retries and dead letters")]
    pub(crate) retry_max: Duration,
    /// Exponential backoff: growth per attempt (≥ 1).
    #[arg(
        long,
        value_name = "X",
        default_value_t = 2.0,
        help_heading = "Retries and dead letters"
    )]
    pub(crate) retry_multiplier: f64,
    /// Explicit waits instead of exponential backoff, e.g. `1s,5s,30s` (the last repeats).
    #[arg(long, value_name = "D,D,...", value_delimiter = ',', value_parser = parse_duration,
          conflicts_with_all = ["retry_initial", "retry_max", "retry_multiplier"],
          help_heading = "Retries and dead letters")]
    pub(crate) retry_schedule: Vec<Duration>,
    /// Longest time one attempt may take (a retryable failure after that)
    /// [default: 30s; with --exec, its --exec-timeout applies instead].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          help_heading = "Retries and dead letters")]
    pub(crate) attempt_timeout: Option<Duration>,
    /// Unordered mode and replays: a retry waiting at least this long goes
    /// through the scheduler (kept in Redis, so a restart does not reset
    /// it) instead of memory; `off`: always in memory. See docs/scheduled.md.
    #[arg(long, value_name = "DURATION|off", default_value = "30s",
          value_parser = parse_scheduled_retry_after,
          help_heading = "Retries and dead letters")]
    pub(crate) scheduled_retry_after: ScheduledRetryAfter,
}

impl RetryArgs {
    /// The policy: flags, then `EVENT_BUS_RETRY_ATTEMPTS`, then defaults.
    pub(crate) fn policy(&self, env_attempts: Option<u32>, exec: bool) -> Result<RetryPolicy> {
        let backoff = if self.retry_schedule.is_empty() {
            Backoff::Exponential {
                initial: self.retry_initial,
                max: self.retry_max,
                multiplier: self.retry_multiplier,
            }
        } else {
            Backoff::Schedule(self.retry_schedule.clone())
        };
        let policy = RetryPolicy {
            max_attempts: self
                .retry_attempts
                .or(env_attempts)
                .unwrap_or(eventbus::DEFAULT_MAX_ATTEMPTS),
            backoff,
            attempt_timeout: match (self.attempt_timeout, exec) {
                (Some(t), _) => Some(t),
                (None, true) => None, // the command's own --exec-timeout
                (None, false) => Some(Duration::from_secs(30)),
            },
        };
        policy.validate().map_err(|e| {
            CliError::Input(format!(
                "retry policy: {}",
                e.to_string().trim_start_matches("invalid configuration: ")
            ))
        })?;
        Ok(policy)
    }
}

/// `--scheduled-retry-after`: a threshold, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScheduledRetryAfter(pub(crate) Option<Duration>);

impl Default for ScheduledRetryAfter {
    fn default() -> Self {
        ScheduledRetryAfter(Some(eventbus::DEFAULT_SCHEDULED_RETRY_AFTER))
    }
}

fn parse_scheduled_retry_after(s: &str) -> Result<ScheduledRetryAfter, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(ScheduledRetryAfter(None));
    }
    parse_duration(s)
        .map(|d| ScheduledRetryAfter(Some(d)))
        .map_err(|e| format!("{e} (or `off`: long retries wait in memory)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_retry_after_takes_a_duration_or_off() {
        assert_eq!(
            parse_scheduled_retry_after("45s"),
            Ok(ScheduledRetryAfter(Some(Duration::from_secs(45))))
        );
        assert_eq!(
            parse_scheduled_retry_after("OFF"),
            Ok(ScheduledRetryAfter(None))
        );
        let e = parse_scheduled_retry_after("soon").unwrap_err();
        assert!(e.contains("or `off`"), "{e}");
        assert_eq!(
            ScheduledRetryAfter::default().0,
            Some(eventbus::DEFAULT_SCHEDULED_RETRY_AFTER)
        );
    }
}
