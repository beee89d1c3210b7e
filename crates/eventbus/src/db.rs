//! PostgreSQL primitives shared by the outbox, inbox, relay and dead-letter
//! store: the schema name, the pool, and how database errors are reported.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::redact::redact;
use crate::{Error, Result};

/// A validated schema name, quoted for use in SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSchema {
    name: String,
}

impl Default for DbSchema {
    fn default() -> Self {
        DbSchema {
            name: "public".into(),
        }
    }
}

impl DbSchema {
    /// A schema name: 1 to 63 characters, a lower-case letter or `_` first,
    /// then lower-case letters, digits or `_` (no quoting surprises).
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let ok = (1..=63).contains(&name.len())
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(DbSchema { name })
        } else {
            Err(Error::Config(format!(
                "schema name {name:?} must be 1-63 characters of a-z, 0-9 and _, not starting with a digit"
            )))
        }
    }

    /// The bare name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `"schema"."table"`.
    pub(crate) fn table(&self, table: &str) -> String {
        format!("\"{}\".\"{}\"", self.name, table)
    }

    /// The LISTEN/NOTIFY channel the outbox trigger notifies.
    pub(crate) fn channel(&self) -> String {
        format!("eventbus_outbox.{}", self.name)
    }
}

/// The default size of a process's pool: small, so that several relays and
/// consumers per group fit in PostgreSQL's default `max_connections = 100`
/// (docs/operations.md, "Sizing PostgreSQL connections").
pub const DEFAULT_POOL_SIZE: u32 = 6;

/// How long one `acquire` may take, connect included. Long enough that a
/// connect to a busy server completes instead of being cut off and retried;
/// tasks queue in a [`PoolGate`](crate::pg::PoolGate) before it starts, not inside it.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens a connection pool of at most `max_connections` (at least 1).
/// `application_name` shows in `pg_stat_activity`.
///
/// Idle connections are not pinged before use (`test_before_acquire` off):
/// a ping inside a waiter's deadline is cut off when the deadline passes,
/// which closes a good connection and opens a slot that the next waiter
/// reconnects; a dead connection shows as a failed statement instead, which
/// every caller retries with backoff. Many tasks sharing a small pool should
/// wait in a [`PoolGate`](crate::pg::PoolGate).
///
/// TLS is used when the URL asks for it (`sslmode=require`, `verify-ca`,
/// `verify-full`; `sslrootcert=` for a private CA). Without `sslmode`, the
/// connection is plain: libpq's default `prefer` would negotiate TLS
/// without checking anything (no protection against interception) while
/// making every connection slower, so TLS is opt-in and then meant.
pub async fn connect_pool(
    url: &str,
    max_connections: u32,
    application_name: &str,
) -> Result<PgPool> {
    let redacted = redact(url);
    let is_postgres_url =
        url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "postgres" | "postgresql"));
    if !is_postgres_url {
        return Err(Error::Config(format!(
            "DATABASE_URL {redacted} is not a PostgreSQL URL: expected \
             postgres://USER@HOST:PORT/DATABASE (with `:PASSWORD` after USER if one is \
             needed; key=value connection strings are not supported)"
        )));
    }
    let url = &without_unknown_parameters(url);
    let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
        Error::Config(format!(
            "invalid DATABASE_URL {redacted}: {}",
            redact(&first_line(&e))
        ))
    })?;
    let asks_tls = url::Url::parse(url).is_ok_and(|u| {
        u.query_pairs()
            .any(|(k, _)| k == "sslmode" || k == "ssl-mode")
    });
    let options = if asks_tls {
        options
    } else {
        options.ssl_mode(sqlx::postgres::PgSslMode::Disable)
    };
    let options = options.application_name(application_name);
    PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(|source| connect_error(redacted, source))
}

/// The URL query parameters sqlx reads (sqlx-postgres `options/parse.rs`).
const KNOWN_PARAMETERS: [&str; 18] = [
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// `url` without the query parameters sqlx does not read (libpq's
/// `sslpassword`, `connect_timeout`, ...), each named in a warning. sqlx
/// would log such a parameter with its value, which may be a secret.
fn without_unknown_parameters(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    let known = |k: &str| KNOWN_PARAMETERS.contains(&k) || k.starts_with("options[");
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    if pairs.iter().all(|(k, _)| known(k)) {
        return url.to_owned();
    }
    for (k, _) in pairs.iter().filter(|(k, _)| !known(k)) {
        tracing::warn!(parameter = %k, "DATABASE_URL parameter not supported; ignored");
    }
    parsed
        .query_pairs_mut()
        .clear()
        .extend_pairs(pairs.iter().filter(|(k, _)| known(k)));
    if parsed.query() == Some("") {
        parsed.set_query(None);
    }
    parsed.into()
}

/// A failed connect: [`Error::DatabaseUnreachable`] when the server may
/// answer later (no connection, a timeout, a server starting or shutting
/// down, too many connections); otherwise the server answered and refused
/// the settings (an unknown role or database, a wrong password, TLS it
/// does not speak, not PostgreSQL at all): a configuration error.
fn connect_error(url: String, source: sqlx::Error) -> Error {
    let refused = match &source {
        sqlx::Error::Database(db) if !crate::error::is_transient_db(&source) => {
            Some(db.message().to_owned())
        }
        sqlx::Error::Configuration(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => {
            Some(first_line(&source))
        }
        _ => None,
    };
    match refused {
        Some(reason) => Error::Config(format!(
            "PostgreSQL at {url} refused the connection: {}",
            redact(&reason)
        )),
        None => Error::DatabaseUnreachable { url, source },
    }
}

/// Marks SQL text as safe to run. Every dynamic statement in this module is
/// built from constants and a [`DbSchema`] name, which is validated to
/// `[a-z_][a-z0-9_]*` and quoted: no value from outside ever reaches the text
/// (values are always bound parameters).
pub(crate) fn safe(sql: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql.to_owned())
}

fn first_line(e: &impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

/// Deletes the rows of `table` whose `column` is older than `age`, at most
/// `batch` per statement (short transactions, no long lock on a busy
/// queue table), until none are left. Returns how many were deleted.
pub(crate) async fn delete_older_than(
    pool: &PgPool,
    schema: &DbSchema,
    table: &str,
    column: &str,
    age: Duration,
    batch: u64,
) -> Result<u64> {
    let table = schema.table(table);
    let sql = format!(
        "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} \
         WHERE {column} < now() - make_interval(secs => $1) LIMIT {batch})"
    );
    let mut total = 0;
    loop {
        let n = sqlx::query(safe(&sql))
            .bind(age.as_secs_f64())
            .execute(pool)
            .await
            .map_err(|e| db_error(schema, e))?
            .rows_affected();
        total += n;
        if n < batch {
            return Ok(total);
        }
    }
}

/// Maps "relation does not exist" (42P01) and "schema does not exist"
/// (3F000) to [`Error::NotMigrated`], everything else to [`Error::Database`].
pub(crate) fn db_error(schema: &DbSchema, e: sqlx::Error) -> Error {
    if let sqlx::Error::Database(db) = &e {
        if matches!(db.code().as_deref(), Some("42P01" | "3F000" | "42883")) {
            return Error::NotMigrated {
                schema: schema.name().to_owned(),
            };
        }
        // The outbox's own checks (migration 0004) say what is wrong in words.
        if db.code().as_deref() == Some("23514")
            && db
                .constraint()
                .is_some_and(|c| c.starts_with("eventbus_outbox_"))
        {
            return Error::InvalidEvent(db.message().to_owned());
        }
        // Text PostgreSQL cannot hold: U+0000 in a text or jsonb value.
        if matches!(db.code().as_deref(), Some("22P05" | "22021")) {
            return Error::InvalidInput(format!(
                "PostgreSQL cannot store this text (U+0000 is refused in text and jsonb columns): {}",
                db.message()
            ));
        }
        // Other values it refuses: data exceptions (class 22: a timestamp
        // or number out of range, a bad format) and a value too large for
        // an index (54000). The caller's input, not an outage.
        if db
            .code()
            .is_some_and(|c| c.starts_with("22") || c == "54000")
        {
            return Error::InvalidInput(format!("PostgreSQL refused a value: {}", db.message()));
        }
    }
    Error::Database(e)
}

/// [`db_error`] for statements that write events: a value refused, or a
/// constraint of the table violated, is an invalid event.
pub(crate) fn event_db_error(schema: &DbSchema, e: sqlx::Error) -> Error {
    let integrity =
        matches!(&e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("23")));
    match db_error(schema, e) {
        Error::InvalidInput(m) => Error::InvalidEvent(m),
        Error::Database(sqlx::Error::Database(db)) if integrity => {
            Error::InvalidEvent(db.message().to_owned())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_sqlx_would_log_are_dropped() {
        assert_eq!(
            without_unknown_parameters(
                "postgres://u@h/db?sslmode=require&sslpassword=S&connect_timeout=3"
            ),
            "postgres://u@h/db?sslmode=require"
        );
        assert_eq!(
            without_unknown_parameters("postgres://u@h/db?sslpassword=S"),
            "postgres://u@h/db"
        );
        let kept =
            "postgres://u:p@h:1/db?sslmode=verify-full&sslrootcert=/ca.pem&options[search_path]=x";
        assert_eq!(without_unknown_parameters(kept), kept);
    }

    #[tokio::test]
    async fn refused_settings_are_configuration_errors() {
        for url in [
            "mysql://u@127.0.0.1/x",
            "host=127.0.0.1 password=S dbname=x",
        ] {
            let e = connect_pool(url, 1, "test").await.unwrap_err();
            assert!(matches!(e, Error::Config(_)), "{e}");
            assert!(!e.to_string().contains("=S "), "{e}");
        }
    }
}
