//! The crate's one error type.

use crate::envelope::DecodeError;

/// Everything that can go wrong in the eventbus library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration given to a component is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// An event was refused before it was sent (bad type, empty key, too large, ...).
    #[error("invalid event: {0}")]
    InvalidEvent(String),

    /// Redis could not be reached at all (the URL is shown with its password redacted).
    #[error("cannot reach Redis at {url}: {source}")]
    Unreachable {
        /// The URL that was tried, password redacted.
        url: String,
        /// The underlying connection error.
        #[source]
        source: redis::RedisError,
    },

    /// A value given to an operation was refused as invalid, by this crate
    /// or by the server (PostgreSQL refuses U+0000 in text, timestamps out of
    /// its range, values too large for an index; a dead-letter filter with
    /// U+0000 or a time outside the years 0000-9999): the caller's mistake,
    /// which retrying does not fix.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A Redis command failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),

    /// A stream entry could not be decoded into an envelope.
    #[error(transparent)]
    Decode(#[from] DecodeError),

    /// A PostgreSQL operation failed.
    #[error("postgres: {0}")]
    Database(#[source] sqlx::Error),

    /// PostgreSQL could not be reached (the URL is shown with its password redacted).
    #[error("cannot reach PostgreSQL at {url}: {source}")]
    DatabaseUnreachable {
        /// The URL that was tried, password redacted.
        url: String,
        /// The underlying connection error.
        #[source]
        source: sqlx::Error,
    },

    /// The eventbus tables are missing from the schema.
    #[error("the eventbus tables are missing from schema {schema:?}: run `eventbus migrate` (with EVENT_BUS_DB_SCHEMA={schema})")]
    NotMigrated {
        /// The schema that was searched.
        schema: String,
    },

    /// An event does not fit the catalogue: unknown type or version,
    /// invalid data, or a key that is not its partition-key field.
    #[error("invalid event: {0}")]
    Schema(#[from] crate::catalog::SchemaErrors),

    /// The event catalogue could not be loaded.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),

    /// The operation did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),

    /// A dead-letter record kept in Redis changed under every attempt to
    /// update it (others were changing it too); nothing was changed.
    #[error("{0} kept changing while being updated; try again")]
    Contended(String),

    /// Redis refused to add due scheduled events to their stream (e.g. the
    /// key holds another type); they stay scheduled and are tried again.
    #[error("Redis refused to move scheduled events to {stream}: {reason}")]
    ScheduleRefused {
        /// The stream.
        stream: String,
        /// Redis's error.
        reason: String,
    },

    /// Another process joined the group with this member id (a static
    /// member started twice): this one stopped.
    #[error("member id {member:?} was taken over by another process; this one stopped")]
    MemberFenced {
        /// The member id.
        member: String,
    },
}

impl Error {
    /// True when retrying the same operation later may succeed (connection
    /// loss, timeouts, a server that is loading or failing over).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Timeout(_) | Error::Contended(_) => true,
            Error::Redis(e) => is_transient_redis(e),
            Error::DatabaseUnreachable { .. } => true,
            Error::Database(e) => is_transient_db(e),
            _ => false,
        }
    }
}

/// Errors after which the outcome of a write is unknown or a retry may succeed.
pub(crate) fn is_transient_redis(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::BusyLoading)
                | ErrorKind::Server(ServerErrorKind::MasterDown)
                | ErrorKind::Server(ServerErrorKind::ReadOnly)
        )
        || e.code() == Some("LOADING")
}

/// Database errors after which a retry may succeed: lost connections, pool
/// timeouts, serialization failures, deadlocks, a server shutting down.
pub(crate) fn is_transient_db(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            // serialization_failure, deadlock_detected, admin_shutdown,
            // crash_shutdown, cannot_connect_now, too_many_connections,
            // connection_exception class
            Some(
                "40001"
                    | "40P01"
                    | "57P01"
                    | "57P02"
                    | "57P03"
                    | "53300"
                    | "08000"
                    | "08003"
                    | "08006"
            )
        ),
        _ => false,
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(e)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
