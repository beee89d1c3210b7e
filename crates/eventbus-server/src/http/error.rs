//! The API's errors: one type, one JSON shape, a status per variant. Causes
//! from Redis or PostgreSQL are logged (without secrets) and answered with a
//! generic message: their text never reaches the client.
//!
//! Answers stay small whatever the request: messages are cut to
//! [`MAX_TEXT`] characters (serde and JSON Schema quote the value they
//! refuse), and a 422 lists at most `EVENT_BUS_HTTP_MAX_ERRORS` errors of
//! its events ([`Problems`]) while counting them all.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::DEFAULT_MAX_ERRORS;

/// An error answered as `{"error": {"code", "message", "details"?}}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum HttpError {
    /// The request is malformed (bad JSON, bad query, bad field).
    #[error("{0}")]
    BadRequest(String),
    /// Events do not fit the catalogue; `problems` lists their first errors.
    #[error("{message}")]
    Invalid {
        /// Summary.
        message: String,
        /// The failing events and their errors, capped.
        problems: Problems,
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
    /// The request did not complete within `EVENT_BUS_HTTP_REQUEST_TIMEOUT`.
    #[error("the request did not complete within {0:?} (EVENT_BUS_HTTP_REQUEST_TIMEOUT)")]
    Timeout(Duration),
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
            HttpError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
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
            HttpError::Timeout(_) => "request_timeout",
            HttpError::Unavailable(_) => "unavailable",
            HttpError::Internal => "internal",
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code(), "message": clip(&self.to_string())});
        if let HttpError::Invalid { problems, .. } = &self {
            problems.write_to(&mut error);
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
            E::Schema(errors) => {
                let mut problems = Problems::new(DEFAULT_MAX_ERRORS);
                problems.add_schema(None, &errors);
                HttpError::Invalid {
                    message: format!("invalid event: {} v{}", errors.event_type, errors.version),
                    problems,
                }
            }
            E::InvalidEvent(m) => HttpError::Invalid {
                message: format!("invalid event: {m}"),
                problems: Problems::default(),
            },
            E::InvalidInput(m) => HttpError::BadRequest(m),
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

/// The longest message, pointer or type an answer carries, in characters.
pub(crate) const MAX_TEXT: usize = 500;

/// `text`, cut to [`MAX_TEXT`] characters with a note of its whole size.
pub(crate) fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}… ({} bytes in all)", &text[..end], text.len()),
    }
}

/// The failing events of a 422 answer: each error is counted, the first
/// `limit` of them (in batch order) are listed, grouped by event. Written
/// as `details` (one object per listed event: `index`, `type`, `version`,
/// `errors` of `{pointer, message}`, `error_count`), `invalid_events`,
/// `total_errors` and `truncated`.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    limit: usize,
    listed: usize,
    total: usize,
    events: usize,
    details: Vec<Value>,
}

impl Problems {
    /// Nothing yet; at most `limit` errors will be listed.
    pub(crate) fn new(limit: usize) -> Self {
        Problems {
            limit,
            ..Problems::default()
        }
    }

    /// True when no event was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// How many events were added.
    pub(crate) fn events(&self) -> usize {
        self.events
    }

    /// Adds one failing event (`index` in its batch) and its errors as
    /// (JSON pointer, message).
    pub(crate) fn add<'a>(
        &mut self,
        index: Option<usize>,
        event_type: &str,
        version: Option<u32>,
        errors: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        self.events += 1;
        let mut count = 0;
        let mut listed = Vec::new();
        for (pointer, message) in errors {
            count += 1;
            if self.listed < self.limit {
                self.listed += 1;
                listed.push(json!({"pointer": clip(pointer), "message": clip(message)}));
            }
        }
        self.total += count;
        if count > 0 && listed.is_empty() {
            return;
        }
        let mut detail = json!({"type": clip(event_type), "errors": listed, "error_count": count});
        if let Some(v) = version {
            detail["version"] = json!(v);
        }
        if let Some(i) = index {
            detail["index"] = json!(i);
        }
        self.details.push(detail);
    }

    /// Adds one event the catalogue refused.
    pub(crate) fn add_schema(&mut self, index: Option<usize>, errors: &eventbus::SchemaErrors) {
        self.add(
            index,
            &errors.event_type,
            Some(errors.version),
            errors
                .errors
                .iter()
                .map(|e| (e.pointer.as_str(), e.message.as_str())),
        );
    }

    /// Writes `details` (always) and the counts (when events were added)
    /// into the answer's `error` object.
    fn write_to(&self, error: &mut Value) {
        error["details"] = Value::Array(self.details.clone());
        if !self.is_empty() {
            error["invalid_events"] = json!(self.events);
            error["total_errors"] = json!(self.total);
            error["truncated"] = json!(self.listed < self.total);
        }
    }
}

/// A handler's result.
pub(crate) type HttpResult<T> = Result<T, HttpError>;
