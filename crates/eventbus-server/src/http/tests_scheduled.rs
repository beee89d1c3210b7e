//! `deliver_at` in `POST /v1/events`, `GET /v1/scheduled` and
//! `DELETE /v1/scheduled/{id}` in-process, against the real Redis and
//! PostgreSQL: every bad input is refused (422 / 400 / 404).

use axum::http::{Method, StatusCode};
use chrono::Utc;
use serde_json::{json, Value};

use super::tests::{fixture, valid_event, ADMIN, READ};

fn due_in(seconds: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339()
}

fn with_due(at: &str) -> Value {
    let mut e = valid_event();
    e["deliver_at"] = json!(at);
    e
}

#[tokio::test]
async fn deliver_at_schedules_directly_and_through_the_outbox() {
    let f = fixture(true).await;
    let at = due_in(600);
    let (s, body, _) = f.post("/v1/events?direct=true", &with_due(&at)).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let published = &body["events"][0];
    assert_eq!(published["entry_id"], "", "{body}");
    assert!(published["deliver_at"].is_string(), "{body}");
    let id = published["id"].as_str().unwrap().to_owned();

    let (s, body, _) = f.post("/v1/events", &with_due(&at)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    assert!(body["events"][0]["deliver_at"].is_string(), "{body}");
    assert_eq!(f.outbox_rows().await, 1);
    let db = f.db.as_ref().unwrap();
    let (due,): (Option<chrono::DateTime<Utc>>,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT deliver_at FROM {}",
        db.table("eventbus_outbox")
    )))
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(
        due.is_some_and(|d| d > Utc::now()),
        "outbox deliver_at: {due:?}"
    );

    let (s, list, _) = f.call(Method::GET, "/v1/scheduled", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["scheduled"][0]["id"], id.as_str());
    assert_eq!(list["scheduled"][0]["envelope"]["id"], id.as_str());

    let uri = format!("/v1/scheduled/{id}");
    let (s, body, _) = f.call(Method::DELETE, &uri, Some(READ), None).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a read token cannot cancel: {body}"
    );
    let (s, body, _) = f.call(Method::DELETE, &uri, Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["cancelled"], true);
    let (s, body, _) = f.call(Method::DELETE, &uri, Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    assert!(body.to_string().contains("no scheduled event"), "{body}");
    let (s, list, _) = f.call(Method::GET, "/v1/scheduled", Some(READ), None).await;
    assert_eq!((s, list["total"].clone()), (StatusCode::OK, json!(0)));

    // A past time is delivered at once.
    let (s, body, _) = f
        .post("/v1/events?direct=true", &with_due("2000-01-01T00:00:00Z"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_ne!(body["events"][0]["entry_id"], "");
    assert!(body["events"][0].get("deliver_at").is_none(), "{body}");
}

#[tokio::test]
async fn bad_due_times_and_ids_are_refused() {
    let f = fixture(false).await;
    let far = due_in(31 * 86_400);
    for (at, needle) in [
        ("tomorrow", "RFC 3339"),
        ("2026-05-01", "RFC 3339"),
        ("", "RFC 3339"),
        (far.as_str(), "more than 30d ahead"),
    ] {
        let (s, body, _) = f.post("/v1/events?direct=true", &with_due(at)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{at}: {body}");
        assert!(body.to_string().contains(needle), "{at}: {body}");
        assert!(body.to_string().contains("/deliver_at"), "{at}: {body}");
    }
    // In a batch, one bad time refuses the batch and names the event.
    let batch = json!({"events": [with_due(&due_in(60)), with_due("soon")]});
    let (s, body, _) = f.post("/v1/events?direct=true", &batch).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string().contains("1 of 2 events are invalid"),
        "{body}"
    );
    // Not a string: a malformed body.
    let mut e = valid_event();
    e["deliver_at"] = json!(12);
    let (s, body, _) = f.post("/v1/events?direct=true", &e).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, list, _) = f.call(Method::GET, "/v1/scheduled", Some(READ), None).await;
    assert_eq!(
        (s, list["total"].clone()),
        (StatusCode::OK, json!(0)),
        "nothing scheduled"
    );

    for uri in [
        "/v1/scheduled?limit=0",
        "/v1/scheduled?limit=10001",
        "/v1/scheduled?limit=x",
        "/v1/scheduled?other=1",
    ] {
        let (s, body, _) = f.call(Method::GET, uri, Some(READ), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {body}");
    }
    let (s, body, _) = f
        .call(
            Method::DELETE,
            "/v1/scheduled/not-a-uuid",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("is not an event id"), "{body}");
    let (s, _, _) = f.call(Method::GET, "/v1/scheduled", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn metrics_show_the_scheduled_count_and_the_lateness_histogram() {
    let f = fixture(false).await;
    let at = (Utc::now() + chrono::Duration::milliseconds(100)).to_rfc3339();
    let (s, body, _) = f.post("/v1/events?direct=true", &with_due(&at)).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    super::metrics::refresh_once(&f.state).await.unwrap();
    let connector =
        eventbus::RedisConnector::new(f.ns.url(), eventbus::RedisOptions::default()).unwrap();
    let scheduler = eventbus::Scheduler::connect(
        &connector,
        f.state.topology.clone(),
        eventbus::SchedulerConfig::default(),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while scheduler.tick().await.unwrap() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "not moved");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (s, text, _) = f.call(Method::GET, "/metrics", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK);
    let text = text.as_str().unwrap().to_owned();
    for series in [
        "eventbus_scheduled_events",
        "eventbus_scheduled_lateness_seconds_bucket",
        "eventbus_scheduled_moved_total",
    ] {
        assert!(text.contains(series), "{series} missing from /metrics");
    }
}
