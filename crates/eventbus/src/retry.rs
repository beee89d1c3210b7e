//! Retry policy: how many attempts an event gets, and how long to wait
//! between them.
//!
//! Attempts are counted durably by Redis (the entry's delivery count in the
//! group's pending list), so a consumer crash does not reset them: attempt
//! `n` is the `n`-th delivery of the entry to the group.

use std::time::Duration;

use crate::{Error, Result};

/// Default maximum attempts (`EVENT_BUS_RETRY_ATTEMPTS`).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// The wait before each retry.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Backoff {
    /// Exponential with full jitter: before retry `n` (n ≥ 1) wait a random
    /// time in `[0, min(max, initial · multiplierⁿ⁻¹)]` (AWS's "full
    /// jitter": spreads retries of many consumers apart).
    Exponential {
        /// The cap of the first wait.
        initial: Duration,
        /// The largest wait.
        max: Duration,
        /// Growth per attempt (≥ 1).
        multiplier: f64,
    },
    /// Explicit waits, like JetStream's `BackOff` list: retry `n` waits
    /// `schedule[n - 1]`, the last one repeating.
    Schedule(Vec<Duration>),
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::Exponential {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
            multiplier: 2.0,
        }
    }
}

/// A consumer's retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Deliveries before an event is dead-lettered (1 = no retry). Default 5.
    pub max_attempts: u32,
    /// Waits between attempts.
    pub backoff: Backoff,
    /// Longest time one attempt may take; a handler still running then has
    /// failed (retryable). `None`: no limit. Default 30 s.
    pub attempt_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            attempt_timeout: Some(Duration::from_secs(30)),
        }
    }
}

impl RetryPolicy {
    /// Checks the policy.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::Config("max_attempts must be at least 1".into()));
        }
        match &self.backoff {
            Backoff::Exponential {
                initial,
                max,
                multiplier,
            } => {
                if initial > max {
                    return Err(Error::Config(format!(
                        "backoff initial {initial:?} is larger than max {max:?}"
                    )));
                }
                if !multiplier.is_finite() || *multiplier < 1.0 {
                    return Err(Error::Config(format!(
                        "backoff multiplier must be at least 1, got {multiplier}"
                    )));
                }
            }
            Backoff::Schedule(s) if s.is_empty() => {
                return Err(Error::Config("backoff schedule is empty".into()))
            }
            Backoff::Schedule(_) => {}
        }
        if self.attempt_timeout == Some(Duration::ZERO) {
            return Err(Error::Config("attempt timeout must be positive".into()));
        }
        Ok(())
    }

    /// True when an event that failed on delivery `attempt` (1-based) has
    /// no attempts left.
    pub fn exhausted(&self, attempt: u64) -> bool {
        attempt >= u64::from(self.max_attempts)
    }

    /// The upper bound of the wait after a failed delivery `attempt`
    /// (1-based), before jitter.
    pub fn max_delay(&self, attempt: u64) -> Duration {
        let n = attempt.max(1);
        match &self.backoff {
            Backoff::Exponential {
                initial,
                max,
                multiplier,
            } => {
                let factor = multiplier.powi(i32::try_from(n - 1).unwrap_or(i32::MAX).min(64));
                let secs = (initial.as_secs_f64() * factor).min(max.as_secs_f64());
                Duration::from_secs_f64(secs.max(0.0))
            }
            Backoff::Schedule(s) => {
                let i = usize::try_from(n - 1)
                    .unwrap_or(usize::MAX)
                    .min(s.len() - 1);
                s[i]
            }
        }
    }

    /// The wait after a failed delivery `attempt` (1-based): full jitter
    /// for exponential backoff, the exact value for a schedule. `unit` is a
    /// random number in `[0, 1]`.
    pub fn delay_with(&self, attempt: u64, unit: f64) -> Duration {
        let cap = self.max_delay(attempt);
        match self.backoff {
            Backoff::Exponential { .. } => cap.mul_f64(unit.clamp(0.0, 1.0)),
            Backoff::Schedule(_) => cap,
        }
    }

    /// [`RetryPolicy::delay_with`] with a fresh random number.
    pub fn delay(&self, attempt: u64) -> Duration {
        self.delay_with(attempt, rand::random_range(0.0..=1.0))
    }

    /// The longest time an event can keep being redelivered under this
    /// policy (every wait at its maximum, every attempt at its timeout):
    /// the inbox retention should be longer than this.
    pub fn horizon(&self) -> Duration {
        (1..u64::from(self.max_attempts))
            .map(|a| self.max_delay(a) + self.attempt_timeout.unwrap_or_default())
            .sum::<Duration>()
            + self.attempt_timeout.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(initial: u64, max: u64, multiplier: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            backoff: Backoff::Exponential {
                initial: Duration::from_millis(initial),
                max: Duration::from_millis(max),
                multiplier,
            },
            attempt_timeout: None,
        }
    }

    #[test]
    fn exponential_caps_grow_then_flatten() {
        let p = exp(100, 1000, 2.0);
        let caps: Vec<u128> = (1..=6).map(|a| p.max_delay(a).as_millis()).collect();
        assert_eq!(caps, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_cap() {
        let p = exp(100, 1000, 3.0);
        for attempt in 1..=6 {
            let cap = p.max_delay(attempt);
            assert_eq!(p.delay_with(attempt, 0.0), Duration::ZERO);
            assert_eq!(p.delay_with(attempt, 1.0), cap);
            for _ in 0..200 {
                let d = p.delay(attempt);
                assert!(d <= cap, "attempt {attempt}: {d:?} > {cap:?}");
            }
        }
        // jitter actually spreads
        let spread: std::collections::HashSet<u128> =
            (0..50).map(|_| p.delay(3).as_micros()).collect();
        assert!(spread.len() > 10);
    }

    #[test]
    fn schedules_repeat_their_last_step() {
        let p = RetryPolicy {
            max_attempts: 5,
            backoff: Backoff::Schedule(vec![Duration::from_secs(1), Duration::from_secs(5)]),
            attempt_timeout: Some(Duration::from_secs(2)),
        };
        let waits: Vec<u64> = (1..=4).map(|a| p.delay(a).as_secs()).collect();
        assert_eq!(waits, [1, 5, 5, 5]);
        assert!(!p.exhausted(4));
        assert!(p.exhausted(5));
        // 4 waits (1+5+5+5) + 5 attempts of 2 s
        assert_eq!(p.horizon(), Duration::from_secs(26));
    }

    #[test]
    fn refuses_bad_policies() {
        let mut p = exp(100, 10, 2.0);
        assert!(p.validate().is_err());
        p = exp(10, 100, 0.5);
        assert!(p.validate().is_err());
        p = exp(10, 100, f64::NAN);
        assert!(p.validate().is_err());
        p = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert!(p.validate().is_err());
        p = RetryPolicy {
            backoff: Backoff::Schedule(vec![]),
            ..RetryPolicy::default()
        };
        assert!(p.validate().is_err());
        assert!(RetryPolicy::default().validate().is_ok());
    }
}
