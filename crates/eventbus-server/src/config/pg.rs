//! PostgreSQL settings (outbox, relay, inbox), read from the environment by
//! [`crate::config`]; flags override them.
//!
//! | variable | default | flag |
//! |----------|---------|------|
//! | `DATABASE_URL` | none (needed by migrate, relay, outbox, `--via-outbox`, `--inbox`, `dlq sync`; without it dead letters are kept in Redis) | `--database-url` |
//! | `EVENT_BUS_DB_SCHEMA` | `public` | `--db-schema` |
//! | `EVENT_BUS_PG_POOL_SIZE` | `6` ([`eventbus::pg::DEFAULT_POOL_SIZE`]): PostgreSQL connections this process holds at most, whatever its handler concurrency | `--pg-pool-size` |
//! | `EVENT_BUS_MAX_EVENT_BYTES` | `1048576` (1 MiB) | |
//! | `EVENT_BUS_OUTBOX_RETENTION` | off (published rows are deleted) | `relay --retention` |
//! | `EVENT_BUS_INBOX_RETENTION` | `7d` | |
//! | `EVENT_BUS_FAILPOINT` | none; crash tests only: `relay-kill-after-publish:N` kills the relay between publish and commit once every N batches, `inbox-kill-mid-transaction:N` kills a `consume --sql` consumer inside its inbox transaction once every N events | |

use std::sync::Arc;
use std::time::Duration;

use eventbus::pg::{connect_pool, DbSchema, Failpoint, Outbox, OutboxConfig, DEFAULT_POOL_SIZE};
use eventbus::{redact_url, Topology};
use sqlx::PgPool;

use crate::config::Env;
use crate::error::{CliError, Result};

/// The variables read here.
pub(crate) const PG_VARS: &[&str] = &[
    "DATABASE_URL",
    "EVENT_BUS_DB_SCHEMA",
    "EVENT_BUS_PG_POOL_SIZE",
    "EVENT_BUS_MAX_EVENT_BYTES",
    "EVENT_BUS_OUTBOX_RETENTION",
    "EVENT_BUS_INBOX_RETENTION",
    "EVENT_BUS_FAILPOINT",
];

/// PostgreSQL settings.
#[derive(Clone)]
pub(crate) struct PgSettings {
    /// May hold a password: never print it (see [`PgSettings::redacted_url`]).
    database_url: Option<String>,
    /// The schema of the eventbus tables.
    pub(crate) schema: DbSchema,
    /// Largest event accepted by the outbox.
    pub(crate) max_event_bytes: usize,
    /// Keep published outbox rows this long; `None` deletes them.
    pub(crate) outbox_retention: Option<Duration>,
    /// Delete inbox rows older than this.
    pub(crate) inbox_retention: Duration,
    /// A deliberate crash for crash tests.
    pub(crate) failpoint: Option<Failpoint>,
    /// Crash tests: an inbox consumer kills itself mid-transaction once every N events.
    pub(crate) consumer_failpoint: Option<u32>,
    /// Connections of this process's one pool (every PostgreSQL user of
    /// the command shares it: relay workers and LISTEN, inbox, dead letters,
    /// alerts, the HTTP API).
    pub(crate) pool_size: u32,
    /// The process's pool, opened by the first [`PgSettings::pool`] call.
    pool: Arc<tokio::sync::OnceCell<PgPool>>,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("database_url", &self.redacted_url())
            .field("schema", &self.schema.name())
            .field("max_event_bytes", &self.max_event_bytes)
            .field("outbox_retention", &self.outbox_retention)
            .field("inbox_retention", &self.inbox_retention)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl PgSettings {
    /// Resolves the settings from flags, then the environment, then defaults.
    pub(crate) fn load(
        url_flag: Option<&str>,
        schema_flag: Option<&str>,
        pool_size_flag: Option<u32>,
        env: &Env,
    ) -> Result<Self> {
        let database_url = match url_flag {
            Some(u) => Some(u.to_owned()),
            None => env.get("DATABASE_URL")?,
        };
        let (schema_var, schema) = match schema_flag {
            Some(s) => ("--db-schema", s.to_owned()),
            None => (
                "EVENT_BUS_DB_SCHEMA",
                env.get("EVENT_BUS_DB_SCHEMA")?
                    .unwrap_or_else(|| "public".into()),
            ),
        };
        let schema = DbSchema::new(schema).map_err(|e| CliError::Setting {
            var: schema_var,
            reason: crate::config::strip_config_prefix(&e),
        })?;
        let pool_size = match pool_size_flag {
            Some(n) => n,
            None => env
                .parse(
                    "EVENT_BUS_PG_POOL_SIZE",
                    "a number of connections from 1 to 1000",
                    |s| s.parse::<u32>().ok().filter(|n| (1..=1000).contains(n)),
                )?
                .unwrap_or(DEFAULT_POOL_SIZE),
        };
        let max_event_bytes = env
            .parse(
                "EVENT_BUS_MAX_EVENT_BYTES",
                "a positive number of bytes",
                |s| s.parse::<usize>().ok().filter(|n| *n > 0),
            )?
            .unwrap_or(1024 * 1024);
        let outbox_retention = env
            .parse(
                "EVENT_BUS_OUTBOX_RETENTION",
                "a duration like 7d, 12h or 30m, or `off`",
                parse_retention,
            )?
            .flatten();
        let inbox_retention = env
            .parse(
                "EVENT_BUS_INBOX_RETENTION",
                "a duration like 7d, 12h or 30m",
                |s| parse_retention(s).flatten(),
            )?
            .unwrap_or(Duration::from_secs(7 * 24 * 3600));
        let failpoint_spec = env.parse(
            "EVENT_BUS_FAILPOINT",
            "`relay-kill-after-publish:N` or `inbox-kill-mid-transaction:N` with N ≥ 1",
            |s| {
                let (name, n) = s.split_once(':')?;
                let n = n.parse::<u32>().ok().filter(|n| *n > 0)?;
                matches!(
                    name,
                    "relay-kill-after-publish" | "inbox-kill-mid-transaction"
                )
                .then(|| (name.to_owned(), n))
            },
        )?;
        let failpoint = match &failpoint_spec {
            Some((name, n)) if name == "relay-kill-after-publish" => {
                Some(Failpoint::KillAfterPublish { one_in: *n })
            }
            _ => None,
        };
        let consumer_failpoint = match &failpoint_spec {
            Some((name, n)) if name == "inbox-kill-mid-transaction" => Some(*n),
            _ => None,
        };
        Ok(PgSettings {
            database_url,
            schema,
            max_event_bytes,
            outbox_retention,
            inbox_retention,
            failpoint,
            consumer_failpoint,
            pool_size,
            pool: Arc::default(),
        })
    }

    /// These settings, with `url` as the database when none is configured.
    pub(crate) fn with_default_url(&self, url: &str) -> PgSettings {
        let mut s = self.clone();
        s.database_url.get_or_insert_with(|| url.to_owned());
        s.pool = Arc::default();
        s
    }

    /// The URL itself, for handing to another component (`bench`); it may
    /// hold a password, so never print it.
    pub(crate) fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// True when a database is configured.
    pub(crate) fn has_database(&self) -> bool {
        self.database_url.is_some()
    }

    /// The database URL with its password replaced by `***`.
    pub(crate) fn redacted_url(&self) -> Option<String> {
        self.database_url.as_deref().map(redact_url)
    }

    /// The process's one connection pool, or an error saying `DATABASE_URL`
    /// is needed. The first call opens it with `min(max_connections,
    /// pool_size)` connections (a one-shot command needing one connection
    /// asks for 1; long-running ones ask for [`PgSettings::pool_size`]) and
    /// names it `eventbus <purpose>` in `pg_stat_activity.application_name`;
    /// every later call shares it, so a process never holds more than one
    /// pool's connections however many parts use PostgreSQL.
    pub(crate) async fn pool(&self, max_connections: u32, purpose: &str) -> Result<PgPool> {
        self.pool
            .get_or_try_init(|| self.open_pool(max_connections.min(self.pool_size), purpose))
            .await
            .cloned()
    }

    async fn open_pool(&self, max_connections: u32, purpose: &str) -> Result<PgPool> {
        let Some(url) = &self.database_url else {
            return Err(CliError::Setting {
                var: "DATABASE_URL",
                reason: format!(
                    "is not set; {purpose} needs PostgreSQL (e.g. postgres://user@host:5432/db)"
                ),
            });
        };
        Ok(connect_pool(url, max_connections, &format!("eventbus {purpose}")).await?)
    }

    /// The outbox writer for a topology.
    pub(crate) fn outbox(&self, topology: &Topology) -> Result<Outbox> {
        Ok(Outbox::new(
            topology.clone(),
            OutboxConfig {
                schema: self.schema.clone(),
                max_event_bytes: self.max_event_bytes,
            },
        )?)
    }
}

/// `off`/`none` → `Some(None)`; a duration with unit `s`, `m`, `h` or `d` → `Some(Some(d))`.
pub(crate) fn parse_retention(s: &str) -> Option<Option<Duration>> {
    let s = s.trim();
    if matches!(s, "off" | "none" | "0") {
        return Some(None);
    }
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = s[..split].parse().ok()?;
    let unit = match &s[split..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    (n > 0).then(|| Some(Duration::from_secs(n * unit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&'static str, &str)]) -> Result<PgSettings> {
        PgSettings::load(None, None, None, &Env::from_pairs(pairs))
    }

    #[test]
    fn defaults() {
        let s = load(&[]).unwrap();
        assert_eq!(s.schema.name(), "public");
        assert_eq!(s.max_event_bytes, 1 << 20);
        assert_eq!(s.outbox_retention, None);
        assert_eq!(s.inbox_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(s.failpoint, None);
        assert_eq!(s.pool_size, DEFAULT_POOL_SIZE);
        assert!(s.redacted_url().is_none());
    }

    #[test]
    fn values_and_redaction() {
        let s = load(&[
            ("DATABASE_URL", "postgres://app:hunter2@db/app"),
            ("EVENT_BUS_DB_SCHEMA", "events"),
            ("EVENT_BUS_OUTBOX_RETENTION", "2d"),
            ("EVENT_BUS_INBOX_RETENTION", "12h"),
            ("EVENT_BUS_FAILPOINT", "relay-kill-after-publish:5"),
            ("EVENT_BUS_PG_POOL_SIZE", "3"),
        ])
        .unwrap();
        assert_eq!(s.schema.name(), "events");
        assert_eq!(s.outbox_retention, Some(Duration::from_secs(2 * 86_400)));
        assert_eq!(s.inbox_retention, Duration::from_secs(12 * 3600));
        assert_eq!(s.failpoint, Some(Failpoint::KillAfterPublish { one_in: 5 }));
        assert_eq!(s.pool_size, 3);
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(s.redacted_url().unwrap().contains("***"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("EVENT_BUS_DB_SCHEMA", "Robert'); DROP"),
            ("EVENT_BUS_MAX_EVENT_BYTES", "0"),
            ("EVENT_BUS_OUTBOX_RETENTION", "forever"),
            ("EVENT_BUS_INBOX_RETENTION", "off"),
            ("EVENT_BUS_FAILPOINT", "boom"),
            ("EVENT_BUS_PG_POOL_SIZE", "0"),
        ] {
            let err = load(&[(var, value)]).unwrap_err();
            assert!(err.to_string().starts_with(var), "{var}: {err}");
            assert_eq!(err.exit_code(), 2);
        }
    }
}
