//! The dead-letter alerter against a local webhook: fires once per crossing,
//! resolves once, retries a failed post, and works from PostgreSQL or Redis.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus::alert::{AlertConfig, Alerter};
use eventbus::deadletter::{DeadLetterFilter, DeadLetterStore, DeadLetterWriter, Failure};
use eventbus::{ErrorClass, RedisConnector, RedisOptions};
use eventbus_testkit::conformance::full_event;
use eventbus_testkit::{shared_redis_url, TestNamespace, TestSchema};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tiny HTTP server recording JSON bodies; answers `status` (shared, changeable).
async fn webhook() -> (String, Arc<Mutex<Vec<serde_json::Value>>>, Arc<Mutex<u16>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let status = Arc::new(Mutex::new(200u16));
    let (b, st) = (bodies.clone(), status.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (b, st) = (b.clone(), st.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            let body = &buf[end + 4..end + 4 + len];
                            let code = *st.lock().unwrap();
                            if code == 200 {
                                b.lock()
                                    .unwrap()
                                    .push(serde_json::from_slice(body).unwrap());
                            }
                            let reply = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                            let _ = sock.write_all(reply.as_bytes()).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, bodies, status)
}

/// Checked every 50 ms, posting to `url`.
fn config(
    url: String,
    depth_threshold: Option<u64>,
    rate_threshold: Option<u64>,
    ns: &TestNamespace,
) -> AlertConfig {
    AlertConfig {
        webhook_url: url,
        depth_threshold,
        rate_threshold,
        interval: Duration::from_millis(50),
        namespace: ns.name().into(),
    }
}

fn failure(i: usize) -> Failure {
    Failure {
        envelope: full_event(i),
        group: "g".into(),
        consumer: "c".into(),
        stream: "s".into(),
        partition: 0,
        entry_id: "1-0".into(),
        attempts: 5,
        class: ErrorClass::Permanent,
        message: "boom".into(),
        first_failed_at: None,
        raw_fields: None,
    }
}

#[tokio::test]
async fn depth_alert_fires_once_and_resolves_once() {
    let ns = TestNamespace::new(shared_redis_url(), "alert-pg");
    let db = TestSchema::new("alertpg").await;
    let redis = RedisConnector::new(ns.url(), RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let topology = ns.topology(2);
    let writer = DeadLetterWriter::new(
        redis.clone(),
        &topology,
        Some((db.pool().clone(), db.schema().clone())),
    );
    let store = DeadLetterStore::new(db.pool().clone(), db.schema().clone(), topology, redis);
    let (url, bodies, status) = webhook().await;
    let config = config(url, Some(3), None, &ns);
    let mut alerter = Alerter::new(config, store.clone()).unwrap();

    for i in 0..2 {
        writer.record(&failure(i)).await.unwrap();
    }
    assert!(
        alerter.check().await.unwrap().is_empty(),
        "below the threshold"
    );
    writer.record(&failure(2)).await.unwrap();
    // the webhook fails first: nothing counts as sent, the next check retries
    *status.lock().unwrap() = 500;
    assert!(alerter.check().await.is_err());
    *status.lock().unwrap() = 200;
    let sent = alerter.check().await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].alert, sent[0].status, sent[0].value),
        ("dlq_depth", "firing", 3)
    );
    for i in 3..6 {
        writer.record(&failure(i)).await.unwrap();
        assert!(
            alerter.check().await.unwrap().is_empty(),
            "fired twice for one crossing"
        );
    }
    store
        .discard(&DeadLetterFilter::default(), "test", false)
        .await
        .unwrap();
    let sent = alerter.check().await.unwrap();
    assert_eq!((sent.len(), sent[0].status), (1, "resolved"));
    assert!(alerter.check().await.unwrap().is_empty());

    let got = bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["status"], "firing");
    assert!(got[0]["text"].as_str().unwrap().contains("3 dead letters"));
    assert_eq!(got[1]["status"], "resolved");
}

#[tokio::test]
async fn rate_alert_from_the_redis_records() {
    let ns = TestNamespace::new(shared_redis_url(), "alert-redis");
    let redis = RedisConnector::new(ns.url(), RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let topology = ns.topology(2);
    let writer = DeadLetterWriter::new(redis.clone(), &topology, None);
    let (url, bodies, _) = webhook().await;
    let config = config(url, None, Some(5), &ns);
    let store = DeadLetterStore::in_redis(topology.clone(), redis.clone());
    let mut alerter = Alerter::new(config, store.clone()).unwrap();
    for i in 0..4 {
        writer.record(&failure(i)).await.unwrap();
    }
    assert!(alerter.check().await.unwrap().is_empty());
    writer.record(&failure(4)).await.unwrap();
    let sent = alerter.check().await.unwrap();
    assert_eq!(
        (sent[0].alert, sent[0].status, sent[0].value),
        ("dlq_rate", "firing", 5)
    );
    // the rate falls once the records are purged
    assert_eq!(store.purge(Duration::ZERO, false).await.unwrap(), 5);
    let sent = alerter.check().await.unwrap();
    assert_eq!(sent[0].status, "resolved");
    assert_eq!(bodies.lock().unwrap().len(), 2);
}

/// Without PostgreSQL the depth is the records waiting (status `new`), not
/// the feed's length: discarding them resolves the alert.
#[tokio::test]
async fn depth_alert_from_the_redis_records() {
    let ns = TestNamespace::new(shared_redis_url(), "alert-redis-depth");
    let redis = RedisConnector::new(ns.url(), RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let topology = ns.topology(2);
    let writer = DeadLetterWriter::new(redis.clone(), &topology, None);
    let store = DeadLetterStore::in_redis(topology.clone(), redis.clone());
    let (url, bodies, _) = webhook().await;
    let config = config(url, Some(3), None, &ns);
    let mut alerter = Alerter::new(config, store.clone()).unwrap();
    for i in 0..3 {
        writer.record(&failure(i)).await.unwrap();
    }
    let sent = alerter.check().await.unwrap();
    assert_eq!(
        (sent[0].alert, sent[0].status, sent[0].value),
        ("dlq_depth", "firing", 3)
    );
    let all = DeadLetterFilter {
        group: Some("g".into()),
        ..Default::default()
    };
    assert_eq!(store.discard(&all, "test", false).await.unwrap().len(), 3);
    let sent = alerter.check().await.unwrap();
    assert_eq!((sent[0].status, sent[0].value), ("resolved", 0));
    assert_eq!(bodies.lock().unwrap().len(), 2);
}

#[test]
fn bad_alert_configs_are_refused() {
    let base = AlertConfig {
        webhook_url: "http://127.0.0.1:1/x".into(),
        depth_threshold: Some(1),
        rate_threshold: None,
        interval: Duration::from_secs(1),
        namespace: "ns".into(),
    };
    assert!(base.validate().is_ok());
    for bad in [
        AlertConfig {
            webhook_url: "not a url".into(),
            ..base.clone()
        },
        AlertConfig {
            webhook_url: "ftp://x/y".into(),
            ..base.clone()
        },
        AlertConfig {
            depth_threshold: None,
            ..base.clone()
        },
        AlertConfig {
            interval: Duration::ZERO,
            ..base.clone()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}
