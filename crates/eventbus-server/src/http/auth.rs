//! Bearer tokens: the admin token may do everything, the read token only
//! GET. Tokens are compared in constant time. Without any token configured
//! (loopback only, see `config_serve`) every request is allowed.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::HttpError;

/// The configured tokens.
#[derive(Clone, Default)]
pub(crate) struct Tokens {
    pub(crate) admin: Option<String>,
    pub(crate) read: Option<String>,
}

/// What a request's token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Admin,
    Read,
}

/// Constant-time equality (length differences end early; lengths are not secret).
fn same(given: &[u8], expected: &str) -> bool {
    given.ct_eq(expected.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is
/// case-insensitive and one or more spaces follow it (RFC 9110 §11.4).
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(b"bearer".len())?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    Some(rest.trim_ascii())
}

impl Tokens {
    /// True when no token is configured (loopback only): everything is allowed.
    pub(crate) fn is_open(&self) -> bool {
        self.admin.is_none() && self.read.is_none()
    }

    /// What the token `given` allows (`None`: it is neither token). With
    /// no token configured, everything is allowed.
    pub(crate) fn access_of(&self, given: &[u8]) -> Option<Access> {
        if self.is_open() {
            return Some(Access::Admin);
        }
        // Check both, whatever the first says, so timing tells nothing.
        let admin = self.admin.as_deref().is_some_and(|t| same(given, t));
        let read = self.read.as_deref().is_some_and(|t| same(given, t));
        match (admin, read) {
            (true, _) => Some(Access::Admin),
            (false, true) => Some(Access::Read),
            _ => None,
        }
    }

    fn check(&self, header: Option<&[u8]>) -> Result<Access, HttpError> {
        if self.is_open() {
            return Ok(Access::Admin);
        }
        let given = header.and_then(bearer).ok_or(HttpError::Unauthorized)?;
        self.access_of(given).ok_or(HttpError::Unauthorized)
    }
}

/// Middleware: 401 without a valid token, 403 for a read token on a write.
pub(crate) async fn require_token(
    State(tokens): State<Arc<Tokens>>,
    request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(axum::http::HeaderValue::as_bytes);
    match tokens.check(header) {
        Ok(Access::Admin) => next.run(request).await,
        Ok(Access::Read) if matches!(*request.method(), Method::GET | Method::HEAD) => {
            next.run(request).await
        }
        Ok(Access::Read) => HttpError::Forbidden.into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_tokens() {
        let t = Tokens {
            admin: Some("admin-token-0123456789".into()),
            read: Some("read-token-0123456789".into()),
        };
        assert_eq!(
            t.check(Some(b"Bearer admin-token-0123456789")).unwrap(),
            Access::Admin
        );
        assert_eq!(
            t.check(Some(b"Bearer read-token-0123456789")).unwrap(),
            Access::Read
        );
        assert!(t.check(Some(b"Bearer admin-token-012345678")).is_err());
        assert!(t.check(Some(b"admin-token-0123456789")).is_err());
        for scheme in ["bearer", "BEARER", "bEaReR  "] {
            let header = format!("{scheme} read-token-0123456789");
            assert_eq!(t.check(Some(header.as_bytes())).unwrap(), Access::Read);
        }
        assert!(t.check(Some(b"Bearerread-token-0123456789")).is_err());
        assert!(t.check(Some(b"Basic read-token-0123456789")).is_err());
        assert!(t.check(Some(b"Bearer ")).is_err());
        assert!(t.check(None).is_err());
        assert_eq!(Tokens::default().check(None).unwrap(), Access::Admin);
    }
}
