//! Settings of `eventbus serve`, read from the environment by
//! [`crate::config`]; flags override them.
//!
//! | variable | default | flag |
//! |----------|---------|------|
//! | `EVENT_BUS_HTTP_ADDR` | `127.0.0.1:8080` | `serve --addr` |
//! | `EVENT_BUS_API_TOKEN` | none: admin bearer token (every route) | |
//! | `EVENT_BUS_API_READ_TOKEN` | none: read-only bearer token (GET routes) | |
//! | `EVENT_BUS_HTTP_BODY_LIMIT` | `2097152` (2 MiB) | `serve --body-limit` |
//! | `EVENT_BUS_CORS_ORIGINS` | none: CORS off; a comma-separated list of allowed origins | |
//! | `EVENT_BUS_HTTP_HEADER_TIMEOUT` | `10s`: a request's head must arrive within this of its first byte | |
//! | `EVENT_BUS_HTTP_REQUEST_TIMEOUT` | `60s`: from the head to the answer (body included); then 408 | |
//! | `EVENT_BUS_HTTP_IDLE_TIMEOUT` | `60s`: a connection without a request in progress is closed after this | |
//! | `EVENT_BUS_HTTP_MAX_CONNECTIONS` | `1024`, lowered to fit the file-descriptor limit; past it the connection idle longest is closed | |
//! | `EVENT_BUS_HTTP_MAX_ERRORS` | `100`: errors listed in a 422 answer (all are counted) | |
//!
//! Without any token the API only listens on a loopback address. Tokens
//! must be strong enough: see [`check_token`].

use std::net::SocketAddr;
use std::time::Duration;

use eventbus::retention::parse_duration;

use super::flags::ServeArgs;
use crate::config::Env;
use crate::error::{CliError, Result};
use crate::http::auth::Tokens;
use crate::http::HttpOptions;

/// The variables read here.
pub(crate) const SERVE_VARS: &[&str] = &[
    "EVENT_BUS_HTTP_ADDR",
    "EVENT_BUS_API_TOKEN",
    "EVENT_BUS_API_READ_TOKEN",
    "EVENT_BUS_HTTP_BODY_LIMIT",
    "EVENT_BUS_CORS_ORIGINS",
    "EVENT_BUS_HTTP_HEADER_TIMEOUT",
    "EVENT_BUS_HTTP_REQUEST_TIMEOUT",
    "EVENT_BUS_HTTP_IDLE_TIMEOUT",
    "EVENT_BUS_HTTP_MAX_CONNECTIONS",
    "EVENT_BUS_HTTP_MAX_ERRORS",
];

pub(crate) use crate::http::{
    DEFAULT_ADDR, DEFAULT_BODY_LIMIT, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_ERRORS, DEFAULT_REQUEST_TIMEOUT,
};
/// The shortest token accepted.
const MIN_TOKEN_LEN: usize = 16;

/// HTTP settings. The tokens are secrets: `Debug` never shows them.
#[derive(Clone)]
pub(crate) struct ServeSettings {
    /// Listen address.
    pub(crate) addr: Option<SocketAddr>,
    /// Admin bearer token.
    pub(crate) admin_token: Option<String>,
    /// Read-only bearer token.
    pub(crate) read_token: Option<String>,
    /// Largest request body.
    pub(crate) body_limit: usize,
    /// Allowed CORS origins; empty: CORS off.
    pub(crate) cors_origins: Vec<String>,
    /// Time for a request's head, from its first byte.
    pub(crate) header_timeout: Duration,
    /// Time from a request's head to its answer.
    pub(crate) request_timeout: Duration,
    /// Time a connection may stay without a request in progress.
    pub(crate) idle_timeout: Duration,
    /// Most connections open at once (lowered to the file-descriptor limit when serving).
    pub(crate) max_connections: usize,
    /// Errors a 422 answer lists.
    pub(crate) max_errors: usize,
}

impl std::fmt::Debug for ServeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |t: &Option<String>| t.as_ref().map(|_| "<set>");
        f.debug_struct("ServeSettings")
            .field("addr", &self.addr)
            .field("admin_token", &set(&self.admin_token))
            .field("read_token", &set(&self.read_token))
            .field("body_limit", &self.body_limit)
            .field("cors_origins", &self.cors_origins)
            .field("header_timeout", &self.header_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_errors", &self.max_errors)
            .finish()
    }
}

impl ServeSettings {
    /// Resolves flags, then variables, then defaults, and refuses a
    /// non-loopback address without a token.
    pub(crate) fn load(args: &ServeArgs, env: &Env) -> Result<Self> {
        let addr = match args.addr {
            Some(a) => a,
            None => env
                .parse("EVENT_BUS_HTTP_ADDR", "an address like 0.0.0.0:8080", |s| {
                    s.parse::<SocketAddr>().ok()
                })?
                .unwrap_or_else(|| DEFAULT_ADDR.parse().expect("a valid default address")),
        };
        let body_limit = match args.body_limit {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => env
                .parse(
                    "EVENT_BUS_HTTP_BODY_LIMIT",
                    "a positive number of bytes",
                    |s| s.parse::<usize>().ok().filter(|n| *n > 0),
                )?
                .unwrap_or(DEFAULT_BODY_LIMIT),
        };
        let admin_token = env.get("EVENT_BUS_API_TOKEN")?;
        let read_token = env.get("EVENT_BUS_API_READ_TOKEN")?;
        for (var, token) in [
            ("EVENT_BUS_API_TOKEN", &admin_token),
            ("EVENT_BUS_API_READ_TOKEN", &read_token),
        ] {
            if let Some(token) = token {
                check_token(token).map_err(|reason| CliError::Setting { var, reason })?;
            }
        }
        if admin_token.is_some() && admin_token == read_token {
            return Err(CliError::Setting {
                var: "EVENT_BUS_API_READ_TOKEN",
                reason: "must differ from EVENT_BUS_API_TOKEN".into(),
            });
        }
        if !addr.ip().is_loopback() && admin_token.is_none() {
            return Err(CliError::Setting {
                var: "EVENT_BUS_API_TOKEN",
                reason: format!(
                    "is not set; the API listens on {addr}, which is not a loopback address, and refuses to run without a token"
                ),
            });
        }
        let cors_origins = env
            .get("EVENT_BUS_CORS_ORIGINS")?
            .map(|s| {
                s.split(',')
                    .map(|o| o.trim().to_owned())
                    .filter(|o| !o.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let duration = |var, default| {
            Ok::<_, CliError>(
                env.parse(var, "a duration between 1s and 1d (e.g. 10s, 5m)", |s| {
                    parse_duration(s).filter(|d| (1..=86_400).contains(&d.as_secs()))
                })?
                .unwrap_or(default),
            )
        };
        let count = |var, default| {
            Ok::<_, CliError>(
                env.parse(var, "a number between 1 and 1000000", |s| {
                    s.parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1_000_000).contains(n))
                })?
                .unwrap_or(default),
            )
        };
        Ok(ServeSettings {
            addr: Some(addr),
            admin_token,
            read_token,
            body_limit,
            cors_origins,
            header_timeout: duration("EVENT_BUS_HTTP_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT)?,
            request_timeout: duration("EVENT_BUS_HTTP_REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT)?,
            idle_timeout: duration("EVENT_BUS_HTTP_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT)?,
            max_connections: count("EVENT_BUS_HTTP_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS)?,
            max_errors: count("EVENT_BUS_HTTP_MAX_ERRORS", DEFAULT_MAX_ERRORS)?,
        })
    }

    /// What the router and the server need of these settings.
    pub(crate) fn http_options(&self) -> HttpOptions {
        HttpOptions {
            tokens: Tokens {
                admin: self.admin_token.clone(),
                read: self.read_token.clone(),
            },
            body_limit: self.body_limit,
            cors_origins: self.cors_origins.clone(),
            header_timeout: self.header_timeout,
            request_timeout: self.request_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            max_errors: self.max_errors,
        }
    }
}

/// The characters of a bearer token (RFC 6750 `b64token`): it travels in
/// an `Authorization` header, so no spaces or control characters.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~+/=".contains(c)
}

/// The rule for API tokens: at least 16 characters, all letters, digits or
/// `-._~+/=`, mixing at least two of lower-case letters, upper-case
/// letters, digits and those symbols (what `openssl rand -base64 32` or
/// `openssl rand -hex 32` prints passes). `Err` says what is wrong,
/// never quoting the token.
pub(crate) fn check_token(token: &str) -> std::result::Result<(), String> {
    if token.chars().count() < MIN_TOKEN_LEN {
        return Err(format!(
            "is too short: use at least {MIN_TOKEN_LEN} characters (e.g. the output of `openssl rand -base64 32`)"
        ));
    }
    if !token.chars().all(is_token_char) {
        return Err(
            "may only hold letters, digits and -._~+/= (no spaces or other characters: it is sent in an Authorization header)"
                .into(),
        );
    }
    let classes = [
        char::is_ascii_lowercase,
        char::is_ascii_uppercase,
        char::is_ascii_digit,
        |c: &char| !c.is_ascii_alphanumeric(),
    ];
    if classes
        .iter()
        .filter(|class| token.chars().any(|c| class(&c)))
        .count()
        < 2
    {
        return Err(
            "is too weak: mix at least two of lower-case letters, upper-case letters, digits and -._~+/= (e.g. the output of `openssl rand -base64 32`)"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &ServeArgs, pairs: &[(&'static str, &str)]) -> Result<ServeSettings> {
        ServeSettings::load(args, &Env::from_pairs(pairs))
    }

    #[test]
    fn defaults_and_loopback_without_token() {
        let s = load(&ServeArgs::default(), &[]).unwrap();
        assert_eq!(s.addr.unwrap().to_string(), DEFAULT_ADDR);
        assert_eq!(s.body_limit, DEFAULT_BODY_LIMIT);
        assert!(s.cors_origins.is_empty());
    }

    #[test]
    fn refuses_public_address_without_token_and_hides_tokens() {
        let err = load(
            &ServeArgs::default(),
            &[("EVENT_BUS_HTTP_ADDR", "0.0.0.0:8080")],
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("EVENT_BUS_API_TOKEN"), "{err}");
        let s = load(
            &ServeArgs::default(),
            &[
                ("EVENT_BUS_HTTP_ADDR", "0.0.0.0:8080"),
                ("EVENT_BUS_API_TOKEN", "admin-sentinel-0123456789"),
                ("EVENT_BUS_API_READ_TOKEN", "read-sentinel-0123456789"),
            ],
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("sentinel"));
        let err = load(&ServeArgs::default(), &[("EVENT_BUS_API_TOKEN", "short")]).unwrap_err();
        assert!(!err.to_string().contains("short\""), "{err}");
    }

    #[test]
    fn weak_tokens_are_refused_naming_the_variable_not_the_token() {
        for var in ["EVENT_BUS_API_TOKEN", "EVENT_BUS_API_READ_TOKEN"] {
            for weak in [
                "                ",
                "aaaaaaaaaaaaaaaaaaaaaaaa",
                "0123456789012345",
                "Tab\tin-the-token-0123",
                "sh0rt",
                "ünicode-Token-0123456",
            ] {
                let err = load(&ServeArgs::default(), &[(var, weak)]).unwrap_err();
                let text = err.to_string();
                assert!(text.starts_with(var), "{text}");
                assert!(weak.trim().is_empty() || !text.contains(weak), "{text}");
                assert_eq!(err.exit_code(), 2);
            }
        }
        for strong in [
            "S3ntinel-Secret-7f3a-admin-token",
            "0123456789abcdef0123456789abcdef",
            "q1w2e3r4t5y6u7i8o9p0+/AB==",
            "CHANGE-ME-admin-api-token",
        ] {
            assert!(check_token(strong).is_ok(), "{strong}");
        }
    }

    #[test]
    fn http_limits_default_and_parse() {
        let s = load(&ServeArgs::default(), &[]).unwrap();
        assert_eq!(
            (s.header_timeout, s.request_timeout, s.idle_timeout),
            (
                DEFAULT_HEADER_TIMEOUT,
                DEFAULT_REQUEST_TIMEOUT,
                DEFAULT_IDLE_TIMEOUT
            )
        );
        assert_eq!(
            (s.max_connections, s.max_errors),
            (DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_ERRORS)
        );
        let s = load(
            &ServeArgs::default(),
            &[
                ("EVENT_BUS_HTTP_HEADER_TIMEOUT", "2s"),
                ("EVENT_BUS_HTTP_REQUEST_TIMEOUT", "5m"),
                ("EVENT_BUS_HTTP_IDLE_TIMEOUT", "1h"),
                ("EVENT_BUS_HTTP_MAX_CONNECTIONS", "50"),
                ("EVENT_BUS_HTTP_MAX_ERRORS", "7"),
            ],
        )
        .unwrap();
        assert_eq!(s.header_timeout, Duration::from_secs(2));
        assert_eq!(s.request_timeout, Duration::from_secs(300));
        assert_eq!(s.idle_timeout, Duration::from_secs(3600));
        assert_eq!((s.max_connections, s.max_errors), (50, 7));
        for (var, bad) in [
            ("EVENT_BUS_HTTP_HEADER_TIMEOUT", "0s"),
            ("EVENT_BUS_HTTP_REQUEST_TIMEOUT", "forever"),
            ("EVENT_BUS_HTTP_IDLE_TIMEOUT", "2d"),
            ("EVENT_BUS_HTTP_MAX_CONNECTIONS", "0"),
            ("EVENT_BUS_HTTP_MAX_ERRORS", "-1"),
        ] {
            let err = load(&ServeArgs::default(), &[(var, bad)]).unwrap_err();
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn flags_win() {
        let args = ServeArgs {
            addr: Some("127.0.0.1:9999".parse().unwrap()),
            body_limit: Some(10),
            ..ServeArgs::default()
        };
        let s = load(
            &args,
            &[
                ("EVENT_BUS_HTTP_ADDR", "127.0.0.1:1"),
                ("EVENT_BUS_HTTP_BODY_LIMIT", "5"),
            ],
        )
        .unwrap();
        assert_eq!((s.addr.unwrap().port(), s.body_limit), (9999, 10));
    }
}
