//! Settings from the environment, overridden by command-line flags.
//!
//! This is the only module that reads environment variables. Every
//! variable, its default and its flag:
//!
//! | variable | default | flag |
//! |----------|---------|------|
//! | `REDIS_URL` | built from the `REDIS_*` parts below | `--redis-url` |
//! | `REDIS_HOST`, `REDIS_PORT` | `127.0.0.1`, `6379` | |
//! | `REDIS_USERNAME`, `REDIS_PASSWORD` | none (ACL user, password) | |
//! | `REDIS_DB` | `0` | |
//! | `REDIS_CLUSTER_NODES` | none: one server | |
//! | `EVENT_BUS_NAMESPACE` | `eventbus` (set but empty is an error; no `*`, `?`, `[`, `]` or `\`) | `--namespace` |
//! | `EVENT_BUS_PARTITIONS` | `16` | `--partitions` |
//! | `EVENT_BUS_CONSUMER_GROUP` | none | `consume --group` |
//! | `EVENT_BUS_MAX_LEN` | off (no length cap) | `publish --max-len` |
//! | `EVENT_BUS_MAX_DELAY` | `30d` (longest `--delay` / `deliver_at` ahead) | |
//! | `EVENT_BUS_STREAM_RETENTION` | `acked` | `trim --retention` |
//! | `EVENT_BUS_TRIM_INTERVAL` | `10s` | |
//! | `EVENT_BUS_LOG` | `info` | |
//! | `EVENT_BUS_LOG_FORMAT` | `text` on a terminal, `json` otherwise | |
//! | `EVENT_BUS_SCHEMA_DIR` | none: the event catalogue built in | |
//! | `EVENT_BUS_HTTP_HEADERS` | none; `consume --http`: secret headers, one `Name: value` per line | `--http-headers-file` |
//!
//! An empty variable counts as unset (except `EVENT_BUS_NAMESPACE`). A bad value is an error naming the
//! variable; the value of a secret is never repeated.

use std::collections::HashMap;
use std::ffi::OsString;

use eventbus::{redact_url, RedisConnector, RedisOptions, Topology};

pub(crate) mod alert;
pub(crate) mod flags;
pub(crate) mod ordered;
pub(crate) mod pg;
pub(crate) mod serve;
pub(crate) mod telemetry;

use self::flags::GlobalArgs;
use crate::error::{CliError, Result};

/// Names of the environment variables read here.
const VARS: &[&str] = &[
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_USERNAME",
    "REDIS_PASSWORD",
    "REDIS_DB",
    "REDIS_CLUSTER_NODES",
    "EVENT_BUS_NAMESPACE",
    "EVENT_BUS_PARTITIONS",
    "EVENT_BUS_CONSUMER_GROUP",
    "EVENT_BUS_RETRY_ATTEMPTS",
    "EVENT_BUS_MAX_LEN",
    "EVENT_BUS_MAX_DELAY",
    "EVENT_BUS_STREAM_RETENTION",
    "EVENT_BUS_TRIM_INTERVAL",
    "EVENT_BUS_LOG",
    "EVENT_BUS_LOG_FORMAT",
    "EVENT_BUS_SCHEMA_DIR",
    "EVENT_BUS_HTTP_HEADERS",
];

/// A snapshot of the environment variables this binary reads.
#[derive(Default)]
pub(crate) struct Env(HashMap<&'static str, OsString>);

impl Env {
    /// Reads the process environment.
    pub(crate) fn from_process() -> Self {
        Env(VARS
            .iter()
            .chain(crate::config::pg::PG_VARS)
            .chain(crate::config::ordered::ORDERED_VARS)
            .chain(crate::config::alert::ALERT_VARS)
            .chain(crate::config::serve::SERVE_VARS)
            .chain(crate::config::telemetry::TELEMETRY_VARS)
            .filter_map(|&name| Some((name, std::env::var_os(name)?)))
            .collect())
    }

    /// An environment made of the given pairs (for tests).
    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&'static str, &str)]) -> Self {
        Env(pairs.iter().map(|(k, v)| (*k, OsString::from(v))).collect())
    }

    /// True when `var` is set to the empty string.
    pub(crate) fn is_empty(&self, var: &'static str) -> bool {
        self.0.get(var).is_some_and(|v| v.is_empty())
    }

    /// The value of `var`; `None` when unset or empty.
    pub(crate) fn get(&self, var: &'static str) -> Result<Option<String>> {
        match self.0.get(var) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.to_owned()))
                .ok_or(CliError::Setting {
                    var,
                    reason: "is not valid UTF-8".into(),
                }),
        }
    }

    /// Parses `var` with `parse`, naming the variable in the error.
    pub(crate) fn parse<T>(
        &self,
        var: &'static str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>> {
        let Some(raw) = self.get(var)? else {
            return Ok(None);
        };
        match parse(raw.trim()) {
            Some(v) => Ok(Some(v)),
            None => Err(CliError::Setting {
                var,
                reason: format!("{raw:?} is not {expected}"),
            }),
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Logging settings.
#[derive(Debug, Clone)]
pub(crate) struct LogSettings {
    /// A `tracing` filter, e.g. `info` or `eventbus=debug,info`.
    pub(crate) filter: String,
    /// `None`: text on a terminal, JSON otherwise.
    pub(crate) format: Option<LogFormat>,
}

/// Everything the commands need, resolved from flags, then environment, then defaults.
#[derive(Clone)]
pub(crate) struct Settings {
    /// The Redis URL; may hold a password, so never print it (see [`Settings::redacted_url`]).
    redis_url: String,
    /// Seed node URLs of a Redis Cluster (`REDIS_CLUSTER_NODES`); when set
    /// the cluster is used and `redis_url` is not.
    redis_cluster: Option<Vec<String>>,
    /// Key prefix.
    pub(crate) namespace: String,
    /// Partitions per topic.
    pub(crate) partitions: u32,
    /// The default consumer group.
    pub(crate) consumer_group: Option<String>,
    /// Approximate stream length cap for publishing; `None` never trims.
    pub(crate) max_len: Option<usize>,
    /// `EVENT_BUS_MAX_DELAY`: the longest delay accepted for scheduled delivery.
    pub(crate) max_delay: std::time::Duration,
    /// Ack-aware retention, run by `relay`, `serve` and `consume` in the
    /// background (`None`: retention off, only the gauges are refreshed).
    pub(crate) trim: eventbus::retention::TrimmerConfig,
    /// Logging.
    pub(crate) log: LogSettings,
    /// Dead-letter alerting.
    pub(crate) alert: crate::config::alert::AlertSettings,
    /// `EVENT_BUS_RETRY_ATTEMPTS`: deliveries before a dead letter.
    pub(crate) retry_attempts: Option<u32>,
    /// PostgreSQL: outbox, relay, inbox.
    pub(crate) pg: crate::config::pg::PgSettings,
    /// Ordered consumers' heartbeat and session timeout.
    pub(crate) membership: crate::config::ordered::MembershipSettings,
    /// The event catalogue's directory; `None`: the one built in.
    pub(crate) schema_dir: Option<std::path::PathBuf>,
    /// `EVENT_BUS_HTTP_HEADERS`: headers (secrets) for `consume --http`;
    /// never printed.
    pub(crate) http_headers: Option<String>,
    /// Traces (OTEL_*) and `EVENT_BUS_METRICS_ADDR`.
    pub(crate) telemetry: crate::config::telemetry::TelemetrySettings,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("redis_url", &self.redacted_url())
            .field("namespace", &self.namespace)
            .field("partitions", &self.partitions)
            .field("consumer_group", &self.consumer_group)
            .field("max_len", &self.max_len)
            .field("trim", &self.trim)
            .field("log", &self.log)
            .field("schema_dir", &self.schema_dir)
            .finish()
    }
}

impl Settings {
    /// Resolves the settings: a flag wins over its variable, which wins over the default.
    pub(crate) fn load(flags: &GlobalArgs, env: &Env) -> Result<Self> {
        let redis_url = match &flags.redis_url {
            Some(url) => url.clone(),
            None => match env.get("REDIS_URL")? {
                Some(url) => url,
                None => url_from_parts(env)?,
            },
        };

        let redis_cluster = env
            .get("REDIS_CLUSTER_NODES")?
            .map(|v| cluster_nodes(&v))
            .transpose()?;

        let namespace =
            match &flags.namespace {
                Some(ns) => ns.clone(),
                None if env.is_empty("EVENT_BUS_NAMESPACE") => return Err(CliError::Setting {
                    var: "EVENT_BUS_NAMESPACE",
                    reason:
                        "is set but empty: name a namespace, or unset it for the default `eventbus`"
                            .into(),
                }),
                None => env
                    .get("EVENT_BUS_NAMESPACE")?
                    .unwrap_or_else(|| eventbus::topology::DEFAULT_NAMESPACE.to_owned()),
            };
        let partitions = match flags.partitions {
            Some(p) => p,
            None => env
                .parse(
                    "EVENT_BUS_PARTITIONS",
                    "a whole number between 1 and 1024",
                    |s| s.parse::<u32>().ok().filter(|p| (1..=1024).contains(p)),
                )?
                .unwrap_or(eventbus::topology::DEFAULT_PARTITIONS),
        };
        // Check namespace and partitions together, naming the variable on error.
        let namespace_var = if flags.namespace.is_some() {
            "--namespace"
        } else {
            "EVENT_BUS_NAMESPACE"
        };
        if let Err(e) = Topology::new(namespace.clone(), partitions) {
            return Err(CliError::Setting {
                var: namespace_var,
                reason: strip_config_prefix(&e),
            });
        }
        // Key patterns of Redis ACLs (`~<ns>:*`), SCAN and KEYS are globs:
        // a namespace holding glob characters would match other namespaces.
        if let Some(c) = namespace.chars().find(|c| GLOB_CHARS.contains(c)) {
            return Err(CliError::Setting {
                var: namespace_var,
                reason: format!(
                    "{namespace:?} holds {c:?}: a namespace may not hold *, ?, [, ] or \\ (Redis ACL key patterns and SCAN read them as wildcards)"
                ),
            });
        }

        let max_len = env.parse("EVENT_BUS_MAX_LEN", "a positive whole number", |s| {
            s.parse::<usize>().ok().filter(|n| *n > 0)
        })?;
        let max_delay = env
            .parse(
                "EVENT_BUS_MAX_DELAY",
                "a delay such as 30d, 12h or 90m (more than zero, at most 3650d)",
                |s| {
                    eventbus::schedule::parse_delay(s)
                        .ok()
                        .filter(|d| !d.is_zero() && d.as_secs() <= 3650 * 86_400)
                },
            )?
            .unwrap_or(eventbus::schedule::DEFAULT_MAX_DELAY);
        let consumer_group = env.get("EVENT_BUS_CONSUMER_GROUP")?;
        let trim = trim_settings(env)?;

        let filter = env
            .get("EVENT_BUS_LOG")?
            .unwrap_or_else(|| "info".to_owned());
        let format = env.parse("EVENT_BUS_LOG_FORMAT", "`json` or `text`", |s| {
            match s.to_ascii_lowercase().as_str() {
                "json" => Some(LogFormat::Json),
                "text" => Some(LogFormat::Text),
                _ => None,
            }
        })?;

        let pg = crate::config::pg::PgSettings::load(
            flags.database_url.as_deref(),
            flags.db_schema.as_deref(),
            flags.pg_pool_size,
            env,
        )?;
        let schema_dir = env
            .get("EVENT_BUS_SCHEMA_DIR")?
            .map(std::path::PathBuf::from);
        let membership = crate::config::ordered::MembershipSettings::load(env)?;
        let retry_attempts = env.parse(
            "EVENT_BUS_RETRY_ATTEMPTS",
            "a whole number between 1 and 1000",
            |s| s.parse::<u32>().ok().filter(|n| (1..=1000).contains(n)),
        )?;
        let alert = crate::config::alert::AlertSettings::load(env)?;
        let http_headers = env.get("EVENT_BUS_HTTP_HEADERS")?;
        let telemetry = crate::config::telemetry::TelemetrySettings::load(env)?;
        Ok(Settings {
            telemetry,
            http_headers,
            alert,
            retry_attempts,
            pg,
            membership,
            schema_dir,
            redis_url,
            redis_cluster,
            namespace,
            partitions,
            consumer_group,
            max_len,
            max_delay,
            trim,
            log: LogSettings { filter, format },
        })
    }

    /// The Redis URL with its password replaced by `***`.
    pub(crate) fn redacted_url(&self) -> String {
        match &self.redis_cluster {
            Some(nodes) => format!(
                "cluster[{}]",
                nodes
                    .iter()
                    .map(|n| redact_url(n))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => redact_url(&self.redis_url),
        }
    }

    /// The Redis URL itself, for handing to another component (`bench`);
    /// it may hold a password, so never print it.
    pub(crate) fn redis_url(&self) -> &str {
        &self.redis_url
    }

    /// A connector to the configured Redis (nothing is opened yet).
    pub(crate) fn connector(&self) -> Result<RedisConnector> {
        if let Some(nodes) = &self.redis_cluster {
            return RedisConnector::cluster(nodes, RedisOptions::default()).map_err(|e| {
                CliError::Setting {
                    var: "REDIS_CLUSTER_NODES",
                    reason: strip_config_prefix(&e),
                }
            });
        }
        RedisConnector::new(&self.redis_url, RedisOptions::default()).map_err(|e| {
            CliError::Setting {
                var: "REDIS_URL",
                reason: strip_config_prefix(&e),
            }
        })
    }

    /// The configured topology.
    pub(crate) fn topology(&self) -> Result<Topology> {
        Ok(Topology::new(self.namespace.clone(), self.partitions)?)
    }
}

/// Characters Redis reads as wildcards in key patterns.
const GLOB_CHARS: [char; 5] = ['*', '?', '[', ']', '\\'];

/// The library's message without its `invalid configuration: ` prefix.
pub(crate) fn strip_config_prefix(e: &eventbus::Error) -> String {
    match e {
        eventbus::Error::Config(m) => m.clone(),
        other => other.to_string(),
    }
}

/// `EVENT_BUS_STREAM_RETENTION` and `EVENT_BUS_TRIM_INTERVAL`.
fn trim_settings(env: &Env) -> Result<eventbus::retention::TrimmerConfig> {
    use eventbus::retention::{parse_duration, RetentionPolicy, TrimmerConfig};
    let mut trim = TrimmerConfig::default();
    if let Some(raw) = env.get("EVENT_BUS_STREAM_RETENTION")? {
        trim.policy = RetentionPolicy::parse(&raw).map_err(|e| CliError::Setting {
            var: "EVENT_BUS_STREAM_RETENTION",
            reason: strip_config_prefix(&e),
        })?;
    }
    let interval = env.parse(
        "EVENT_BUS_TRIM_INTERVAL",
        "a duration between 1s and 1d (e.g. 10s, 5m)",
        |s| parse_duration(s).filter(|d| (1..=86_400).contains(&d.as_secs())),
    )?;
    if let Some(interval) = interval {
        trim.interval = interval;
    }
    Ok(trim)
}

/// Parses `REDIS_CLUSTER_NODES`: comma-separated seed nodes, each a
/// `redis://` or `rediss://` URL or a bare `host:port` (taken as `redis://`).
fn cluster_nodes(value: &str) -> Result<Vec<String>> {
    let refuse = |reason: String| CliError::Setting {
        var: "REDIS_CLUSTER_NODES",
        reason,
    };
    let mut nodes = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let url = if part.contains("://") {
            part.to_owned()
        } else {
            format!("redis://{part}")
        };
        let parsed = url::Url::parse(&url).map_err(|_| {
            refuse(format!(
                "{} is not a node address (host:port or redis://host:port)",
                redact_url(part)
            ))
        })?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err(refuse(format!(
                "{} must start with redis:// or rediss://",
                redact_url(part)
            )));
        }
        if parsed.host_str().is_none_or(str::is_empty) || parsed.port().is_none() {
            return Err(refuse(format!(
                "{} needs a host and a port, like 10.0.0.1:7000",
                redact_url(part)
            )));
        }
        nodes.push(url);
    }
    if nodes.is_empty() {
        return Err(refuse(
            "list at least one node, like 10.0.0.1:7000,10.0.0.2:7000".into(),
        ));
    }
    Ok(nodes)
}

/// Builds `redis://[user][:password@]host:port/db` from the `REDIS_*` parts.
fn url_from_parts(env: &Env) -> Result<String> {
    let host = env
        .get("REDIS_HOST")?
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    let port = env
        .parse("REDIS_PORT", "a port number (1-65535)", |s| {
            s.parse::<u16>().ok().filter(|p| *p > 0)
        })?
        .unwrap_or(6379);
    let db = env
        .parse("REDIS_DB", "a database number", |s| s.parse::<u32>().ok())?
        .unwrap_or(0);
    let username = env.get("REDIS_USERNAME")?;
    let password = env.get("REDIS_PASSWORD")?;

    let mut url = url::Url::parse("redis://127.0.0.1/").expect("a valid base URL");
    url.set_host(Some(host.trim()))
        .map_err(|e| CliError::Setting {
            var: "REDIS_HOST",
            reason: format!("{host:?} is not a host name or address: {e}"),
        })?;
    url.set_port(Some(port)).expect("redis URLs have ports");
    if let Some(user) = &username {
        url.set_username(user).map_err(|()| CliError::Setting {
            var: "REDIS_USERNAME",
            reason: "cannot be used in a URL".into(),
        })?;
    }
    if let Some(password) = &password {
        url.set_password(Some(password))
            .map_err(|()| CliError::Setting {
                var: "REDIS_PASSWORD",
                reason: "cannot be used in a URL".into(),
            })?;
    }
    url.set_path(&format!("/{db}"));
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&'static str, &str)]) -> Result<Settings> {
        Settings::load(&GlobalArgs::default(), &Env::from_pairs(pairs))
    }

    #[test]
    fn defaults() {
        let s = load(&[]).unwrap();
        assert_eq!(s.redis_url, "redis://127.0.0.1:6379/0");
        assert_eq!(s.namespace, "eventbus");
        assert_eq!(s.partitions, 16);
        assert_eq!(s.max_len, None);
        assert_eq!(s.consumer_group, None);
        assert_eq!(s.log.filter, "info");
        assert_eq!(s.log.format, None);
    }

    #[test]
    fn builds_url_from_parts_and_encodes_the_password() {
        let s = load(&[
            ("REDIS_HOST", "redis.internal"),
            ("REDIS_PORT", "6380"),
            ("REDIS_PASSWORD", "p@ss/word"),
            ("REDIS_DB", "3"),
        ])
        .unwrap();
        assert_eq!(s.redis_url, "redis://:p%40ss%2Fword@redis.internal:6380/3");
        assert_eq!(s.redacted_url(), "redis://:***@redis.internal:6380/3");
        assert!(!format!("{s:?}").contains("word"));
    }

    #[test]
    fn redis_url_wins_over_parts_and_flags_win_over_env() {
        let env = Env::from_pairs(&[
            ("REDIS_URL", "redis://a:1"),
            ("REDIS_HOST", "b"),
            ("EVENT_BUS_NAMESPACE", "env-ns"),
            ("EVENT_BUS_PARTITIONS", "8"),
        ]);
        let s = Settings::load(&GlobalArgs::default(), &env).unwrap();
        assert_eq!(
            (s.redis_url.as_str(), s.namespace.as_str(), s.partitions),
            ("redis://a:1", "env-ns", 8)
        );
        let flags = GlobalArgs {
            redis_url: Some("redis://c:2".into()),
            namespace: Some("flag-ns".into()),
            partitions: Some(4),
            ..Default::default()
        };
        let s = Settings::load(&flags, &env).unwrap();
        assert_eq!(
            (s.redis_url.as_str(), s.namespace.as_str(), s.partitions),
            ("redis://c:2", "flag-ns", 4)
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("EVENT_BUS_PARTITIONS", "abc"),
            ("EVENT_BUS_PARTITIONS", "0"),
            ("EVENT_BUS_MAX_LEN", "-5"),
            ("EVENT_BUS_LOG_FORMAT", "xml"),
            ("EVENT_BUS_NAMESPACE", "a b"),
            ("EVENT_BUS_NAMESPACE", "*"),
            ("EVENT_BUS_NAMESPACE", "app?"),
            ("EVENT_BUS_NAMESPACE", "a[bc]"),
            ("EVENT_BUS_NAMESPACE", "a\\b"),
            ("REDIS_PORT", "http"),
            ("REDIS_DB", "x"),
            ("REDIS_CLUSTER_NODES", ","),
            ("REDIS_CLUSTER_NODES", "http://a:1"),
            ("REDIS_CLUSTER_NODES", "10.0.0.1"),
            ("REDIS_CLUSTER_NODES", "a:1,b c:2"),
        ] {
            let err = load(&[(var, value)]).unwrap_err();
            assert!(err.to_string().starts_with(var), "{var}: {err}");
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn an_empty_namespace_is_refused_not_defaulted() {
        let err = load(&[("EVENT_BUS_NAMESPACE", "")]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("EVENT_BUS_NAMESPACE: is set but empty"),
            "{err}"
        );
        assert_eq!(err.exit_code(), 2);
        let flags = GlobalArgs {
            namespace: Some("ns*".into()),
            ..Default::default()
        };
        let err = Settings::load(&flags, &Env::default()).unwrap_err();
        assert!(err.to_string().starts_with("--namespace"), "{err}");
    }

    #[test]
    fn empty_counts_as_unset() {
        let s = load(&[("EVENT_BUS_MAX_LEN", ""), ("REDIS_PASSWORD", "")]).unwrap();
        assert_eq!(s.max_len, None);
        assert_eq!(s.redis_url, "redis://127.0.0.1:6379/0");
    }

    #[test]
    fn cluster_nodes_take_urls_or_host_port_and_hide_passwords() {
        let s = load(&[(
            "REDIS_CLUSTER_NODES",
            " redis://:s3cret@10.0.0.1:7000 , 10.0.0.2:7001,rediss://h:7002",
        )])
        .unwrap();
        assert_eq!(
            s.redis_cluster.as_deref().unwrap(),
            [
                "redis://:s3cret@10.0.0.1:7000",
                "redis://10.0.0.2:7001",
                "rediss://h:7002"
            ]
        );
        assert!(!s.redacted_url().contains("s3cret"));
        assert!(!format!("{s:?}").contains("s3cret"));
        assert!(s.connector().unwrap().is_cluster());
        let err = load(&[("REDIS_CLUSTER_NODES", "redis://:s3cret@h")]).unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(err.to_string().contains("host and a port"), "{err}");
    }
}
