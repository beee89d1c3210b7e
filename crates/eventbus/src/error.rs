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

    /// A Redis command failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),

    /// A stream entry could not be decoded into an envelope.
    #[error(transparent)]
    Decode(#[from] DecodeError),

    /// The operation did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
}

impl Error {
    /// True when retrying the same operation later may succeed (connection
    /// loss, timeouts, a server that is loading or failing over).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Timeout(_) => true,
            Error::Redis(e) => is_transient_redis(e),
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

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
