//! Traces and metrics of the binary: `publish` continues the caller's
//! trace, `consume --exec` / `--http` attempts are CONSUMER spans whose
//! context reaches the command (`TRACEPARENT`) and the endpoint
//! (`traceparent`), all exported to an in-process OTLP/HTTP receiver;
//! with the sampler off the context still propagates; `consume` and
//! `relay` serve `/metrics`; bad settings are refused.

#[allow(dead_code)] // each test file uses some of the helpers
mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eventbus_testkit::{
    HttpTestServer, OtlpReceiver, ReceivedSpan, Reply, TestNamespace, TestSchema,
};
use serde_json::json;

use common::*;

/// The caller's context, as a service would pass it to `publish`.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

fn traced(mut c: Command, receiver: &OtlpReceiver, service: &str, sampler: &str) -> Command {
    c.env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_SERVICE_NAME", service)
        .env("OTEL_TRACES_SAMPLER", sampler)
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test");
    c
}

/// Publishes one event of `key` in the caller's context; its entry's `traceparent`.
fn publish_in_callers_trace(ns: &TestNamespace, receiver: &OtlpReceiver, key: &str, sampler: &str) {
    let line = json!({"type": "work_item.progressed", "key": key, "data": {"seq": 1},
                      "traceparent": format!("00-{TRACE}-{CALLER}-01")})
    .to_string();
    let cmd = traced(
        eventbus(ns, &["publish", "--no-validate", "--batch", "-"]),
        receiver,
        "publisher",
        sampler,
    );
    let out = run(cmd, Some(&line));
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// `consume` of one event, its first attempt failing, then exiting.
fn consume_one(
    ns: &TestNamespace,
    receiver: &OtlpReceiver,
    service: &str,
    sampler: &str,
    handler: &[&str],
) {
    let mut args = consume_unordered_args("g", 1);
    args.extend(["--retry-schedule", "100ms", "--topics", "work_item"].map(str::to_owned));
    args.extend(handler.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(
        traced(eventbus(ns, &args), receiver, service, sampler),
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

fn of(spans: &[ReceivedSpan], service: &str, kind: &str) -> Vec<ReceivedSpan> {
    let mut v: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.service == service && s.kind == kind && s.trace_id == TRACE)
        .cloned()
        .collect();
    v.sort_by_key(|s| {
        s.attr("messaging.eventbus.message.delivery_count")
            .map(str::to_owned)
    });
    v
}

/// The producer span of `publish` under the caller's, and two attempts under it;
/// returns the ids of the attempts' spans and their descendants.
fn check_trace(receiver: &OtlpReceiver, service: &str) -> HashSet<String> {
    let spans = receiver.spans();
    let producers = of(&spans, "publisher", "producer");
    assert_eq!(producers.len(), 1, "{spans:#?}");
    let producer = &producers[0];
    assert_eq!(producer.parent_span_id, CALLER);
    assert_eq!(producer.attr("messaging.operation.type"), Some("send"));
    let attempts = of(&spans, service, "consumer");
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    for (n, a) in attempts.iter().enumerate() {
        assert_eq!(a.parent_span_id, producer.span_id);
        assert_eq!(a.attr("messaging.system"), Some("eventbus"));
        assert_eq!(a.attr("messaging.consumer.group.name"), Some("g"));
        assert_eq!(
            a.attr("messaging.eventbus.message.delivery_count"),
            Some((n + 1).to_string().as_str())
        );
        assert!(a
            .attr("messaging.destination.name")
            .is_some_and(|d| d.contains("work_item")));
        assert_eq!(
            a.attr("messaging.message.id"),
            producer.attr("messaging.message.id")
        );
    }
    assert!(
        attempts[0].events.iter().any(|(name, _)| name == "retry"),
        "{:#?}",
        attempts[0]
    );
    let mut ids: HashSet<String> = attempts.iter().map(|a| a.span_id.clone()).collect();
    for s in &spans {
        if ids.contains(&s.parent_span_id) {
            ids.insert(s.span_id.clone());
        }
    }
    ids
}

/// Publishes an event in the caller's trace and consumes it with an
/// `--exec` command that fails its first attempt; the `TRACEPARENT` each
/// attempt's command got.
fn exec_in_callers_trace(receiver: &OtlpReceiver, service: &str, sampler: &str) -> Vec<String> {
    let ns = namespace();
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("traceparent");
    let mark = dir.path().join("tried");
    publish_in_callers_trace(&ns, receiver, "k-exec", sampler);
    let script = format!(
        r#"echo "$TRACEPARENT" >> {seen}; test -e {mark} || {{ touch {mark}; exit 1; }}"#,
        seen = seen.display(),
        mark = mark.display()
    );
    consume_one(&ns, receiver, service, sampler, &["--exec", &script]);
    read_lines(&seen)
}

/// The span id of a `traceparent` in the caller's trace.
fn span_of(traceparent: &str) -> String {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[1], TRACE, "{traceparent}");
    parts[2].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_handlers_get_the_attempts_context_in_one_trace() {
    let receiver = OtlpReceiver::start().await;
    let lines = exec_in_callers_trace(&receiver, "exec-consumer", "always_on");
    // Both processes flushed before exiting.
    let ids = check_trace(&receiver, "exec-consumer");
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        assert!(
            ids.contains(&span_of(l)),
            "{l} is not an attempt's span: {ids:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_handlers_get_the_attempts_context_in_one_trace() {
    let ns = namespace();
    let receiver = OtlpReceiver::start().await;
    let server = HttpTestServer::start(|_, i| Reply::status(if i == 0 { 500 } else { 200 })).await;
    publish_in_callers_trace(&ns, &receiver, "k-http", "always_on");
    let url = format!("{}/hook", server.url());
    consume_one(
        &ns,
        &receiver,
        "http-consumer",
        "always_on",
        &["--http", &url],
    );
    let ids = check_trace(&receiver, "http-consumer");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert!(
            ids.contains(&span_of(&r.headers["traceparent"])),
            "{:?}",
            r.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sampler_off_the_context_still_propagates() {
    let receiver = OtlpReceiver::start().await;
    let lines = exec_in_callers_trace(&receiver, "off-consumer", "always_off");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let ids: HashSet<String> = lines.iter().map(|l| span_of(l)).collect();
    assert_eq!(
        ids.len(),
        2,
        "each attempt has a span of its own: {lines:?}"
    );
    assert!(!ids.contains(CALLER), "{lines:?}");
    for l in &lines {
        assert!(l.ends_with("-00"), "unsampled: {l}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.spans().is_empty(), "{:#?}", receiver.spans());
}

/// A free local port (bound, then released).
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("eventbus starts")
}

/// GETs `/metrics` until its text holds every series of `names`.
async fn metrics_hold(addr: &str, names: &[&str]) -> String {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("http://{addr}/metrics")).send().await {
            assert_eq!(r.status(), 200);
            let text = r.text().await.unwrap();
            if names.iter().all(|n| text.contains(n)) {
                return text;
            }
            assert!(Instant::now() < deadline, "missing series in {text}");
        }
        assert!(Instant::now() < deadline, "no /metrics on {addr}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `publish` of one event, with `extra` flags; checks it succeeds.
fn publish_one(mut cmd: Command, extra: &[&str]) {
    cmd.args(["publish", "--no-validate", "--type", "work_item.progressed"])
        .args(["--key", "k", "--data", "{}"])
        .args(extra);
    let out = run(cmd, None);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = wait_or_kill(&mut child, HANG);
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_and_relay_serve_metrics() {
    let ns = namespace();
    let addr = free_addr();
    let consumer = spawn(eventbus(
        &ns,
        &[
            "consume",
            "--group",
            "g",
            "--unordered",
            "--no-validate",
            "--topics",
            "work_item",
            "--block",
            "200ms",
            "--exec",
            "true",
            "--metrics-addr",
            &addr,
        ],
    ));
    publish_one(eventbus(&ns, &[]), &[]);
    metrics_hold(
        &addr,
        &[
            "eventbus_consumed_total",
            "eventbus_handler_duration_seconds",
            "eventbus_group_pending",
        ],
    )
    .await;
    stop(consumer);

    let db = TestSchema::new("relaymetrics").await;
    let addr = free_addr();
    let mut cmd = eventbus_pg(
        &ns,
        &eventbus_testkit::shared_database_url(),
        db.schema().name(),
        16,
    );
    cmd.args(["relay"]).env("EVENT_BUS_METRICS_ADDR", &addr);
    let relay = spawn(cmd);
    let publish = eventbus_pg(
        &ns,
        &eventbus_testkit::shared_database_url(),
        db.schema().name(),
        16,
    );
    publish_one(publish, &["--via-outbox"]);
    metrics_hold(
        &addr,
        &[
            "eventbus_relay_published_total",
            "eventbus_relay_lag_seconds",
        ],
    )
    .await;
    stop(relay);
}

/// Arguments, environment, what the error names.
type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

#[test]
fn bad_telemetry_settings_are_refused() {
    let ns = namespace();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = held.local_addr().unwrap().to_string();
    let cases: Vec<Case> = vec![
        (
            vec!["consume", "--group", "g", "--metrics-addr", "nowhere"],
            vec![],
            "--metrics-addr",
        ),
        (
            vec!["relay"],
            vec![("EVENT_BUS_METRICS_ADDR", "nowhere")],
            "EVENT_BUS_METRICS_ADDR",
        ),
        // The client's mistake is named even when Redis is down (not 69).
        (
            vec!["consume", "--metrics-addr", "127.0.0.1:0"],
            vec![("REDIS_URL", "redis://127.0.0.1:1")],
            "no consumer group",
        ),
        (
            vec!["consume", "--group", "g", "--metrics-addr", &busy],
            vec![],
            "cannot listen",
        ),
        (
            vec!["streams"],
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            vec!["streams"],
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://u:SENTINEL@h")],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (
            vec!["streams"],
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h"),
                ("OTEL_TRACES_SAMPLER", "sometimes"),
            ],
            "OTEL_TRACES_SAMPLER",
        ),
    ];
    for (args, env, expected) in cases {
        let mut cmd = eventbus(&ns, &args);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = run(cmd, None);
        assert_eq!(out.code, 2, "{args:?} {env:?}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("SENTINEL"), "{}", out.stderr);
    }
}
