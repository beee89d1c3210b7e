//! The API's errors: one type, one JSON shape, a status per variant. Causes
//! from Redis or PostgreSQL are logged (without secrets) and answered with a
//! generic message: their text never reaches the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// An error answered as `{"error": {"code", "message", "details"?}}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum HttpError {
    /// The request is malformed (bad JSON, bad query, bad field).
    #[error("{0}")]
    BadRequest(String),
    /// Events do not fit the catalogue; `details` lists every error.
    #[error("{message}")]
    Invalid {
        /// Summary.
        message: String,
        /// One object per failing event or field.
        details: Vec<Value>,
    },
    /// No or a wrong bearer token.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// The token may not do this (read-only token on a write route).
    #[error("this token may only read")]
    Forbidden,
    /// Nothing at this path or with this id.
    #[error("{0}")]
    NotFound(String),
    /// The body is larger than the limit (`EVENT_BUS_HTTP_BODY_LIMIT`).
    #[error("the request body is larger than the limit (EVENT_BUS_HTTP_BODY_LIMIT)")]
    TooLarge,
    /// A backing service is down or not ready.
    #[error("{0}")]
    Unavailable(&'static str),
    /// Something failed that the client cannot fix; details are in the log.
    #[error("internal error")]
    Internal,
}

impl HttpError {
    /// The HTTP status of each variant.
    pub(crate) fn status_code(&self) -> StatusCode {
        match self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            HttpError::Unauthorized => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden => StatusCode::FORBIDDEN,
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            HttpError::BadRequest(_) => "bad_request",
            HttpError::Invalid { .. } => "invalid_event",
            HttpError::Unauthorized => "unauthorized",
            HttpError::Forbidden => "forbidden",
            HttpError::NotFound(_) => "not_found",
            HttpError::TooLarge => "payload_too_large",
            HttpError::Unavailable(_) => "unavailable",
            HttpError::Internal => "internal",
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code(), "message": self.to_string()});
        if let HttpError::Invalid { details, .. } = &self {
            error["details"] = Value::Array(details.clone());
        }
        let mut response = (self.status_code(), Json(json!({ "error": error }))).into_response();
        if matches!(self, HttpError::Unauthorized) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<eventbus::Error> for HttpError {
    fn from(e: eventbus::Error) -> Self {
        use eventbus::Error as E;
        match e {
            E::Schema(errors) => HttpError::Invalid {
                message: format!("invalid event: {} v{}", errors.event_type, errors.version),
                details: vec![schema_details(&errors)],
            },
            E::InvalidEvent(m) => HttpError::Invalid {
                message: format!("invalid event: {m}"),
                details: Vec::new(),
            },
            E::Unreachable { .. } | E::Redis(_) => {
                tracing::error!(error = %e, "redis failed while answering a request");
                HttpError::Unavailable("redis is unavailable")
            }
            E::DatabaseUnreachable { .. } | E::Database(_) => {
                tracing::error!(error = %e, "postgres failed while answering a request");
                HttpError::Unavailable("postgres is unavailable")
            }
            E::Contended(_) => {
                tracing::warn!(error = %e, "a dead letter kept changing while being updated");
                HttpError::Unavailable("the dead letter is being changed by others; try again")
            }
            E::NotMigrated { .. } => {
                tracing::error!(error = %e, "the eventbus tables are missing");
                HttpError::Unavailable("the database is not migrated")
            }
            other => {
                tracing::error!(error = %other, "request failed");
                HttpError::Internal
            }
        }
    }
}

/// The errors of one event as JSON.
pub(crate) fn schema_details(errors: &eventbus::SchemaErrors) -> Value {
    json!({
        "type": errors.event_type,
        "version": errors.version,
        "errors": errors.errors.iter().map(|e| json!({"pointer": e.pointer, "message": e.message})).collect::<Vec<_>>(),
    })
}

/// A handler's result.
pub(crate) type HttpResult<T> = Result<T, HttpError>;
