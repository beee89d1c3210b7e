//! The API in-process (`tower::ServiceExt::oneshot`) against the real
//! Redis and PostgreSQL, each test in its own namespace and schema.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use eventbus::deadletter::{DeadLetterWriter, Failure};
use eventbus::{Catalog, Envelope, ErrorClass, Publisher, PublisherConfig};
use eventbus_testkit::{shared_redis_url, RedisServer, TestNamespace, TestSchema};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::auth::Tokens;
use super::{router, AppState, HttpOptions, PgState};

pub(super) const ADMIN: &str = "admin-token-for-tests-0001";
pub(super) const READ: &str = "read-token-for-tests-0001";

pub(super) struct Fixture {
    pub(super) ns: TestNamespace,
    pub(super) db: Option<TestSchema>,
    pub(super) state: AppState,
}

async fn fixture_on(url: &str, with_pg: bool) -> Fixture {
    let ns = TestNamespace::new(url, "http");
    let topology = ns.topology(4);
    let connector =
        eventbus::RedisConnector::new(ns.url(), eventbus::RedisOptions::default()).unwrap();
    let redis = connector.shared().await.unwrap();
    let publisher = Publisher::connect(&connector, topology.clone(), PublisherConfig::default())
        .await
        .unwrap();
    let db = if with_pg {
        Some(TestSchema::new("http").await)
    } else {
        None
    };
    let pg = db.as_ref().map(|db| PgState {
        pool: db.pool().clone(),
        schema: db.schema().clone(),
        outbox: eventbus::pg::Outbox::new(
            topology.clone(),
            eventbus::pg::OutboxConfig {
                schema: db.schema().clone(),
                ..Default::default()
            },
        )
        .unwrap(),
    });
    let state = AppState {
        redis,
        topology,
        publisher,
        catalog: Arc::new(Catalog::embedded().unwrap()),
        pg,
        metrics: super::metrics::prometheus(),
    };
    Fixture { ns, db, state }
}

pub(super) async fn fixture(with_pg: bool) -> Fixture {
    fixture_on(&shared_redis_url(), with_pg).await
}

impl Fixture {
    pub(super) fn app(&self) -> Router {
        self.app_with(HttpOptions {
            tokens: Tokens {
                admin: Some(ADMIN.into()),
                read: Some(READ.into()),
            },
            body_limit: 64 * 1024,
            ..HttpOptions::default()
        })
    }

    pub(super) fn app_with(&self, options: HttpOptions) -> Router {
        router(self.state.clone(), &options)
    }

    pub(super) async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, Value, axum::http::HeaderMap) {
        call(self.app(), method, uri, token, body).await
    }

    /// `POST uri` with the admin token and a JSON body.
    pub(super) async fn post(
        &self,
        uri: &str,
        body: &Value,
    ) -> (StatusCode, Value, axum::http::HeaderMap) {
        self.call(Method::POST, uri, Some(ADMIN), Some(body.to_string()))
            .await
    }

    pub(super) async fn outbox_rows(&self) -> i64 {
        let db = self.db.as_ref().unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            db.table("eventbus_outbox")
        )))
        .fetch_one(db.pool())
        .await
        .unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.ns.cleanup();
    }
}

async fn call(
    app: Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value, headers)
}

/// A valid event of the catalogue (its first example).
pub(super) fn valid_event() -> Value {
    let catalog = Catalog::embedded().unwrap();
    let t = &catalog.types()[0];
    let data = t.latest().examples()[0].clone();
    let key = catalog
        .partition_key_of(t.name(), &data)
        .unwrap()
        .to_owned();
    json!({"type": t.name(), "version": t.latest().version(), "key": key, "data": data})
}

async fn stream_entries(f: &Fixture) -> u64 {
    let topics = eventbus::admin::known_topics(&f.state.redis, &f.state.topology)
        .await
        .unwrap();
    eventbus::admin::partition_stats(&f.state.redis, &f.state.topology, &topics)
        .await
        .unwrap()
        .iter()
        .map(|p| p.length)
        .sum()
}

#[tokio::test]
async fn publishes_through_the_outbox_and_directly() {
    let f = fixture(true).await;
    let (s, body, headers) = f.post("/v1/events", &valid_event()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["via"], "outbox");
    assert!(headers.get("x-request-id").is_some());
    assert_eq!(f.outbox_rows().await, 1);

    let batch = json!({"events": [valid_event(), valid_event()]}).to_string();
    let (s, body, _) = f
        .call(
            Method::POST,
            "/v1/events?direct=true",
            Some(ADMIN),
            Some(batch),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 2);
    assert!(body["events"][0]["entry_id"].is_string());
    assert_eq!(stream_entries(&f).await, 2);
    assert_eq!(f.outbox_rows().await, 1);

    // Streams and groups see the events.
    let (s, body, _) = f.call(Method::GET, "/v1/streams", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK);
    let total: u64 = body["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["length"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 2);
    let (s, body, _) = f.call(Method::GET, "/v1/outbox", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["backlog"], 1);
}

#[tokio::test]
async fn bad_bodies_are_refused_and_nothing_is_written() {
    let f = fixture(true).await;
    let mut invalid = valid_event();
    invalid["data"] = json!({"nonsense": true});
    let cases = [
        (
            "{not json".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"type": "a.b"}).to_string(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"events": []}).to_string(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            invalid.to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event",
        ),
        (
            json!({"events": [valid_event(), invalid]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event",
        ),
        (
            "x".repeat(100 * 1024),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (body, status, code) in cases {
        for uri in ["/v1/events", "/v1/events?direct=true"] {
            let (s, res, _) = f
                .call(Method::POST, uri, Some(ADMIN), Some(body.clone()))
                .await;
            assert_eq!(s, status, "{uri} {res}");
            assert_eq!(res["error"]["code"], code, "{res}");
        }
    }
    // Schema errors carry their details: which event, which pointer.
    let mut invalid = valid_event();
    invalid["data"] = json!({"nonsense": true});
    let (_, res, _) = f
        .post("/v1/events", &json!({"events": [valid_event(), invalid]}))
        .await;
    assert_eq!(res["error"]["details"][0]["index"], 1, "{res}");
    assert!(!res["error"]["details"][0]["errors"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(f.outbox_rows().await, 0);
    assert_eq!(stream_entries(&f).await, 0);
    let (s, _, _) = f.post("/v1/events?direct=maybe", &valid_event()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// PostgreSQL cannot hold U+0000 in the outbox's text and jsonb columns:
/// that is the client's event, answered 422 (not 503), and nothing is
/// written; straight to Redis the same event is accepted (it is binary-safe).
#[tokio::test]
async fn nul_in_source_or_a_header_through_the_outbox_is_the_clients_mistake() {
    let f = fixture(true).await;
    let mut in_source = valid_event();
    in_source["source"] = json!("svc\u{0}");
    let mut in_header = valid_event();
    in_header["headers"] = json!({"h": "v\u{0}"});
    for event in [in_source, in_header] {
        let (s, res, _) = f.post("/v1/events", &event).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{res}");
        assert_eq!(res["error"]["code"], "invalid_event", "{res}");
        assert!(
            res["error"]["message"].as_str().unwrap().contains("U+0000"),
            "{res}"
        );
        let (s, res, _) = f.post("/v1/events?direct=true", &event).await;
        assert_eq!(s, StatusCode::CREATED, "{res}");
    }
    assert_eq!(f.outbox_rows().await, 0);
}

#[tokio::test]
async fn tokens_missing_wrong_and_read_only() {
    let f = fixture(false).await;
    let body = Some(valid_event().to_string());
    let (s, res, h) = f.call(Method::GET, "/v1/streams", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(res["error"]["code"], "unauthorized");
    assert_eq!(h["www-authenticate"], "Bearer");
    let (s, _, _) = f
        .call(
            Method::GET,
            "/v1/streams",
            Some("wrong-token-000000000000"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = f.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, res, _) = f
        .call(Method::POST, "/v1/events", Some(READ), body.clone())
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{res}");
    let (s, _, _) = f
        .call(
            Method::POST,
            "/v1/dlq/replay",
            Some(READ),
            Some("{}".into()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(stream_entries(&f).await, 0);
    // Health and readiness need no token.
    let (s, res, _) = f.call(Method::GET, "/health", None, None).await;
    assert_eq!((s, res["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, res, _) = f.call(Method::GET, "/ready", None, None).await;
    assert_eq!(s, StatusCode::OK, "{res}");
    // Without PostgreSQL, publishing goes straight to Redis.
    let (s, res, _) = f.call(Method::POST, "/v1/events", Some(ADMIN), body).await;
    assert_eq!(
        (s, res["via"].as_str()),
        (StatusCode::CREATED, Some("direct")),
        "{res}"
    );
    let (s, res, _) = f.call(Method::GET, "/v1/outbox", Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{res}");
    let (s, _, _) = f.call(Method::GET, "/v1/nothing", Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Publishes one valid event straight to Redis and creates group `billing`
/// on every partition of its topic.
async fn publish_direct_with_group(f: &Fixture) {
    let event = valid_event();
    let (s, _, _) = f.post("/v1/events?direct=true", &event).await;
    assert_eq!(s, StatusCode::CREATED);
    let topic = event["type"].as_str().unwrap().split('.').next().unwrap();
    let mut conn = f.state.redis.clone();
    for p in 0..f.state.topology.partitions() {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(f.state.topology.stream_key(topic, p))
            .arg("billing")
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn groups_schemas_and_openapi() {
    let f = fixture(false).await;
    publish_direct_with_group(&f).await;
    let (s, res, _) = f.call(Method::GET, "/v1/groups", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(res["groups"][0]["group"], "billing", "{res}");
    let (s, res, _) = f
        .call(Method::GET, "/v1/groups/billing", Some(READ), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(res["partitions"].as_array().is_some(), "{res}");
    let (s, _, _) = f
        .call(Method::GET, "/v1/groups/nobody", Some(READ), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, res, _) = f.call(Method::GET, "/v1/schemas", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK);
    let first = &res["types"][0];
    let uri = format!(
        "/v1/schemas/{}/{}",
        first["type"].as_str().unwrap(),
        first["latest"]
    );
    let (s, res, _) = f.call(Method::GET, &uri, Some(READ), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(res["schema"].is_object());
    let (s, _, _) = f
        .call(Method::GET, "/v1/schemas/nope.nope/1", Some(READ), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = f
        .call(Method::GET, "/v1/schemas/nope.nope/x", Some(READ), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (s, res, _) = f
        .call(Method::GET, "/v1/openapi.json", Some(READ), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(res["openapi"], "3.0.3");
}

/// The committed document and the router name the same routes.
#[test]
fn openapi_document_matches_the_routes() {
    let doc: Value = serde_json::from_str(super::openapi::DOCUMENT).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), p.clone()))
        })
        .collect();
    let mut routed: Vec<(String, String)> = super::route_list()
        .into_iter()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(
        documented, routed,
        "docs/openapi.json and the router differ"
    );
    let on_disk = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.json"
    ))
    .unwrap();
    assert_eq!(on_disk, super::openapi::DOCUMENT);
}

/// Writes a dead letter to the fixture's store (PostgreSQL, or without it
/// the records in Redis).
async fn dead_letter(f: &Fixture) -> uuid::Uuid {
    let writer = DeadLetterWriter::new(
        f.state.redis.clone(),
        &f.state.topology,
        f.db.as_ref()
            .map(|db| (db.pool().clone(), db.schema().clone())),
    );
    let v = valid_event();
    let envelope = Envelope::new(
        v["type"].as_str().unwrap(),
        v["key"].as_str().unwrap(),
        v["data"].clone(),
    );
    writer
        .record(&Failure {
            envelope,
            group: "billing".into(),
            consumer: "c1".into(),
            stream: f.state.topology.stream_key("work_order", 0),
            partition: 0,
            entry_id: "1-0".into(),
            attempts: 5,
            class: ErrorClass::Permanent,
            message: "boom".into(),
            first_failed_at: None,
            raw_fields: None,
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn dead_letters_list_show_replay_discard() {
    dead_letter_routes(true).await;
}

#[tokio::test]
async fn without_postgres_dead_letters_list_show_replay_discard() {
    dead_letter_routes(false).await;
}

async fn dead_letter_routes(with_pg: bool) {
    let f = fixture(with_pg).await;
    let a = dead_letter(&f).await;
    let b = dead_letter(&f).await;
    let (s, res, _) = f
        .call(
            Method::GET,
            "/v1/dlq?group=billing&limit=1",
            Some(READ),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{res}");
    assert_eq!(res["dead_letters"].as_array().unwrap().len(), 1);
    let (_, res, _) = f
        .call(
            Method::GET,
            "/v1/dlq?group=billing&limit=1&offset=1",
            Some(READ),
            None,
        )
        .await;
    assert_eq!(res["dead_letters"].as_array().unwrap().len(), 1);
    let (_, res, _) = f
        .call(Method::GET, "/v1/dlq?group=other", Some(READ), None)
        .await;
    assert!(res["dead_letters"].as_array().unwrap().is_empty());
    let (s, _, _) = f
        .call(Method::GET, "/v1/dlq?error_class=weird", Some(READ), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, res, _) = f
        .call(Method::GET, &format!("/v1/dlq/{a}"), Some(READ), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(res["dead_letter"]["group"], "billing");
    let (s, _, _) = f
        .call(
            Method::GET,
            &format!("/v1/dlq/{}", uuid::Uuid::now_v7()),
            Some(READ),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = f
        .call(Method::GET, "/v1/dlq/not-a-uuid", Some(READ), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (s, _, _) = f
        .call(
            Method::POST,
            "/v1/dlq/replay",
            Some(ADMIN),
            Some("{}".into()),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, res, _) = f
        .post(
            "/v1/dlq/replay",
            &json!({"group": "billing", "dry_run": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{res}");
    assert_eq!(
        (
            res["selected"].as_array().unwrap().len(),
            res["replayed"].as_u64()
        ),
        (2, Some(0))
    );
    let (s, res, _) = f
        .call(
            Method::POST,
            &format!("/v1/dlq/{b}/discard"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{res}");
    let (s, _, _) = f
        .call(
            Method::POST,
            &format!("/v1/dlq/{b}/discard"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, res, _) = f.post("/v1/dlq/replay", &json!({"ids": [a]})).await;
    assert_eq!(s, StatusCode::OK, "{res}");
    assert_eq!(res["replayed"], 1);
    let (_, res, _) = f
        .call(Method::GET, "/v1/dlq?status=new", Some(READ), None)
        .await;
    assert!(res["dead_letters"].as_array().unwrap().is_empty(), "{res}");
}

#[tokio::test]
async fn metrics_hold_the_named_series() {
    let f = fixture(true).await;
    let (s, _, _) = f.post("/v1/events", &valid_event()).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    publish_direct_with_group(&f).await;
    dead_letter(&f).await;
    // A consumer handles the direct event: consumed and handler duration.
    let topic = valid_event()["type"]
        .as_str()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    let mut config = eventbus::ConsumerConfig::new("metered", [topic]);
    config.mode = eventbus::ConsumerMode::Unordered;
    config.block = std::time::Duration::from_millis(100);
    let collector = eventbus_testkit::Collector::new();
    let connector =
        eventbus::RedisConnector::new(f.ns.url(), eventbus::RedisOptions::default()).unwrap();
    let consumer = eventbus::Consumer::new(
        connector,
        f.state.topology.clone(),
        config,
        collector.clone(),
    )
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(consumer.run(stop.clone()));
    assert!(
        collector
            .wait_for(std::time::Duration::from_secs(30), |d| !d.is_empty())
            .await
    );
    stop.cancel();
    running.await.unwrap().unwrap();
    super::metrics::refresh_once(&f.state).await.unwrap();
    let (s, text, _) = f.call(Method::GET, "/metrics", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK);
    let text = text.as_str().unwrap().to_owned();
    for series in [
        "eventbus_published_total",
        "eventbus_consumed_total",
        "eventbus_handler_duration_seconds_bucket",
        "eventbus_dead_letters_total",
        "eventbus_dlq_depth",
        "eventbus_outbox_backlog",
        "eventbus_outbox_oldest_age_seconds",
        "eventbus_relay_lag_seconds",
        "eventbus_group_lag",
        "eventbus_group_pending",
    ] {
        assert!(text.contains(series), "{series} missing from\n{text}");
    }
}

#[tokio::test]
async fn ready_follows_a_private_redis() {
    let mut server = RedisServer::start();
    let f = fixture_on(&server.url(), true).await;
    let (s, res, _) = f.call(Method::GET, "/ready", None, None).await;
    assert_eq!(s, StatusCode::OK, "{res}");
    server.kill();
    let (s, res, _) = f.call(Method::GET, "/ready", None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{res}");
    assert_eq!(res["checks"]["redis"], "unreachable");
    assert_eq!(res["checks"]["postgres"], "ok");
    // A request that needs Redis says so, without its internals.
    let (s, res, _) = f.call(Method::GET, "/v1/streams", Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{res}");
    assert_eq!(res["error"]["message"], "redis is unavailable");
    server.restart();
    let mut ready = false;
    for _ in 0..100 {
        let (s, _, _) = f.call(Method::GET, "/ready", None, None).await;
        if s == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "/ready did not come back after the restart");
}

#[tokio::test]
async fn ready_says_not_migrated() {
    let mut f = fixture(false).await;
    let db = TestSchema::new("http").await;
    let schema = TestSchema::unmigrated_name("http");
    f.state.pg = Some(PgState {
        pool: db.pool().clone(),
        schema: schema.clone(),
        outbox: eventbus::pg::Outbox::new(
            f.state.topology.clone(),
            eventbus::pg::OutboxConfig {
                schema,
                ..Default::default()
            },
        )
        .unwrap(),
    });
    let (s, res, _) = f.call(Method::GET, "/ready", None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res["checks"]["postgres"], "not migrated", "{res}");
}

#[tokio::test]
async fn cors_is_off_by_default_and_request_ids_are_kept() {
    let f = fixture(false).await;
    let req = Request::builder()
        .uri("/health")
        .header("origin", "https://evil.example")
        .header("x-request-id", "req-123")
        .body(Body::empty())
        .unwrap();
    let res = f.app().oneshot(req).await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    assert_eq!(res.headers()["x-request-id"], "req-123");
    let app = f.app_with(HttpOptions {
        cors_origins: vec!["https://ui.example".into()],
        body_limit: 1024,
        ..Default::default()
    });
    let req = Request::builder()
        .uri("/health")
        .header("origin", "https://ui.example")
        .body(Body::empty())
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://ui.example"
    );
}

/// What the dead-letter filters cannot hold: U+0000 (PostgreSQL refuses to
/// compare it; the Redis records are refused it alike) and times outside
/// the years 0000-9999. Both are the client's mistake: 400, never 503.
#[tokio::test]
async fn dead_letter_filters_with_nul_or_absurd_times_are_400() {
    for with_pg in [true, false] {
        let f = fixture(with_pg).await;
        dead_letter(&f).await;
        for query in [
            "group=a%00b",
            "type=%00",
            "key=k%00",
            "since=-100000-01-01T00:00:00Z",
            "since=%2B200000-01-01T00:00:00Z",
        ] {
            let uri = format!("/v1/dlq?{query}");
            let (s, res, _) = f.call(Method::GET, &uri, Some(READ), None).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "pg {with_pg} {uri}: {res}");
            assert_eq!(res["error"]["code"], "bad_request", "{res}");
        }
        for body in [
            json!({"group": "a\u{0}b"}),
            json!({"type": "\u{0}"}),
            json!({"key": "k\u{0}"}),
            json!({"since": "-100000-01-01T00:00:00Z"}),
            json!({"all": true, "to_group": "g\u{0}"}),
        ] {
            let (s, res, _) = f.post("/v1/dlq/replay", &body).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "pg {with_pg} {body}: {res}");
        }
        // The dead letter is still there, untouched.
        let (s, res, _) = f
            .call(Method::GET, "/v1/dlq?status=new", Some(READ), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{res}");
        assert_eq!(res["dead_letters"].as_array().unwrap().len(), 1, "{res}");
    }
}

/// A batch of invalid events as large as the body limit: the answer lists
/// the first `max_errors` errors (each message cut to a few hundred
/// characters) and counts them all, instead of growing with the batch.
#[tokio::test]
async fn a_large_invalid_batch_gets_a_capped_answer() {
    let f = fixture(false).await;
    let app = f.app_with(HttpOptions {
        tokens: admin_only(),
        max_errors: 10,
        ..HttpOptions::default()
    });
    let mut invalid = valid_event();
    invalid["data"] = json!({"nonsense": "x".repeat(1000), "more": ["y".repeat(1000)]});
    let mut unknown = valid_event();
    unknown["type"] = json!(format!("work_order.{}", "z".repeat(5000)));
    let mut events = vec![unknown];
    let one = invalid.to_string().len() + 1;
    events.extend(std::iter::repeat_n(invalid, 2 * 1024 * 1024 / one - 10));
    let body = json!({"events": events}).to_string();
    assert!(body.len() < 2 * 1024 * 1024);
    let n = events.len();
    let (s, res, _) = call(app, Method::POST, "/v1/events", Some(ADMIN), Some(body)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let error = &res["error"];
    assert_eq!(error["invalid_events"], n, "{error}");
    assert_eq!(error["truncated"], true);
    assert!(
        error["total_errors"].as_u64().unwrap() >= n as u64,
        "{error}"
    );
    let listed: usize = error["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["errors"].as_array().unwrap().len())
        .sum();
    assert_eq!(listed, 10, "{error}");
    assert_eq!(error["details"][0]["index"], 0);
    assert!(error["details"][0]["type"].as_str().unwrap().len() < 600);
    let size = res.to_string().len();
    assert!(size < 20_000, "a {size}-byte answer to a 2 MiB batch");
    assert_eq!(stream_entries(&f).await, 0);
}

/// Only the admin token.
fn admin_only() -> Tokens {
    Tokens {
        admin: Some(ADMIN.into()),
        read: None,
    }
}

/// A body that never ends, as a client that stops sending would leave it.
fn endless_body() -> Body {
    Body::from_stream(futures::stream::pending::<
        Result<axum::body::Bytes, std::io::Error>,
    >())
}

/// A declared length over the limit is refused before any of the body is
/// read (the body here never comes), and the connection is to be closed.
#[tokio::test]
async fn a_declared_length_over_the_limit_is_413_before_the_body() {
    let f = fixture(false).await;
    for (uri, token) in [
        ("/v1/events", Some(ADMIN)),
        ("/v1/events", None),
        ("/health", None),
    ] {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-length", "1000000000000");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let res = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            f.app().oneshot(req.body(endless_body()).unwrap()),
        )
        .await
        .expect("answered without waiting for the body")
        .unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "{uri}");
        assert_eq!(res.headers()["connection"], "close");
    }
}

/// A request whose body stops coming is answered 408 after the request
/// timeout, and the connection is to be closed.
#[tokio::test]
async fn a_stalled_request_is_answered_408_after_the_request_timeout() {
    let f = fixture(false).await;
    let app = f.app_with(HttpOptions {
        tokens: admin_only(),
        request_timeout: std::time::Duration::from_millis(300),
        ..HttpOptions::default()
    });
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/events")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(endless_body())
        .unwrap();
    let res = tokio::time::timeout(std::time::Duration::from_secs(10), app.oneshot(req))
        .await
        .expect("answered after the request timeout")
        .unwrap();
    assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(res.headers()["connection"], "close");
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
}

/// The scheme of `Authorization` is case-insensitive (RFC 9110).
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let f = fixture(false).await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let req = Request::builder()
            .uri("/v1/streams")
            .header("authorization", format!("{scheme} {READ}"))
            .body(Body::empty())
            .unwrap();
        let res = f.app().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{scheme}");
    }
}
