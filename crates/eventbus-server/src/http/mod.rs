//! The HTTP admin API of `eventbus serve` (axum).
//!
//! - [`routes`]: the handlers under `/v1`, plus `/health`, `/ready` and `/metrics`.
//! - [`error`]: [`error::HttpError`], the one error type, answered as JSON.
//! - [`auth`]: bearer tokens (admin, read-only), compared in constant time.
//! - [`metrics`]: the Prometheus recorder and the task refreshing gauges.
//! - [`openapi`]: the OpenAPI document (also `docs/openapi.json`).
//!
//! Layers, outermost first: request id (taken from `x-request-id` or made),
//! a span per request carrying that id (method and path only: never headers,
//! so tokens stay out of logs), CORS when origins are configured, the body
//! limit, then the token check on everything but `/health` and `/ready`.

pub(crate) mod auth;
pub(crate) mod error;
pub(crate) mod metrics;
pub(crate) mod openapi;
pub(crate) mod routes;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::routing::{get, post};
use axum::Router;
use eventbus::pg::{DbSchema, Outbox};
use eventbus::{Catalog, Publisher, Topology};
use metrics_exporter_prometheus::PrometheusHandle;
use redis::aio::ConnectionManager;
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
    pub(crate) redis: ConnectionManager,
    pub(crate) topology: Topology,
    pub(crate) publisher: Publisher,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) pg: Option<PgState>,
    pub(crate) metrics: PrometheusHandle,
}

/// How the router guards itself.
#[derive(Clone, Default)]
pub(crate) struct HttpOptions {
    pub(crate) tokens: auth::Tokens,
    pub(crate) body_limit: usize,
    pub(crate) cors_origins: Vec<String>,
}

/// Every route with the paths the OpenAPI document must describe.
#[cfg(test)]
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/events"),
    ("get", "/v1/streams"),
    ("get", "/v1/groups"),
    ("get", "/v1/groups/{group}"),
    ("get", "/v1/outbox"),
    ("get", "/v1/dlq"),
    ("get", "/v1/dlq/{id}"),
    ("post", "/v1/dlq/replay"),
    ("post", "/v1/dlq/{id}/discard"),
    ("get", "/v1/schemas"),
    ("get", "/v1/schemas/{type}/{version}"),
    ("get", "/v1/openapi.json"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
];

/// The whole API.
pub(crate) fn router(state: AppState, options: &HttpOptions) -> Router {
    let protected = Router::new()
        .route("/v1/events", post(routes::post_events))
        .route("/v1/streams", get(routes::streams))
        .route("/v1/groups", get(routes::groups))
        .route("/v1/groups/{group}", get(routes::group))
        .route("/v1/outbox", get(routes::outbox))
        .route("/v1/dlq", get(routes::dlq_list))
        .route("/v1/dlq/replay", post(routes::dlq_replay))
        .route("/v1/dlq/{id}", get(routes::dlq_show))
        .route("/v1/dlq/{id}/discard", post(routes::dlq_discard))
        .route("/v1/schemas", get(routes::schemas))
        .route("/v1/schemas/{type}/{version}", get(routes::schema))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/metrics", get(routes::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::new(options.tokens.clone()),
            auth::require_token,
        ));
    let mut app = Router::new()
        .route("/health", get(routes::health))
        .route("/ready", get(routes::ready))
        .merge(protected)
        .fallback(routes::not_found)
        .with_state(Arc::new(state))
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

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets
/// in-flight requests finish (axum's graceful shutdown: the listener closes,
/// open connections end after their current response).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
