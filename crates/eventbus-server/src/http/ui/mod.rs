//! The operator console: server-rendered HTML pages under `/ui`, on the
//! listener of `eventbus serve`, behind the same HTTP limits as the API
//! (body size, timeouts, connection limit). docs/console.md describes the
//! pages and the security model.
//!
//! - [`session`]: login with a token, the session cookie, CSRF tokens,
//!   the [`session::Viewer`] every page extracts.
//! - [`html`]: escaping, numbers with units, the page frame.
//! - [`form`]: form bodies and query strings; [`error`]: error pages.
//! - Pages: [`overview`] (`/ui`), [`groups`], [`dlq`] (dead letters) with
//!   [`replay`] (replays running in the background, their progress),
//!   [`events`] (stream pages, live tail, find by id), [`schemas`].
//!
//! Every asset is compiled in (`assets/`): one stylesheet and one small
//! script, which refreshes the regions marked `data-live` every 2 s in
//! place. No page needs the script to work.
//!
//! The pages read through the same functions as the JSON API
//! (`eventbus::admin`, the dead-letter store of `http::routes`, the
//! catalogue).

mod dlq;
mod error;
mod events;
mod form;
mod groups;
mod html;
mod overview;
mod replay;
mod schemas;
mod session;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::{Path, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};

use super::auth::Tokens;
use super::AppState;

/// What the console keeps between requests: the sessions and the replays.
pub(crate) struct Console {
    tokens: Tokens,
    sessions: session::Sessions,
    replays: replay::Replays,
}

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
const ICON: &str = include_str!("assets/favicon.svg");

/// FNV-1a of the assets: their URLs change when they do (cache busting).
const ASSET_VERSION: u64 = {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let (css, js) = (CSS.as_bytes(), JS.as_bytes());
    let mut i = 0;
    while i < css.len() + js.len() {
        let b = if i < css.len() {
            css[i]
        } else {
            js[i - css.len()]
        };
        hash = (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
};

/// The console's routes (merged into the API's router, outside its token
/// check: every page checks its session instead).
pub(crate) fn router(tokens: Tokens) -> Router<Arc<AppState>> {
    let console = Arc::new(Console {
        tokens,
        sessions: session::Sessions::default(),
        replays: replay::Replays::default(),
    });
    Router::new()
        .route("/ui", get(overview::page))
        .route("/ui/", get(overview::page))
        .route("/ui/login", post(session::login).get(to_overview))
        .route("/ui/logout", post(session::logout))
        .route("/ui/groups", get(groups::list))
        .route("/ui/groups/{group}", get(groups::show))
        .route("/ui/dlq", get(dlq::list))
        .route("/ui/dlq/preview", get(dlq::preview))
        .route("/ui/dlq/replay", post(replay::start))
        .route("/ui/dlq/discard", post(dlq::discard))
        .route("/ui/dlq/replays/{replay}", get(replay::show))
        .route("/ui/dlq/{id}", get(dlq::show))
        .route("/ui/events", get(events::page))
        .route("/ui/events/tail", get(events::tail))
        .route("/ui/schemas", get(schemas::list))
        .route("/ui/schemas/{type}", get(schemas::show))
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/{*rest}", get(not_found))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            session::resolve,
        ))
        .layer(Extension(console))
        .layer(axum::middleware::from_fn(security_headers))
}

async fn to_overview() -> Redirect {
    Redirect::to("/ui")
}

async fn not_found(_: session::Viewer) -> error::UiError {
    error::UiError::NotFound("There is no such console page.".into())
}

/// `GET /ui/assets/{file}`: the stylesheet, the script and the icon (no session
/// needed: nothing in them is secret).
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        "favicon.svg" => (ICON, "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

/// Headers on every console answer: scripts and styles from this origin
/// only (no inline script, so escaped data can never run), no framing, no
/// referrer to other sites, no caching of pages (they hold live data).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (name, value) in set {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
