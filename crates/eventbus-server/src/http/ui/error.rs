//! The console's errors, answered as HTML pages with the status of each:
//! the login page (401), refusals (403), bad input (400), nothing there
//! (404), and the API's own errors (whose messages never carry Redis or
//! PostgreSQL internals, see `http::error`).

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::html::{esc, render, Nav};
use crate::http::error::HttpError;

/// An error page.
#[derive(Debug)]
pub(crate) enum UiError {
    /// No session (or a failed login): the login page, then back to `next`.
    Login { next: String, failed: bool },
    /// A state-changing request without this session's CSRF token.
    Csrf,
    /// A read-only session asked for a change.
    ReadOnly,
    /// A state-changing request from another site.
    CrossSite,
    /// Bad input, said how.
    BadRequest(String),
    /// Nothing there.
    NotFound(String),
    /// What the API would answer.
    Api(HttpError),
}

impl From<HttpError> for UiError {
    fn from(e: HttpError) -> Self {
        UiError::Api(e)
    }
}

impl From<eventbus::Error> for UiError {
    fn from(e: eventbus::Error) -> Self {
        UiError::Api(HttpError::from(e))
    }
}

/// The login form, with a message after a failed attempt.
pub(crate) fn login_page(next: &str, failed: bool) -> String {
    let message = if failed {
        r#"<p class="error" role="alert">That token is not valid. Use the admin token (EVENT_BUS_API_TOKEN) or the read token (EVENT_BUS_API_READ_TOKEN).</p>"#
    } else {
        ""
    };
    render(
        "Log in",
        None,
        Nav::None,
        &format!(
            r#"{message}<form method="post" action="/ui/login" class="login">
<input type="hidden" name="next" value="{}">
<label for="token">Access token</label>
<input id="token" name="token" type="password" autocomplete="off" required autofocus>
<p class="hint">The read token shows everything; the admin token may also replay and discard dead letters. The token is checked once and is not kept in the browser.</p>
<button type="submit">Log in</button>
</form>"#,
            esc(next)
        ),
    )
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            UiError::Login { next, failed } => {
                return (StatusCode::UNAUTHORIZED, Html(login_page(&next, failed)))
                    .into_response()
            }
            UiError::Csrf => (
                StatusCode::FORBIDDEN,
                "This form is stale or did not come from this console (its CSRF token is missing or wrong). Reload the page and try again.".to_owned(),
            ),
            UiError::ReadOnly => (
                StatusCode::FORBIDDEN,
                "This session may only read: log in with the admin token to replay or discard.".to_owned(),
            ),
            UiError::CrossSite => (
                StatusCode::FORBIDDEN,
                "Refused: the request came from another site.".to_owned(),
            ),
            UiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            UiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            UiError::Api(e) => (e.status_code(), e.to_string()),
        };
        let body = format!(
            r#"<p class="error" role="alert">{}</p><p><a href="/ui">Back to the overview</a></p>"#,
            esc(&crate::http::error::clip(&message))
        );
        let title = status.canonical_reason().unwrap_or("Error");
        (status, Html(render(title, None, Nav::None, &body))).into_response()
    }
}
