//! The handlers. Each returns JSON or an [`HttpError`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use eventbus::deadletter::{
    parse_error_class, DeadLetterFilter, DeadLetterStatus, DeadLetterStore, ReplayOptions,
};
use eventbus::Envelope;
use eventbus_server::events_body;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::{HttpError, HttpResult, Problems};
use super::limits::ErrorLimit;
use super::{AppState, PgState};

type AppRef = State<Arc<AppState>>;

/// Who the audit trail names for actions taken through the API.
const ACTOR: &str = "api";

/// How long a readiness probe waits for each service.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Query of `POST /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishQuery {
    #[serde(default)]
    direct: bool,
}

pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> HttpResult<Bytes> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::TooLarge
        } else {
            HttpError::BadRequest(r.body_text())
        }
    })
}

fn body_json(body: Result<Bytes, BytesRejection>) -> HttpResult<Value> {
    events_body::parse_json(&body_bytes(body)?).map_err(HttpError::BadRequest)
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> HttpResult<T> {
    q.map(|Query(t)| t)
        .map_err(|e| HttpError::BadRequest(e.body_text()))
}

/// `POST /v1/events`: one event, or `{"events": [...]}`. Every event is
/// checked against the catalogue first: one bad event and nothing is written.
pub(crate) async fn post_events(
    State(app): AppRef,
    Extension(ErrorLimit(max_errors)): Extension<ErrorLimit>,
    q: Result<Query<PublishQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> HttpResult<impl IntoResponse> {
    let q = query(q)?;
    let parsed = events_body::parse_events_at(&body_bytes(body)?).map_err(HttpError::BadRequest)?;
    let mut problems = Problems::new(max_errors);
    let mut dues = Vec::with_capacity(parsed.len());
    for (i, (e, at)) in parsed.iter().enumerate() {
        let due = at.as_deref().map(|at| {
            eventbus::schedule::parse_deliver_at(at).and_then(|t| {
                app.publisher
                    .check_deliver_at(t)
                    .map(|()| t)
                    .map_err(|e| e.to_string())
            })
        });
        match due {
            Some(Err(m)) => {
                problems.add(Some(i), &e.event_type, None, [("/deliver_at", &*m)]);
                continue;
            }
            Some(Ok(t)) => dues.push(Some(t)),
            None => dues.push(None),
        }
        match app.catalog.validate(e) {
            Err(errors) => problems.add_schema(Some(i), &errors),
            Ok(()) => {
                if let Err(err) = app.publisher.check(e) {
                    problems.add(Some(i), &e.event_type, None, [("", &*err.to_string())]);
                }
            }
        }
    }
    let events: Vec<Envelope> = parsed.into_iter().map(|(e, _)| e).collect();
    if dues.iter().all(Option::is_none) {
        dues.clear(); // the path without due times, as before
    }
    if !problems.is_empty() {
        return Err(HttpError::Invalid {
            message: format!(
                "{} of {} events are invalid; nothing was published",
                problems.events(),
                events.len()
            ),
            problems,
        });
    }
    let via = match (&app.pg, q.direct) {
        (Some(pg), false) => {
            enqueue(pg, &events, &dues).await?;
            "outbox"
        }
        _ => {
            let published = app.publisher.publish_batch_at(&events, &dues).await?;
            let out: Vec<Value> = events
                .iter()
                .zip(&published)
                .map(|(e, p)| {
                    let mut v = json!({"id": e.id, "type": e.event_type, "key": e.key, "partition": p.partition,
                           "stream": p.stream, "entry_id": p.entry_id});
                    if let Some(at) = p.deliver_at {
                        v["deliver_at"] = json!(at);
                    }
                    v
                })
                .collect();
            count_published(&events, "direct");
            return Ok((
                StatusCode::CREATED,
                Json(json!({"via": "direct", "events": out})),
            ));
        }
    };
    count_published(&events, via);
    let out: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut v = json!({"id": e.id, "type": e.event_type, "key": e.key, "partition": app.topology.partition_of(&e.key)});
            if let Some(at) = dues.get(i).copied().flatten() {
                v["deliver_at"] = json!(at);
            }
            v
        })
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"via": via, "events": out})),
    ))
}

fn count_published(events: &[Envelope], via: &'static str) {
    for e in events {
        ::metrics::counter!("eventbus_published_total", "type" => e.event_type.clone(), "via" => via)
            .increment(1);
    }
}

/// All events in one transaction: all or none.
async fn enqueue(
    pg: &PgState,
    events: &[Envelope],
    dues: &[Option<DateTime<Utc>>],
) -> HttpResult<()> {
    let mut tx = pg.pool.begin().await.map_err(eventbus::Error::from)?;
    for (i, chunk) in events.chunks(1000).enumerate() {
        if dues.is_empty() {
            pg.outbox.enqueue_batch(&mut *tx, chunk).await?;
        } else {
            let at = &dues[i * 1000..i * 1000 + chunk.len()];
            pg.outbox.enqueue_batch_at(&mut *tx, chunk, at).await?;
        }
    }
    tx.commit().await.map_err(eventbus::Error::from)?;
    Ok(())
}

async fn known_topics(app: &AppState) -> HttpResult<BTreeSet<String>> {
    Ok(eventbus::admin::known_topics(&app.redis, &app.topology).await?)
}

/// `GET /v1/streams`: length and groups of every partition stream.
pub(crate) async fn streams(State(app): AppRef) -> HttpResult<Json<Value>> {
    let topics = known_topics(&app).await?;
    let streams = eventbus::admin::partition_stats(&app.redis, &app.topology, &topics).await?;
    Ok(Json(
        json!({"namespace": app.topology.namespace(), "streams": streams}),
    ))
}

/// `GET /v1/groups`: every group's members, leases, pending and lag.
pub(crate) async fn groups(State(app): AppRef) -> HttpResult<Json<Value>> {
    let topics = known_topics(&app).await?;
    let groups = eventbus::admin::groups(&app.redis, &app.topology, &topics, None).await?;
    Ok(Json(
        json!({"namespace": app.topology.namespace(), "groups": groups}),
    ))
}

/// `GET /v1/groups/{group}`.
pub(crate) async fn group(State(app): AppRef, Path(name): Path<String>) -> HttpResult<Json<Value>> {
    let topics = known_topics(&app).await?;
    let mut groups =
        eventbus::admin::groups(&app.redis, &app.topology, &topics, Some(&name)).await?;
    // The view lists an asked-for group even when nothing knows it.
    match groups
        .pop()
        .filter(|g| !g.members.is_empty() || !g.partitions.is_empty())
    {
        Some(g) => Ok(Json(
            serde_json::to_value(g).map_err(|_| HttpError::Internal)?,
        )),
        None => Err(HttpError::NotFound(format!("no consumer group {name:?}"))),
    }
}

fn pg(app: &AppState) -> HttpResult<&PgState> {
    app.pg.as_ref().ok_or(HttpError::Unavailable(
        "postgres is not configured (DATABASE_URL)",
    ))
}

/// `GET /v1/outbox`: backlog per partition.
pub(crate) async fn outbox(State(app): AppRef) -> HttpResult<Json<Value>> {
    let pg = pg(&app)?;
    let partitions = eventbus::pg::outbox_status(&pg.pool, &pg.schema).await?;
    let backlog: i64 = partitions.iter().map(|p| p.backlog).sum();
    let oldest = partitions
        .iter()
        .filter_map(|p| p.oldest_age_seconds)
        .reduce(f64::max);
    Ok(Json(json!({"schema": pg.schema.name(), "backlog": backlog,
                   "oldest_age_seconds": oldest, "partitions": partitions})))
}

/// Filters shared by listing and replay.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DlqQuery {
    pub(crate) group: Option<String>,
    #[serde(rename = "type")]
    pub(crate) event_type: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) error_class: Option<String>,
    pub(crate) since: Option<DateTime<Utc>>,
    pub(crate) status: Option<String>,
    pub(crate) limit: Option<i64>,
    pub(crate) offset: Option<i64>,
}

impl DlqQuery {
    /// The store's filter, every field checked (400 naming the bad one).
    pub(crate) fn filter(&self) -> HttpResult<DeadLetterFilter> {
        let error_class = match &self.error_class {
            Some(c) => Some(parse_error_class(c).ok_or_else(|| {
                HttpError::BadRequest(format!(
                    "error_class {c:?} is not retryable, permanent, invalid or parked"
                ))
            })?),
            None => None,
        };
        let status = match &self.status {
            Some(s) => Some(DeadLetterStatus::parse(s).ok_or_else(|| {
                HttpError::BadRequest(format!("status {s:?} is not new, replayed or discarded"))
            })?),
            None => None,
        };
        if self.limit.is_some_and(|l| !(1..=10_000).contains(&l)) {
            return Err(HttpError::BadRequest(
                "limit must be between 1 and 10000".into(),
            ));
        }
        if self.offset.is_some_and(|o| o < 0) {
            return Err(HttpError::BadRequest("offset must not be negative".into()));
        }
        Ok(DeadLetterFilter {
            group: self.group.clone(),
            event_type: self.event_type.clone(),
            key: self.key.clone(),
            error_class,
            since: self.since,
            status,
            limit: self.limit,
            offset: self.offset,
            ..Default::default()
        })
    }
}

/// The PostgreSQL store when configured, else the records the consumers
/// keep in Redis beside `<namespace>:dead`.
/// The dead letters: in PostgreSQL when configured, else the Redis records.
pub(crate) fn store(app: &AppState) -> DeadLetterStore {
    match &app.pg {
        Some(pg) => DeadLetterStore::new(
            pg.pool.clone(),
            pg.schema.clone(),
            app.topology.clone(),
            app.redis.clone(),
        ),
        None => DeadLetterStore::in_redis(app.topology.clone(), app.redis.clone()),
    }
}

/// `GET /v1/dlq`: filters, `limit` (default 100) and `offset`.
pub(crate) async fn dlq_list(
    State(app): AppRef,
    q: Result<Query<DlqQuery>, QueryRejection>,
) -> HttpResult<Json<Value>> {
    let q = query(q)?;
    let filter = q.filter()?;
    let rows = store(&app).list(&filter).await?;
    Ok(Json(
        json!({"dead_letters": rows, "limit": filter.limit.unwrap_or(100), "offset": filter.offset.unwrap_or(0)}),
    ))
}

fn parse_id(id: &str) -> HttpResult<Uuid> {
    id.parse()
        .map_err(|_| HttpError::BadRequest(format!("{id:?} is not a dead-letter id (a UUID)")))
}

/// `GET /v1/dlq/{id}`: one dead letter with its history.
pub(crate) async fn dlq_show(
    State(app): AppRef,
    Path(id): Path<String>,
) -> HttpResult<Json<Value>> {
    let id = parse_id(&id)?;
    match store(&app).get(id).await? {
        Some((dl, history)) => Ok(Json(json!({"dead_letter": dl, "history": history}))),
        None => Err(HttpError::NotFound(format!("no dead letter with id {id}"))),
    }
}

/// The body of `POST /v1/dlq/replay`, as the CLI's flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayBody {
    #[serde(default)]
    ids: Vec<Uuid>,
    #[serde(default)]
    all: bool,
    group: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    key: Option<String>,
    error_class: Option<String>,
    since: Option<DateTime<Utc>>,
    #[serde(default)]
    dry_run: bool,
    rate: Option<f64>,
    to_group: Option<String>,
}

/// `POST /v1/dlq/replay`: ids, `all`, or filters; `dry_run` only reports.
pub(crate) async fn dlq_replay(
    State(app): AppRef,
    body: Result<Bytes, BytesRejection>,
) -> HttpResult<Json<Value>> {
    let body: ReplayBody = serde_json::from_value(body_json(body)?)
        .map_err(|e| HttpError::BadRequest(e.to_string()))?;
    let mut filter = DlqQuery {
        group: body.group,
        event_type: body.event_type,
        key: body.key,
        error_class: body.error_class,
        since: body.since,
        ..Default::default()
    }
    .filter()?;
    filter.ids = body.ids;
    if filter.is_empty() && !body.all {
        return Err(HttpError::BadRequest(
            "say which dead letters: ids, \"all\": true, or filters (group, type, key, error_class, since)".into(),
        ));
    }
    if body.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(HttpError::BadRequest(
            "rate must be a positive number of events per second".into(),
        ));
    }
    if body
        .to_group
        .as_deref()
        .is_some_and(|g| g.is_empty() || g.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(HttpError::BadRequest("to_group is not a group name".into()));
    }
    let report = store(&app)
        .replay(
            &filter,
            &ReplayOptions {
                dry_run: body.dry_run,
                rate_per_sec: body.rate,
                to_group: body.to_group,
                actor: ACTOR.to_owned(),
            },
        )
        .await?;
    Ok(Json(
        serde_json::to_value(report).map_err(|_| HttpError::Internal)?,
    ))
}

/// `POST /v1/dlq/{id}/discard`.
pub(crate) async fn dlq_discard(
    State(app): AppRef,
    Path(id): Path<String>,
) -> HttpResult<Json<Value>> {
    let id = parse_id(&id)?;
    let filter = DeadLetterFilter {
        ids: vec![id],
        ..Default::default()
    };
    let done = store(&app).discard(&filter, ACTOR, false).await?;
    if done.is_empty() {
        return Err(HttpError::NotFound(format!(
            "no new dead letter with id {id}"
        )));
    }
    Ok(Json(json!({"discarded": done})))
}

/// Query of `GET /v1/scheduled`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduledQuery {
    limit: Option<u32>,
}

/// `GET /v1/scheduled`: the events waiting for their due time, earliest
/// first, at most `limit` (1 to 10000, default 100), and how many wait in all.
pub(crate) async fn scheduled_list(
    State(app): AppRef,
    q: Result<Query<ScheduledQuery>, QueryRejection>,
) -> HttpResult<Json<Value>> {
    let limit = query(q)?.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(HttpError::BadRequest(format!(
            "limit must be between 1 and 10000, got {limit}"
        )));
    }
    let events = eventbus::schedule::list(&app.redis, &app.topology, limit as usize).await?;
    let total = eventbus::schedule::count(&app.redis, &app.topology).await?;
    Ok(Json(
        json!({"scheduled": events, "total": total, "limit": limit}),
    ))
}

/// `DELETE /v1/scheduled/{id}`: cancels a scheduled event; 404 if none
/// with this id waits (never scheduled, cancelled, or delivered already).
pub(crate) async fn scheduled_cancel(
    State(app): AppRef,
    Path(id): Path<String>,
) -> HttpResult<Json<Value>> {
    let id: Uuid = id
        .parse()
        .map_err(|_| HttpError::BadRequest(format!("{id:?} is not an event id (a UUID)")))?;
    match eventbus::schedule::cancel(&app.redis, &app.topology, &id.to_string()).await? {
        Some(stream) => Ok(Json(json!({"id": id, "cancelled": true, "stream": stream}))),
        None => Err(HttpError::NotFound(format!(
            "no scheduled event {id}: never scheduled, cancelled, or delivered already"
        ))),
    }
}

/// `GET /v1/schemas`: every event type and its versions.
pub(crate) async fn schemas(State(app): AppRef) -> Json<Value> {
    let types: Vec<Value> = app
        .catalog
        .types()
        .iter()
        .map(|t| {
            json!({"type": t.name(), "topic": t.topic(), "partition_key": t.partition_key(),
                   "description": t.description(),
                   "versions": t.versions().iter().map(eventbus::catalog::SchemaVersion::version).collect::<Vec<_>>(),
                   "latest": t.latest().version()})
        })
        .collect();
    Json(json!({"origin": app.catalog.origin(), "types": types}))
}

/// `GET /v1/schemas/{type}/{version}`: the JSON Schema and its examples.
pub(crate) async fn schema(
    State(app): AppRef,
    Path((event_type, version)): Path<(String, String)>,
) -> HttpResult<Json<Value>> {
    let v: u32 = version
        .trim_start_matches('v')
        .parse()
        .map_err(|_| HttpError::BadRequest(format!("{version:?} is not a schema version")))?;
    let s = app
        .catalog
        .schema(&event_type, v)
        .ok_or_else(|| HttpError::NotFound(format!("no schema for {event_type} version {v}")))?;
    Ok(Json(
        json!({"type": event_type, "version": v, "schema": s.schema(), "examples": s.examples()}),
    ))
}

/// `GET /health`: the process answers.
pub(crate) async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: Redis answers, and PostgreSQL (when configured) answers
/// with the eventbus tables in place. 503 otherwise, naming what is not.
pub(crate) async fn ready(State(app): AppRef) -> impl IntoResponse {
    let mut checks = serde_json::Map::new();
    let mut conn = app.redis.clone();
    let redis = tokio::time::timeout(
        PROBE_TIMEOUT,
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await;
    let redis_ok = matches!(redis, Ok(Ok(_)));
    checks.insert(
        "redis".into(),
        json!(if redis_ok { "ok" } else { "unreachable" }),
    );
    let mut ok = redis_ok;
    if let Some(pg) = &app.pg {
        let state = tokio::time::timeout(PROBE_TIMEOUT, async {
            let mut c = pg.pool.acquire().await.map_err(|_| "unreachable")?;
            match eventbus::pg::is_migrated(&mut c, &pg.schema).await {
                Ok(true) => Ok(()),
                Ok(false) => Err("not migrated"),
                Err(_) => Err("unreachable"),
            }
        })
        .await
        .unwrap_or(Err("unreachable"));
        ok &= state.is_ok();
        checks.insert("postgres".into(), json!(state.err().unwrap_or("ok")));
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"status": if ok { "ready" } else { "unready" }, "checks": checks})),
    )
}

/// The content type of `/metrics` (Prometheus text format).
pub(crate) const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(app): AppRef) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        app.metrics.render(),
    )
}

/// Any other path.
pub(crate) async fn not_found() -> HttpError {
    HttpError::NotFound("no such route".into())
}
