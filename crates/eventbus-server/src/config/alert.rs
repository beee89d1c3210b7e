//! Dead-letter alerting settings, read from the environment by
//! [`crate::config`].
//!
//! | variable | default |
//! |----------|---------|
//! | `EVENT_BUS_ALERT_WEBHOOK_URL` | none: no alerts (a URL with a token in it is never printed) |
//! | `EVENT_BUS_DLQ_ALERT_THRESHOLD` | `10` dead letters waiting |
//! | `EVENT_BUS_DLQ_ALERT_RATE` | `5` dead letters in one minute |

use std::time::Duration;

use eventbus::alert::AlertConfig;

use crate::config::Env;
use crate::error::{CliError, Result};

/// The variables read here.
pub(crate) const ALERT_VARS: &[&str] = &[
    "EVENT_BUS_ALERT_WEBHOOK_URL",
    "EVENT_BUS_DLQ_ALERT_THRESHOLD",
    "EVENT_BUS_DLQ_ALERT_RATE",
];

/// Alerting settings.
#[derive(Clone, Default)]
pub(crate) struct AlertSettings {
    /// Never printed: webhook URLs often carry a secret.
    webhook_url: Option<String>,
    depth_threshold: u64,
    rate_threshold: u64,
}

impl std::fmt::Debug for AlertSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertSettings")
            .field("webhook_url", &self.webhook_url.as_ref().map(|_| "<set>"))
            .field("depth_threshold", &self.depth_threshold)
            .field("rate_threshold", &self.rate_threshold)
            .finish()
    }
}

impl AlertSettings {
    /// Reads and checks the variables.
    pub(crate) fn load(env: &Env) -> Result<Self> {
        let webhook_url = env.get("EVENT_BUS_ALERT_WEBHOOK_URL")?;
        if let Some(u) = &webhook_url {
            match url::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                _ => {
                    return Err(CliError::Setting {
                        var: "EVENT_BUS_ALERT_WEBHOOK_URL",
                        reason: "is not an http(s) URL".into(),
                    })
                }
            }
        }
        let count = |var: &'static str| {
            env.parse(var, "a positive whole number", |s| {
                s.parse::<u64>().ok().filter(|n| *n > 0)
            })
        };
        Ok(AlertSettings {
            webhook_url,
            depth_threshold: count("EVENT_BUS_DLQ_ALERT_THRESHOLD")?.unwrap_or(10),
            rate_threshold: count("EVENT_BUS_DLQ_ALERT_RATE")?.unwrap_or(5),
        })
    }

    /// The alerter's config, if a webhook is configured.
    pub(crate) fn config(&self, namespace: &str) -> Option<AlertConfig> {
        Some(AlertConfig {
            webhook_url: self.webhook_url.clone()?,
            depth_threshold: Some(self.depth_threshold),
            rate_threshold: Some(self.rate_threshold),
            interval: Duration::from_secs(15),
            namespace: namespace.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_values_and_refusals() {
        let s = AlertSettings::load(&Env::from_pairs(&[])).unwrap();
        assert!(s.config("ns").is_none());
        let s = AlertSettings::load(&Env::from_pairs(&[
            (
                "EVENT_BUS_ALERT_WEBHOOK_URL",
                "https://hooks.example/T0/secret",
            ),
            ("EVENT_BUS_DLQ_ALERT_THRESHOLD", "3"),
        ]))
        .unwrap();
        let c = s.config("ns").unwrap();
        assert_eq!((c.depth_threshold, c.rate_threshold), (Some(3), Some(5)));
        assert!(!format!("{s:?}").contains("secret"));
        for (var, value) in [
            ("EVENT_BUS_ALERT_WEBHOOK_URL", "not a url"),
            ("EVENT_BUS_DLQ_ALERT_THRESHOLD", "0"),
            ("EVENT_BUS_DLQ_ALERT_RATE", "x"),
        ] {
            let err = AlertSettings::load(&Env::from_pairs(&[(var, value)])).unwrap_err();
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }
}
