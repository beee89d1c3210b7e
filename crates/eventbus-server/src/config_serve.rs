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
//!
//! Without any token the API only listens on a loopback address.

use std::net::SocketAddr;

use crate::cli_serve::ServeArgs;
use crate::config::Env;
use crate::error::{CliError, Result};

/// The variables read here.
pub(crate) const SERVE_VARS: &[&str] = &[
    "EVENT_BUS_HTTP_ADDR",
    "EVENT_BUS_API_TOKEN",
    "EVENT_BUS_API_READ_TOKEN",
    "EVENT_BUS_HTTP_BODY_LIMIT",
    "EVENT_BUS_CORS_ORIGINS",
];

/// Default listen address: loopback only.
pub(crate) const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// Default request body limit.
pub(crate) const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// HTTP settings. The tokens are secrets: `Debug` never shows them.
#[derive(Clone, Default)]
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
            if token.as_ref().is_some_and(|t| t.len() < 16) {
                return Err(CliError::Setting {
                    var,
                    reason: "is too short: use at least 16 characters".into(),
                });
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
        Ok(ServeSettings {
            addr: Some(addr),
            admin_token,
            read_token,
            body_limit,
            cors_origins,
        })
    }
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
