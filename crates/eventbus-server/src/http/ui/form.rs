//! Form bodies and query strings as name/value pairs (`url`'s
//! `application/x-www-form-urlencoded` parser): repeated names (the
//! selected dead letters) are kept, and every field is checked where it
//! is used, with a 400 naming it.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;

use super::error::UiError;
use crate::http::routes::body_bytes;

/// The fields of a form body or a query string, in order.
#[derive(Debug, Default, Clone)]
pub(crate) struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    /// Parses `application/x-www-form-urlencoded` bytes.
    pub(crate) fn parse(bytes: &[u8]) -> Form {
        Form {
            fields: url::form_urlencoded::parse(bytes).into_owned().collect(),
        }
    }

    /// The first value of `name`, trimmed, when not empty (an empty input
    /// is no filter).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Every non-empty value of `name`.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// `name` as a number in `range`, `default` when absent.
    pub(crate) fn number<T>(
        &self,
        name: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, UiError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(text) = self.get(name) else {
            return Ok(default);
        };
        match text.parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(UiError::BadRequest(format!(
                "{name} must be a number from {} to {}",
                range.start(),
                range.end()
            ))),
        }
    }
}

/// The query string of a request (never fails: a bad field is refused
/// where it is read).
pub(crate) struct Query(pub(crate) Form);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Query(Form::parse(
            parts.uri.query().unwrap_or_default().as_bytes(),
        )))
    }
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = UiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body: Result<Bytes, BytesRejection> = Bytes::from_request(request, state).await;
        let bytes = body_bytes(body).map_err(UiError::Api)?;
        Ok(Form::parse(&bytes))
    }
}
