//! Console sessions: `POST /ui/login` trades a token for a session, kept
//! here in memory. The cookie holds only a random session id (HttpOnly,
//! SameSite=Strict, path `/ui`); the id maps to the access level the token
//! gave and to the session's CSRF token, which every state-changing form
//! carries. The token itself is never stored, echoed or rendered.
//!
//! Without any token configured (`serve` allows that on loopback only),
//! everything is allowed, as in the API: a visit gets an admin session at
//! once, so that forms still carry a CSRF token.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Extension, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

use super::error::UiError;
use super::form::Form;
use super::html::esc;
use super::Console;
use crate::http::auth::{Access, Tokens};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "eventbus_console";
/// A session unused this long ends.
const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after login, used or not.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; past it the one unused longest ends.
const MAX_SESSIONS: usize = 1000;

/// One logged-in browser.
struct Session {
    access: Access,
    csrf: String,
    created: Instant,
    seen: Instant,
}

/// The sessions of this process (a restart logs everyone out).
#[derive(Default)]
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes as hex (the thread RNG is a CSPRNG).
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    let mut out = String::with_capacity(64);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

impl Sessions {
    /// Opens a session with `access`; returns its id.
    pub(crate) fn open(&self, access: Access) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut all = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, s| live(s, now));
        if all.len() >= MAX_SESSIONS {
            if let Some(oldest) = all
                .iter()
                .min_by_key(|(_, s)| s.seen)
                .map(|(k, _)| k.clone())
            {
                all.remove(&oldest);
            }
        }
        all.insert(
            id.clone(),
            Session {
                access,
                csrf: random_token(),
                created: now,
                seen: now,
            },
        );
        id
    }

    /// The live session `id`, marked used.
    fn get(&self, id: &str) -> Option<Viewer> {
        let now = Instant::now();
        let mut all = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let s = all.get_mut(id)?;
        if !live(s, now) {
            all.remove(id);
            return None;
        }
        s.seen = now;
        Some(Viewer {
            access: s.access,
            csrf: Arc::from(s.csrf.as_str()),
            id: Arc::from(id),
        })
    }

    fn close(&self, id: &str) {
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.seen) < IDLE && now.duration_since(s.created) < LIFETIME
}

/// The session of a request (an extractor: without one, the login page).
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    access: Access,
    csrf: Arc<str>,
    id: Arc<str>,
}

impl Viewer {
    /// True for an admin session (it may act).
    pub(crate) fn is_admin(&self) -> bool {
        self.access == Access::Admin
    }

    /// The hidden CSRF input every state-changing form carries.
    pub(crate) fn csrf_field(&self) -> String {
        format!(
            r#"<input type="hidden" name="csrf" value="{}">"#,
            esc(&self.csrf)
        )
    }

    /// ` disabled` (with why, for screen readers too) on a read session's
    /// action buttons, else nothing.
    pub(crate) fn disabled(&self) -> &'static str {
        if self.is_admin() {
            ""
        } else {
            r#" disabled aria-disabled="true" title="read-only session: log in with the admin token to act""#
        }
    }

    /// A state-changing request may go on: its form carries this session's
    /// CSRF token (else 403), and the session is an admin one (else 403).
    pub(crate) fn may_act(&self, form: &Form) -> Result<(), UiError> {
        let given = form.get("csrf").unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(self.csrf.as_bytes())) {
            return Err(UiError::Csrf);
        }
        if !self.is_admin() {
            return Err(UiError::ReadOnly);
        }
        Ok(())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Viewer>().cloned().ok_or_else(|| {
            let next = parts
                .uri
                .path_and_query()
                .map_or("/ui", |p| p.as_str())
                .to_owned();
            UiError::Login {
                next: safe_next(&next).to_owned(),
                failed: false,
            }
        })
    }
}

/// The session id in the request's cookies.
fn cookie_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The `Set-Cookie` value opening session `id` (or ending it, `None`).
fn set_cookie(id: Option<&str>, headers: &HeaderMap) -> HeaderValue {
    // Secure when the browser reached us over TLS (a terminating proxy
    // says so); on plain http a Secure cookie would not come back.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let value = match id {
        Some(id) => format!("{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict"),
        None => format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    };
    let value = if secure { value + "; Secure" } else { value };
    HeaderValue::from_str(&value).expect("a cookie of hex and ASCII")
}

/// Where to go after login: a console path, never elsewhere.
fn safe_next(next: &str) -> &str {
    let console = next == "/ui" || next.starts_with("/ui/") || next.starts_with("/ui?");
    if console && !next.starts_with("/ui/login") && !next.contains('\\') {
        next
    } else {
        "/ui"
    }
}

/// True when a browser says the request comes from another site (its
/// `Origin` names another host, or `Sec-Fetch-Site: cross-site`): state
/// changes are refused then, whatever they carry (a second guard beside
/// SameSite=Strict and the CSRF token).
fn cross_site(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return true;
    }
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST))
    else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("");
    if origin == "null" {
        // Sent for privacy reasons (a referrer policy, a sandbox): it
        // tells nothing; `Sec-Fetch-Site` above did if the browser knows it.
        return false;
    }
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest.trim_end_matches('/'));
    !origin_host.eq_ignore_ascii_case(host.to_str().unwrap_or(""))
}

/// Middleware on every console route: finds the request's session (the
/// [`Viewer`] extractor reads it), opens one when no token is configured,
/// and refuses cross-site state changes.
pub(crate) async fn resolve(
    State(console): State<Arc<Console>>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::GET
        && request.method() != Method::HEAD
        && cross_site(request.headers())
    {
        return UiError::CrossSite.into_response();
    }
    let found = cookie_id(request.headers()).and_then(|id| console.sessions.get(id));
    let opened = match (&found, console.tokens.is_open()) {
        (None, true) => {
            let id = console.sessions.open(Access::Admin);
            console.sessions.get(&id)
        }
        _ => None,
    };
    if let Some(v) = found.clone().or(opened.clone()) {
        request.extensions_mut().insert(v);
    }
    let cookie = opened.map(|v| set_cookie(Some(&v.id), request.headers()));
    let mut response = next.run(request).await;
    if let Some(c) = cookie {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

/// `POST /ui/login` (form: `token`, `next`): an admin or read session, or
/// the login page again with 401. The token is never echoed.
pub(crate) async fn login(
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    form: Form,
) -> Result<Response, UiError> {
    let next = safe_next(form.get("next").unwrap_or("/ui")).to_owned();
    let token = form.get("token").unwrap_or_default();
    let access = match token_access(&console.tokens, token) {
        Some(a) => a,
        None => return Err(UiError::Login { next, failed: true }),
    };
    if let Some(old) = cookie_id(&headers) {
        console.sessions.close(old);
    }
    let id = console.sessions.open(access);
    let mut response = Redirect::to(&next).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(Some(&id), &headers));
    Ok(response)
}

/// What a login token allows; an empty one nothing (even when open: then
/// the session came without login).
fn token_access(tokens: &Tokens, token: &str) -> Option<Access> {
    let token = token.trim();
    if token.is_empty() && !tokens.is_open() {
        return None;
    }
    tokens.access_of(token.as_bytes())
}

/// `POST /ui/logout` (form: `csrf`): ends the session (a read one too).
pub(crate) async fn logout(
    Extension(console): Extension<Arc<Console>>,
    viewer: Viewer,
    headers: HeaderMap,
    form: Form,
) -> Result<Response, UiError> {
    match viewer.may_act(&form) {
        Ok(()) | Err(UiError::ReadOnly) => {}
        Err(e) => return Err(e),
    }
    console.sessions.close(&viewer.id);
    let mut response = Redirect::to("/ui").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(None, &headers));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_in_the_console() {
        assert_eq!(safe_next("/ui/dlq?group=a"), "/ui/dlq?group=a");
        assert_eq!(safe_next("/ui"), "/ui");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/uix",
            "/ui/login",
            "/ui\\x",
        ] {
            assert_eq!(safe_next(bad), "/ui", "{bad}");
        }
    }

    #[test]
    fn sessions_hold_their_access_and_end() {
        let s = Sessions::default();
        let id = s.open(Access::Read);
        let v = s.get(&id).unwrap();
        assert!(!v.is_admin());
        assert_eq!(v.csrf.len(), 64);
        assert!(s.get("not-a-session").is_none());
        s.close(&id);
        assert!(s.get(&id).is_none());
        for _ in 0..MAX_SESSIONS + 5 {
            s.open(Access::Admin);
        }
        assert_eq!(s.by_id.lock().unwrap().len(), MAX_SESSIONS);
    }

    #[test]
    fn cross_site_requests_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(!cross_site(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(!cross_site(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(cross_site(&h));
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_site(&h));
    }
}
