//! Router layers bounding what one request may take: its time (the request
//! timeout, answered 408) and its declared size (a `Content-Length` over
//! the body limit is answered 413 before any of the body is read; a body
//! without a declared length is cut by `DefaultBodyLimit` while read). The
//! size of error answers is bounded in [`super::error`], with the limit
//! carried to the handlers as [`ErrorLimit`].

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::HttpError;

/// How many errors a 422 answer lists (`EVENT_BUS_HTTP_MAX_ERRORS`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorLimit(pub(crate) usize);

/// 413 for a declared `Content-Length` over `limit`, before the body is
/// read; the connection is closed after the answer, its body unread.
pub(crate) async fn refuse_declared_too_large(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return closing(HttpError::TooLarge.into_response());
    }
    next.run(request).await
}

/// 408 when the request (reading its body included) takes longer than
/// `timeout`; the connection is closed after the answer. Dropping the
/// handler stops it at its next await: a replay stopped so may leave the
/// dead letter it was sending `new`, to be replayed again (at least once).
pub(crate) async fn request_timeout(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => closing(HttpError::Timeout(timeout).into_response()),
    }
}

/// `response` with `Connection: close`: what is left of the request is
/// not read.
fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}
