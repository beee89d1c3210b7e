//! The HTTP push sink (`consume --http URL`): each event is POSTed to a
//! URL, so services in any language consume without a Redis client.
//!
//! The request: `POST URL` with the envelope as JSON (the same document
//! `--exec` gets on stdin), `Content-Type: application/json`, and headers
//! `Eventbus-Event-Id`, `Eventbus-Event-Type`, `Eventbus-Event-Key`,
//! `Eventbus-Group`, `Eventbus-Redelivered`, `Idempotency-Key` (the event
//! id) and the W3C `traceparent` (with `tracestate` and `baggage`): the
//! handler attempt's span's when tracing is on, else the event's own, plus the
//! extra headers ([`super::headers`]: secrets from a file or the
//! environment, never a flag).
//!
//! The answer decides:
//!
//! | answer | outcome |
//! |---|---|
//! | 2xx | done: the entry is acknowledged |
//! | 408, 429, 5xx | retryable; a `Retry-After` (seconds or HTTP date, at most 60 s) is waited out first |
//! | other 4xx | permanent failure |
//! | no answer within `--http-timeout`, connection errors, 1xx/3xx | retryable |
//!
//! Errors never show the URL (it may carry credentials).

use std::time::Duration;

use eventbus::{Delivery, HandlerError};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

use crate::error::{CliError, Result};

/// The longest `Retry-After` honoured; longer ones are cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Posts envelopes to one URL.
#[derive(Debug, Clone)]
pub(crate) struct HttpSink {
    client: reqwest::Client,
    url: url::Url,
    timeout: Duration,
    headers: HeaderMap,
}

/// What an answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Done,
    Retry { wait: Option<Duration> },
    Permanent,
}

impl HttpSink {
    /// A sink for `url` with a per-request timeout and extra headers.
    pub(crate) fn new(
        url: url::Url,
        timeout: Duration,
        extra: &[(String, String)],
    ) -> Result<Self> {
        let mut headers = HeaderMap::new();
        for (name, value) in extra {
            let secret = eventbus::is_secret_name(name);
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                CliError::Input(format!("HTTP header {name:?} is not a header name"))
            })?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                CliError::Input(format!(
                    "the value of HTTP header {name} is not a header value"
                ))
            })?;
            // Never shown by the client's debug output.
            value.set_sensitive(secret);
            headers.append(name, value);
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("eventbus/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout)
            .build()
            .map_err(|e| CliError::Input(format!("--http: cannot set up the HTTP client: {e}")))?;
        Ok(HttpSink {
            client,
            url,
            timeout,
            headers,
        })
    }

    /// POSTs one delivery and classifies the answer (see the module docs).
    pub(crate) async fn deliver(&self, d: &Delivery) -> std::result::Result<(), HandlerError> {
        let body = serde_json::to_vec(&d.envelope).expect("an envelope always serializes");
        let id = d.envelope.id.to_string();
        let mut req = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("eventbus-event-id", &id)
            .header("idempotency-key", &id)
            .header("eventbus-group", &d.group)
            .header("eventbus-redelivered", d.redelivered.to_string());
        // The trace context: the attempt's span's with tracing on, else the event's.
        let cx = eventbus::telemetry::context_for(&d.envelope).unwrap_or_default();
        let traceparent = Some(cx.traceparent).filter(|t| !t.is_empty());
        // Type and key were checked at publish, but a header value must not
        // carry control characters: leave out what cannot be sent.
        for (name, value) in [
            ("eventbus-event-type", Some(&d.envelope.event_type)),
            ("eventbus-event-key", Some(&d.envelope.key)),
            ("traceparent", traceparent.as_ref()),
            ("tracestate", cx.tracestate.as_ref()),
            ("baggage", cx.baggage.as_ref()),
        ] {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                req = req.header(name, v);
            }
        }
        let response = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(HandlerError::retryable(format!(
                    "POST timed out after {:?}",
                    self.timeout
                )))
            }
            Err(e) => {
                return Err(HandlerError::retryable(format!(
                    "POST failed: {}",
                    e.without_url()
                )))
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        // Read (and drop) the body so the connection can be reused.
        let _ = response.bytes().await;
        match classify(status, retry_after) {
            Verdict::Done => Ok(()),
            Verdict::Permanent => Err(HandlerError::permanent(format!(
                "POST answered {status} (permanent)"
            ))),
            Verdict::Retry { wait } => {
                if let Some(wait) = wait {
                    tokio::time::sleep(wait).await;
                }
                Err(HandlerError::retryable(match wait {
                    Some(w) => {
                        format!("POST answered {status}; retrying after {w:?} (Retry-After)")
                    }
                    None => format!("POST answered {status}; retrying"),
                }))
            }
        }
    }
}

fn classify(status: StatusCode, retry_after: Option<Duration>) -> Verdict {
    if status.is_success() {
        Verdict::Done
    } else if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Verdict::Retry {
            wait: retry_after.map(|w| w.min(MAX_RETRY_AFTER)),
        }
    } else if status.is_client_error() {
        Verdict::Permanent
    } else {
        Verdict::Retry { wait: None }
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3). A date
/// in the past means no wait.
fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use eventbus::{Envelope, ErrorClass};
    use eventbus_testkit::{HttpTestServer, Reply};

    use super::*;

    fn delivery() -> Delivery {
        let mut envelope = Envelope::new("work_item.created", "wi-1", serde_json::json!({"n": 1}));
        envelope.traceparent =
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        Delivery {
            envelope,
            stream: "ns:{work_item:0}".into(),
            topic: "work_item".into(),
            partition: 0,
            entry_id: "1-0".into(),
            group: "g".into(),
            consumer: "c".into(),
            redelivered: false,
        }
    }

    fn sink(server: &HttpTestServer, timeout: Duration) -> HttpSink {
        let url = url::Url::parse(&format!("{}/hook", server.url())).unwrap();
        HttpSink::new(
            url,
            timeout,
            &[("Authorization".into(), "Bearer t0ken".into())],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn success_posts_the_envelope_with_its_headers() {
        let server = HttpTestServer::start(|_, _| Reply::status(204)).await;
        let d = delivery();
        sink(&server, Duration::from_secs(5))
            .deliver(&d)
            .await
            .unwrap();
        let req = &server.requests()[0];
        assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/hook"));
        let h = &req.headers;
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["eventbus-event-id"], d.envelope.id.to_string());
        assert_eq!(h["idempotency-key"], d.envelope.id.to_string());
        assert_eq!(h["eventbus-event-type"], "work_item.created");
        assert_eq!(h["eventbus-event-key"], "wi-1");
        assert_eq!(h["traceparent"], d.envelope.traceparent.clone().unwrap());
        assert_eq!(h["authorization"], "Bearer t0ken");
        let body: Envelope = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body, d.envelope);
    }

    #[tokio::test]
    async fn client_errors_are_permanent_except_408_and_429() {
        for (status, class) in [
            (400, ErrorClass::Permanent),
            (404, ErrorClass::Permanent),
            (422, ErrorClass::Permanent),
            (408, ErrorClass::Retryable),
            (429, ErrorClass::Retryable),
            (500, ErrorClass::Retryable),
            (503, ErrorClass::Retryable),
        ] {
            let server = HttpTestServer::start(move |_, _| Reply::status(status)).await;
            let e = sink(&server, Duration::from_secs(5))
                .deliver(&delivery())
                .await
                .unwrap_err();
            assert_eq!(e.class, class, "{status}: {}", e.message);
            assert!(e.message.contains(&status.to_string()), "{}", e.message);
        }
    }

    #[tokio::test]
    async fn retry_after_is_waited_out() {
        let server =
            HttpTestServer::start(|_, _| Reply::status(429).header("Retry-After", "1")).await;
        let started = Instant::now();
        let e = sink(&server, Duration::from_secs(5))
            .deliver(&delivery())
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Retryable);
        assert!(started.elapsed() >= Duration::from_secs(1), "did not wait");
        assert!(e.message.contains("Retry-After"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_slow_answer_is_a_retryable_timeout() {
        let server =
            HttpTestServer::start(|_, _| Reply::status(200).after(Duration::from_secs(5))).await;
        let e = sink(&server, Duration::from_millis(300))
            .deliver(&delivery())
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Retryable);
        assert!(e.message.contains("timed out"), "{}", e.message);
    }

    #[tokio::test]
    async fn connection_errors_are_retryable_and_hide_the_url() {
        let url = url::Url::parse("http://user:s3cret@127.0.0.1:9/hook").unwrap();
        let e = HttpSink::new(url, Duration::from_secs(2), &[])
            .unwrap()
            .deliver(&delivery())
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Retryable);
        assert!(!e.message.contains("s3cret"), "{}", e.message);
    }

    #[test]
    fn retry_after_forms() {
        let now = chrono::DateTime::parse_from_rfc2822("Sun, 06 Nov 1994 08:49:37 GMT")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            classify(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(Duration::from_secs(3600))
            ),
            Verdict::Retry {
                wait: Some(MAX_RETRY_AFTER)
            }
        );
        assert_eq!(
            classify(StatusCode::MOVED_PERMANENTLY, None),
            Verdict::Retry { wait: None }
        );
    }
}
