//! The OpenAPI document: hand-written in `docs/openapi.json`, served as is
//! at `/v1/openapi.json`. A test fails when it and the router drift apart.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, compiled in.
pub(crate) const DOCUMENT: &str = include_str!("../../../../docs/openapi.json");

/// `GET /v1/openapi.json`.
pub(crate) async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
