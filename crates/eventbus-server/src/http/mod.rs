//! The HTTP admin API of `eventbus serve` (axum).
//!
//! - [`routes`]: the handlers under `/v1`, plus `/health`, `/ready` and `/metrics`.
//! - [`error`]: [`error::HttpError`], the one error type, answered as JSON.
//! - [`auth`]: bearer tokens (admin, read-only), compared in constant time.
//! - [`metrics`]: the Prometheus recorder and the task refreshing gauges.
//! - [`openapi`]: the OpenAPI document (also `docs/openapi.json`).
//! - [`server`]: the HTTP/1.1 server under the router: header and idle
//!   timeouts, the connection limit that sheds idle connections first.
//! - [`limits`]: the request timeout and the declared-length check.
//! - [`ui`]: the operator console under `/ui` (HTML pages, its own session
//!   login instead of bearer tokens; docs/console.md).
//!
//! Layers, outermost first: request id (taken from `x-request-id` or made),
//! a span per request carrying that id (method and path only: never headers,
//! so tokens stay out of logs), the request timeout (408), a declared
//! `Content-Length` over the body limit (413 before any of the body is
//! read), CORS when origins are configured, the body limit (a body without
//! a declared length), then the token check on everything but `/health`
//! and `/ready`. The console's routes are outside the token check (they
//! check their session) and inside every other layer.

pub(crate) mod auth;
pub(crate) mod error;
pub(crate) mod limits;
pub(crate) mod metrics;
pub(crate) mod openapi;
pub(crate) mod routes;
pub(crate) mod server;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_scheduled;
pub(crate) mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Extension, Router};
use eventbus::pg::{DbSchema, Outbox};
use eventbus::RedisConn;
use eventbus::{Catalog, Publisher, Topology};
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tower_http::cors::CorsLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

/// PostgreSQL, when configured.
#[derive(Clone)]
pub(crate) struct PgState {
    pub(crate) pool: PgPool,
    pub(crate) schema: DbSchema,
    pub(crate) outbox: Outbox,
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) redis: RedisConn,
    pub(crate) topology: Topology,
    pub(crate) publisher: Publisher,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) pg: Option<PgState>,
    pub(crate) metrics: PrometheusHandle,
}

/// How the router and the server guard themselves (the defaults are below;
/// `config::serve` reads the variables that override them).
#[derive(Clone)]
pub(crate) struct HttpOptions {
    pub(crate) tokens: auth::Tokens,
    pub(crate) body_limit: usize,
    pub(crate) cors_origins: Vec<String>,
    /// Time for a request's head, from its first byte.
    pub(crate) header_timeout: Duration,
    /// Time from a request's head to its answer.
    pub(crate) request_timeout: Duration,
    /// Time a connection may stay without a request in progress.
    pub(crate) idle_timeout: Duration,
    /// Most connections at once (the server lowers it to fit the
    /// file-descriptor limit).
    pub(crate) max_connections: usize,
    /// Errors listed in a 422 answer.
    pub(crate) max_errors: usize,
}

/// Default listen address: loopback only.
pub(crate) const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// Default request body limit.
pub(crate) const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;
/// Default time for a request's head, from its first byte.
pub(crate) const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time from a request's head to its answer.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time a connection may stay without a request in progress.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default connection limit (before fitting it to the file-descriptor limit).
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default number of errors a 422 answer lists.
pub(crate) const DEFAULT_MAX_ERRORS: usize = 100;

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            tokens: auth::Tokens::default(),
            body_limit: DEFAULT_BODY_LIMIT,
            cors_origins: Vec::new(),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_errors: DEFAULT_MAX_ERRORS,
        }
    }
}

type Route = (&'static str, &'static str, MethodRouter<Arc<AppState>>);

/// The routes that need a token, as (method, path, handler): the router is
/// built from this list, and the OpenAPI test compares it with the document.
fn protected_routes() -> Vec<Route> {
    vec![
        ("post", "/v1/events", post(routes::post_events)),
        ("get", "/v1/streams", get(routes::streams)),
        ("get", "/v1/groups", get(routes::groups)),
        ("get", "/v1/groups/{group}", get(routes::group)),
        ("get", "/v1/outbox", get(routes::outbox)),
        ("get", "/v1/dlq", get(routes::dlq_list)),
        ("post", "/v1/dlq/replay", post(routes::dlq_replay)),
        ("get", "/v1/dlq/{id}", get(routes::dlq_show)),
        ("post", "/v1/dlq/{id}/discard", post(routes::dlq_discard)),
        ("get", "/v1/scheduled", get(routes::scheduled_list)),
        (
            "delete",
            "/v1/scheduled/{id}",
            delete(routes::scheduled_cancel),
        ),
        ("get", "/v1/schemas", get(routes::schemas)),
        ("get", "/v1/schemas/{type}/{version}", get(routes::schema)),
        ("get", "/v1/openapi.json", get(openapi::document)),
        ("get", "/metrics", get(routes::metrics)),
    ]
}

/// The routes open to anyone (probes).
fn open_routes() -> Vec<Route> {
    vec![
        ("get", "/health", get(routes::health)),
        ("get", "/ready", get(routes::ready)),
    ]
}

/// Every (method, path) the router serves.
#[cfg(test)]
pub(crate) fn route_list() -> Vec<(&'static str, &'static str)> {
    protected_routes()
        .into_iter()
        .chain(open_routes())
        .map(|(m, p, _)| (m, p))
        .collect()
}

/// The whole API.
pub(crate) fn router(state: AppState, options: &HttpOptions) -> Router {
    let mut protected = Router::new();
    for (_, path, handler) in protected_routes() {
        protected = protected.route(path, handler);
    }
    let mut open = Router::new();
    for (_, path, handler) in open_routes() {
        open = open.route(path, handler);
    }
    let protected = protected.route_layer(axum::middleware::from_fn_with_state(
        Arc::new(options.tokens.clone()),
        auth::require_token,
    ));
    let mut app = open
        .merge(protected)
        .merge(ui::router(options.tokens.clone()))
        .fallback(routes::not_found)
        .with_state(Arc::new(state))
        .layer(Extension(limits::ErrorLimit(options.max_errors)))
        .layer(DefaultBodyLimit::max(options.body_limit));
    if !options.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = options
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        app = app.layer(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                .allow_headers([
                    axum::http::header::AUTHORIZATION,
                    axum::http::header::CONTENT_TYPE,
                ]),
        );
    }
    let app = app
        .layer(axum::middleware::from_fn_with_state(
            options.body_limit,
            limits::refuse_declared_too_large,
        ))
        .layer(axum::middleware::from_fn_with_state(
            options.request_timeout,
            limits::request_timeout,
        ));
    let request_id = HeaderName::from_static("x-request-id");
    app.layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("http", request_id = %id, method = %req.method(), path = %req.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

pub(crate) use routes::store as dlq_store;
pub(crate) use server::serve;
