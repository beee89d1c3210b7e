//! Ordered-consumer settings, read from the environment by [`crate::config`];
//! `consume` flags override them.
//!
//! | variable | default | flag |
//! |----------|---------|------|
//! | `EVENT_BUS_HEARTBEAT_MS` | `1000` | `consume --heartbeat` |
//! | `EVENT_BUS_SESSION_TIMEOUT_MS` | `10000` | `consume --session-timeout` |

use std::time::Duration;

use crate::config::Env;
use crate::error::Result;

/// The variables read here.
pub(crate) const ORDERED_VARS: &[&str] =
    &["EVENT_BUS_HEARTBEAT_MS", "EVENT_BUS_SESSION_TIMEOUT_MS"];

/// Group membership timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MembershipSettings {
    /// How often a member heartbeats and renews its leases.
    pub(crate) heartbeat: Duration,
    /// A member silent for longer is dead; its partitions move.
    pub(crate) session_timeout: Duration,
}

impl MembershipSettings {
    /// Reads the variables (defaults 1 s and 10 s).
    pub(crate) fn load(env: &Env) -> Result<Self> {
        let ms = |var| {
            env.parse(var, "a positive whole number of milliseconds", |s| {
                s.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Duration::from_millis)
            })
        };
        Ok(MembershipSettings {
            heartbeat: ms("EVENT_BUS_HEARTBEAT_MS")?.unwrap_or(Duration::from_secs(1)),
            session_timeout: ms("EVENT_BUS_SESSION_TIMEOUT_MS")?.unwrap_or(Duration::from_secs(10)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let s = MembershipSettings::load(&Env::from_pairs(&[])).unwrap();
        assert_eq!(s.heartbeat, Duration::from_secs(1));
        assert_eq!(s.session_timeout, Duration::from_secs(10));
        let s = MembershipSettings::load(&Env::from_pairs(&[
            ("EVENT_BUS_HEARTBEAT_MS", "200"),
            ("EVENT_BUS_SESSION_TIMEOUT_MS", "2000"),
        ]))
        .unwrap();
        assert_eq!(
            (s.heartbeat, s.session_timeout),
            (Duration::from_millis(200), Duration::from_secs(2))
        );
        for (var, value) in [
            ("EVENT_BUS_HEARTBEAT_MS", "0"),
            ("EVENT_BUS_HEARTBEAT_MS", "1s"),
            ("EVENT_BUS_SESSION_TIMEOUT_MS", "-5"),
        ] {
            let err = MembershipSettings::load(&Env::from_pairs(&[(var, value)])).unwrap_err();
            assert!(err.to_string().starts_with(var), "{err}");
            assert_eq!(err.exit_code(), 2);
        }
    }
}
