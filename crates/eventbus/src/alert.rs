//! The dead-letter alerter: posts to a webhook when the dead-letter queue's
//! depth, or the number of events dead-lettered in the last minute, crosses
//! its threshold, once per crossing, and again when it recovers.
//!
//! The body is JSON with a Slack-compatible `text` (a Slack incoming webhook
//! shows it as is) plus fields for machines: `alert` (`dlq_depth` or
//! `dlq_rate`), `status` (`firing` or `resolved`), `value`, `threshold`,
//! `namespace`, `at`. A failed post is tried again at the next check: the
//! alert's state only changes once the webhook accepted it.

use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::deadletter::DeadLetterStore;
use crate::{Error, Result};

/// Alerter settings.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Where to post (`EVENT_BUS_ALERT_WEBHOOK_URL`).
    pub webhook_url: String,
    /// Fire when this many dead letters wait (`EVENT_BUS_DLQ_ALERT_THRESHOLD`).
    pub depth_threshold: Option<u64>,
    /// Fire when this many events were dead-lettered in the last minute
    /// (`EVENT_BUS_DLQ_ALERT_RATE`).
    pub rate_threshold: Option<u64>,
    /// How often to check. Default 15 s.
    pub interval: Duration,
    /// Shown in messages, to tell environments apart.
    pub namespace: String,
}

impl AlertConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let url = url::Url::parse(&self.webhook_url)
            .map_err(|e| Error::Config(format!("alert webhook URL is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Config(
                "alert webhook URL must be http or https".into(),
            ));
        }
        if self.depth_threshold.is_none() && self.rate_threshold.is_none() {
            return Err(Error::Config(
                "an alert webhook needs a depth or a rate threshold (EVENT_BUS_DLQ_ALERT_THRESHOLD / EVENT_BUS_DLQ_ALERT_RATE)".into(),
            ));
        }
        if self.interval.is_zero() {
            return Err(Error::Config("alert interval must be positive".into()));
        }
        Ok(())
    }
}

/// One message sent to the webhook.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertMessage {
    /// Slack-compatible text.
    pub text: String,
    /// `dlq_depth` or `dlq_rate`.
    pub alert: &'static str,
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// The measured value.
    pub value: u64,
    /// The threshold it was compared with.
    pub threshold: u64,
    /// The namespace.
    pub namespace: String,
    /// When.
    pub at: String,
}

/// Watches the dead-letter queue and posts on threshold crossings.
#[derive(Debug)]
pub struct Alerter {
    config: AlertConfig,
    /// The dead letters watched (PostgreSQL rows or the Redis records).
    store: DeadLetterStore,
    client: reqwest::Client,
    depth_firing: bool,
    rate_firing: bool,
}

impl Alerter {
    /// An alerter on `store`'s dead letters (status `new` for the depth,
    /// failures of the last minute for the rate); checks the config.
    pub fn new(config: AlertConfig, store: DeadLetterStore) -> Result<Self> {
        config.validate()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Alerter {
            config,
            store,
            client,
            depth_firing: false,
            rate_firing: false,
        })
    }

    /// Measures once and posts what crossed a threshold since the last
    /// check. Returns the messages the webhook accepted.
    pub async fn check(&mut self) -> Result<Vec<AlertMessage>> {
        let measured = self.store.depth().await?;
        let (depth, rate) = (
            measured.depth.max(0) as u64,
            measured.last_minute.max(0) as u64,
        );
        metrics::gauge!("eventbus_dlq_depth").set(depth as f64);
        let mut sent = Vec::new();
        if let Some(t) = self.config.depth_threshold {
            let firing = depth >= t;
            if firing != self.depth_firing {
                let text = if firing {
                    format!(":rotating_light: eventbus {}: {depth} dead letters waiting (threshold {t}). Inspect with `eventbus dlq list`.", self.config.namespace)
                } else {
                    format!(":white_check_mark: eventbus {}: dead letters back to {depth} (threshold {t}).", self.config.namespace)
                };
                let m = self.message(text, "dlq_depth", firing, depth, t);
                self.post(&m).await?;
                self.depth_firing = firing;
                sent.push(m);
            }
        }
        if let Some(t) = self.config.rate_threshold {
            let firing = rate >= t;
            if firing != self.rate_firing {
                let text = if firing {
                    format!(":rotating_light: eventbus {}: {rate} events dead-lettered in the last minute (threshold {t}/min).", self.config.namespace)
                } else {
                    format!(":white_check_mark: eventbus {}: dead-letter rate back to {rate}/min (threshold {t}/min).", self.config.namespace)
                };
                let m = self.message(text, "dlq_rate", firing, rate, t);
                self.post(&m).await?;
                self.rate_firing = firing;
                sent.push(m);
            }
        }
        Ok(sent)
    }

    fn message(
        &self,
        text: String,
        alert: &'static str,
        firing: bool,
        value: u64,
        threshold: u64,
    ) -> AlertMessage {
        AlertMessage {
            text,
            alert,
            status: if firing { "firing" } else { "resolved" },
            value,
            threshold,
            namespace: self.config.namespace.clone(),
            at: crate::envelope::format_time(&Utc::now()),
        }
    }

    async fn post(&self, m: &AlertMessage) -> Result<()> {
        let body = serde_json::to_vec(m).expect("alert messages serialize");
        let response = self
            .client
            .post(&self.config.webhook_url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                Error::Config(format!("alert webhook unreachable: {}", e.without_url()))
            })?;
        if !response.status().is_success() {
            return Err(Error::Config(format!(
                "alert webhook answered {}",
                response.status()
            )));
        }
        Ok(())
    }

    /// Checks every `interval` until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.check().await {
                tracing::warn!(error = %e, "dead-letter alert check failed; trying again next interval");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }
}
