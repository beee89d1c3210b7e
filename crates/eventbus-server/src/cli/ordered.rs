//! Command-line flags of ordered consumption (`consume --ordered`,
//! `--unordered`, `--member-id`, ...), of the HTTP push sink (`consume
//! --http`) and of `eventbus groups`, and how they turn into a
//! [`ConsumerConfig`].

use std::time::Duration;

use clap::Args;
use eventbus::{ConsumerConfig, ConsumerMode};

use crate::cli::parse_duration;
use crate::config::ordered::MembershipSettings;
use crate::error::{CliError, Result};

/// How `consume` shares the group's partitions with the other members.
#[derive(Debug, Default, Clone, Args)]
pub(crate) struct MembershipArgs {
    /// Ordered mode, the default: each partition is leased to one member of
    /// the group at a time and handled one event at a time, in order.
    #[arg(long, conflicts_with = "unordered", help_heading = "Consumer mode")]
    pub(crate) ordered: bool,
    /// Competing consumers: every member reads every partition and handles up
    /// to --concurrency events at once, in no particular order.
    #[arg(long, help_heading = "Consumer mode")]
    pub(crate) unordered: bool,
    /// Ordered mode: a stable member id (static membership). Stopping keeps
    /// the member's partitions waiting for it (no rebalance) until the session
    /// timeout; restarted within it, it resumes exactly those partitions.
    #[arg(long, value_name = "ID", value_parser = parse_member_id,
          conflicts_with_all = ["consumer", "unordered"], help_heading = "Consumer mode")]
    pub(crate) member_id: Option<String>,
    /// Ordered mode: partitions handling an event at the same moment [default: all owned].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000),
          conflicts_with = "unordered", help_heading = "Consumer mode")]
    pub(crate) max_partitions_in_flight: Option<u64>,
    /// Ordered mode: how often to heartbeat and renew leases [env: EVENT_BUS_HEARTBEAT_MS; default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          conflicts_with = "unordered", help_heading = "Consumer mode")]
    pub(crate) heartbeat: Option<Duration>,
    /// Ordered mode: a member silent this long is dead and its partitions move
    /// [env: EVENT_BUS_SESSION_TIMEOUT_MS; default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          conflicts_with = "unordered", help_heading = "Consumer mode")]
    pub(crate) session_timeout: Option<Duration>,
    /// Ordered mode, park mode: while a key has an event in dead letters,
    /// its later events go to dead letters unhandled (class `parked`) until
    /// its dead letters are replayed or discarded; other keys flow. Not with
    /// --unordered, which keeps no order to protect.
    #[arg(long, conflicts_with = "unordered", help_heading = "Consumer mode")]
    pub(crate) park: bool,
}

/// `consume --http`: push each event to a URL.
#[derive(Debug, Default, Clone, Args)]
pub(crate) struct HttpArgs {
    /// POST each envelope as JSON to this http(s) URL; 2xx acknowledges it
    /// (see below).
    #[arg(long, value_name = "URL", value_parser = parse_http_url,
          conflicts_with_all = ["exec", "print", "sql"], help_heading = "HTTP push sink")]
    pub(crate) http: Option<url::Url>,
    /// Time allowed for one POST, response included (a timeout is retried).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration,
          requires = "http", help_heading = "HTTP push sink")]
    pub(crate) http_timeout: Duration,
    /// A header sent with every POST, repeatable, for headers that are not
    /// secret (e.g. `X-Tenant=acme`). Secret ones (Authorization, Cookie,
    /// X-Api-Key, any name with token, secret, key, password or auth) are
    /// refused here, as flags show in `ps`: use --http-headers-file or
    /// EVENT_BUS_HTTP_HEADERS.
    #[arg(
        long = "http-header",
        value_name = "NAME=VALUE",
        requires = "http",
        help_heading = "HTTP push sink"
    )]
    pub(crate) http_headers: Vec<String>,
    /// Headers sent with every POST, one `Name: value` per line (blank lines
    /// and `#` comments skipped), e.g. `Authorization: Bearer ...`; the way
    /// to pass secrets (keep the file readable by the consumer's user only).
    /// EVENT_BUS_HTTP_HEADERS may hold the same lines instead.
    #[arg(
        long = "http-headers-file",
        value_name = "FILE",
        requires = "http",
        help_heading = "HTTP push sink"
    )]
    pub(crate) http_headers_file: Option<String>,
    /// True when the flags came from the command line (`eventbus consume`),
    /// where secret headers are refused; false in a `serve --consumers` file.
    #[arg(skip)]
    pub(crate) from_command_line: bool,
    /// `EVENT_BUS_HTTP_HEADERS` (`eventbus consume` only: `serve` may push
    /// to several URLs, which must not all get one service's secret).
    #[arg(skip)]
    pub(crate) env_headers: Option<String>,
}

impl HttpArgs {
    /// Every extra header: the variable's, the file's, then the flags'
    /// (each checked; a secret as a command-line flag is refused).
    pub(crate) fn headers(&self) -> Result<Vec<(String, String)>> {
        use crate::sink::headers::{parse_lines, parse_one, read_file, Source};
        let mut out = match &self.env_headers {
            Some(text) => parse_lines(text, Source::Env)?,
            None => Vec::new(),
        };
        if let Some(path) = &self.http_headers_file {
            out.extend(read_file(path)?);
        }
        for (i, text) in self.http_headers.iter().enumerate() {
            let source = if self.from_command_line {
                Source::Flag(i + 1)
            } else {
                Source::ConsumersFile(i + 1)
            };
            out.push(parse_one(text, source)?);
        }
        Ok(out)
    }
}

/// `eventbus groups`.
#[derive(Debug, Args)]
#[command(
    after_help = "\
For each group: its members (ordered mode) with the partitions they hold and the time
left before each is declared dead; then every partition with its owner, the lease's
fencing token and age, and the group's pending entries and lag on it.
`eventbus groups delete GROUP` retires a group.",
    args_conflicts_with_subcommands = true
)]
pub(crate) struct GroupsArgs {
    /// What to do instead of showing the groups.
    #[command(subcommand)]
    pub(crate) action: Option<GroupsAction>,
    /// Only this group [default: every group reading the topics].
    pub(crate) group: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub(crate) json: bool,
    /// Topics, comma-separated [default: every topic seen in the namespace].
    #[arg(long, value_delimiter = ',', value_name = "TOPIC,...")]
    pub(crate) topics: Vec<String>,
    /// Only check that nothing is in flight: exit 0 when every group has no
    /// lag and nothing pending on every partition (and, with DATABASE_URL,
    /// the outbox is empty); else list what is left and exit 1. Step 2 of
    /// changing the partition count (docs/scaling.md).
    #[arg(long)]
    pub(crate) drained: bool,
}

/// `eventbus groups …` actions.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum GroupsAction {
    /// Retire a group everywhere: its consumer group on every partition (so
    /// it no longer holds stream retention back), leases, park state,
    /// membership and replay stream. Stop its consumers first.
    Delete {
        /// The group.
        group: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

impl MembershipArgs {
    /// The mode asked for (ordered unless `--unordered`).
    pub(crate) fn mode(&self) -> ConsumerMode {
        if self.unordered {
            ConsumerMode::Unordered
        } else {
            ConsumerMode::Ordered
        }
    }

    /// Applies the flags (and the environment's timings) to `config`.
    pub(crate) fn apply(
        &self,
        env: &MembershipSettings,
        config: &mut ConsumerConfig,
    ) -> Result<()> {
        config.mode = self.mode();
        config.park_keys = self.park;
        if let Some(id) = &self.member_id {
            config.consumer_name = Some(id.clone());
            config.static_membership = true;
        }
        config.heartbeat_interval = self.heartbeat.unwrap_or(env.heartbeat);
        config.session_timeout = self.session_timeout.unwrap_or(env.session_timeout);
        config.max_partitions_in_flight = self
            .max_partitions_in_flight
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        if config.mode == ConsumerMode::Ordered
            && config.session_timeout <= config.heartbeat_interval * 2
        {
            return Err(CliError::Input(format!(
                "the session timeout ({:?}, --session-timeout or EVENT_BUS_SESSION_TIMEOUT_MS) must be more than twice the heartbeat ({:?}, --heartbeat or EVENT_BUS_HEARTBEAT_MS)",
                config.session_timeout, config.heartbeat_interval
            )));
        }
        Ok(())
    }
}

/// A member id: non-empty, no whitespace or control characters.
fn parse_member_id(s: &str) -> std::result::Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{s:?} must not contain spaces or control characters"
        ));
    }
    Ok(s.to_owned())
}

/// An absolute `http://` or `https://` URL with a host.
fn parse_http_url(s: &str) -> std::result::Result<url::Url, String> {
    let url = url::Url::parse(s)
        .map_err(|e| format!("not a URL ({e}); expected e.g. https://host/path"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected an http:// or https:// URL with a host".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn consume(args: &[&str]) -> std::result::Result<crate::cli::ConsumeArgs, String> {
        let mut all = vec!["eventbus", "consume", "--group", "g"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all) {
            Ok(Cli {
                command: Command::Consume(c),
                ..
            }) => Ok(c),
            Ok(_) => unreachable!(),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn ordered_is_the_default_and_modes_conflict() {
        assert_eq!(
            consume(&[]).unwrap().membership.mode(),
            ConsumerMode::Ordered
        );
        assert_eq!(
            consume(&["--unordered"]).unwrap().membership.mode(),
            ConsumerMode::Unordered
        );
        let e = consume(&["--ordered", "--unordered"]).unwrap_err();
        assert!(e.contains("cannot be used with"), "{e}");
        let e = consume(&["--unordered", "--member-id", "m1"]).unwrap_err();
        assert!(e.contains("cannot be used with"), "{e}");
    }

    #[test]
    fn park_is_off_by_default_and_refused_when_unordered() {
        let apply = |args: &[&str]| {
            let mut config = ConsumerConfig::new("g", ["t"]);
            consume(args)
                .unwrap()
                .membership
                .apply(
                    &MembershipSettings {
                        heartbeat: Duration::from_secs(1),
                        session_timeout: Duration::from_secs(10),
                    },
                    &mut config,
                )
                .map(|()| config.park_keys)
                .map_err(|e| e.to_string())
        };
        assert_eq!(apply(&[]), Ok(false));
        assert_eq!(apply(&["--park"]), Ok(true));
        assert_eq!(apply(&["--ordered", "--park"]), Ok(true));
        let e = consume(&["--unordered", "--park"]).unwrap_err();
        assert!(
            e.contains("'--unordered' cannot be used with '--park'"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for (args, needle) in [
            (&["--member-id", ""][..], "must not be empty"),
            (&["--member-id", "a b"], "spaces"),
            (&["--http", "not a url"], "not a URL"),
            (&["--http", "ftp://x/y"], "http://"),
            (
                &["--http", "http://h/", "--exec", "true"],
                "cannot be used with",
            ),
            (&["--http-timeout", "5s"], "--http"),
            (&["--http-header", "X-A=1"], "--http"),
            (&["--http-headers-file", "/f"], "--http"),
            (&["--max-partitions-in-flight", "0"], "0"),
            (&["--heartbeat", "soon"], "duration"),
        ] {
            let e = consume(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn secret_headers_are_refused_as_command_line_flags_only() {
        let mut http = consume(&[
            "--http",
            "http://h/",
            "--http-header",
            "X-Tenant=acme",
            "--http-header",
            "Authorization=Bearer SENTINEL",
        ])
        .unwrap()
        .http;
        http.env_headers = Some("X-Api-Key: k1".into());
        // from a `serve --consumers` file: not in `ps`, allowed
        let all = http.headers().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], ("X-Api-Key".into(), "k1".into()));
        http.from_command_line = true;
        let e = http.headers().unwrap_err().to_string();
        assert!(e.starts_with("--http-header #2: Authorization"), "{e}");
        assert!(!e.contains("SENTINEL"), "{e}");
    }

    #[test]
    fn apply_sets_the_config_and_checks_timings() {
        let env = MembershipSettings {
            heartbeat: Duration::from_secs(1),
            session_timeout: Duration::from_secs(10),
        };
        let args = consume(&["--member-id", "m1", "--max-partitions-in-flight", "3"])
            .unwrap()
            .membership;
        let mut c = ConsumerConfig::new("g", ["t"]);
        args.apply(&env, &mut c).unwrap();
        assert_eq!(c.consumer_name.as_deref(), Some("m1"));
        assert!(c.static_membership);
        assert_eq!(c.max_partitions_in_flight, Some(3));
        assert_eq!(c.session_timeout, Duration::from_secs(10));
        let args = consume(&["--session-timeout", "2s"]).unwrap().membership;
        let e = args.apply(&env, &mut c).unwrap_err();
        assert!(e.to_string().contains("more than twice"), "{e}");
    }
}
