//! Connections to Redis: one shared auto-reconnecting connection for
//! commands, and dedicated connections for blocking reads.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client};

use crate::{Error, Result};

/// Connection settings.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Time allowed to open a TCP connection and authenticate.
    pub connect_timeout: Duration,
    /// Time allowed for a non-blocking command's reply.
    pub response_timeout: Duration,
    /// Reconnect attempts the shared connection makes before a command fails
    /// (callers retry on top of that with their own backoff).
    pub reconnect_retries: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            reconnect_retries: 2,
        }
    }
}

/// Opens connections to one Redis server.
#[derive(Clone)]
pub struct RedisConnector {
    client: Client,
    redacted: String,
    options: RedisOptions,
}

impl std::fmt::Debug for RedisConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnector")
            .field("url", &self.redacted)
            .finish()
    }
}

impl RedisConnector {
    /// A connector for `url` (`redis://[user:password@]host:port[/db]` or
    /// `rediss://` for TLS). Nothing is opened yet.
    pub fn new(url: &str, options: RedisOptions) -> Result<Self> {
        let redacted = redact_url(url);
        let client = Client::open(url).map_err(|e| {
            Error::Config(format!("invalid Redis URL {redacted}: {}", e.category()))
        })?;
        Ok(RedisConnector {
            client,
            redacted,
            options,
        })
    }

    /// The URL with its password replaced by `***`, safe to log.
    pub fn redacted_url(&self) -> &str {
        &self.redacted
    }

    /// The shared connection: multiplexed, reconnects by itself with backoff.
    /// Fails with [`Error::Unreachable`] if the first connection cannot be made.
    pub async fn shared(&self) -> Result<ConnectionManager> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.options.connect_timeout))
            .set_response_timeout(Some(self.options.response_timeout))
            .set_number_of_retries(self.options.reconnect_retries)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(|source| self.unreachable(source))
    }

    /// A dedicated connection for blocking commands (`XREADGROUP BLOCK`), so
    /// they never delay other commands. Its response timeout is `block` plus
    /// a margin, so a dead server is noticed.
    pub async fn dedicated(&self, block: Duration) -> Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.connect_timeout))
            .set_response_timeout(Some(block + self.options.response_timeout));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|source| self.unreachable(source))
    }

    fn unreachable(&self, source: redis::RedisError) -> Error {
        Error::Unreachable {
            url: self.redacted.clone(),
            source,
        }
    }
}

/// Replaces the password of a URL (and a lone user-info secret) with `***`.
/// Text that is not a URL is returned unchanged.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => {
            // Not parseable: hide anything between "//" and "@" to be safe.
            match (url.find("//"), url.rfind('@')) {
                (Some(a), Some(b)) if b > a => format!("{}***{}", &url[..a + 2], &url[b..]),
                _ => url.to_owned(),
            }
        }
    }
}

/// Exponential backoff with full jitter: a random delay in `[0, min(max, base·2ⁿ)]`,
/// never below `base / 2` so loops do not spin.
pub(crate) fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let cap = exp.min(max);
    let floor = base / 2;
    let jitter = rand::random_range(0.0..=1.0);
    floor.max(cap.mul_f64(jitter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("redis://:s3cret@localhost:6379/0"),
            "redis://:***@localhost:6379/0"
        );
        assert_eq!(
            redact_url("redis://user:s3cret@host/"),
            "redis://user:***@host/"
        );
        assert_eq!(redact_url("redis://host:1"), "redis://host:1");
        assert!(!redact_url("redis://u:p@[bad").contains('p'));
    }

    #[test]
    fn backoff_stays_within_bounds() {
        for n in 0..40 {
            let d = backoff(n, Duration::from_millis(10), Duration::from_secs(1));
            assert!(d >= Duration::from_millis(5) && d <= Duration::from_secs(1));
        }
    }
}
