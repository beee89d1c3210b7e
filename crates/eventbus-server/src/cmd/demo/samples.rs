//! Sample events of the first user's catalogue: twelve types in four topics,
//! with realistic payloads.
//!
//! Events come as small stories so the envelope fields make sense: a work
//! order is created and started; one of its work items runs an activity that
//! fails once, is retried and completes, while a second item fails for good.
//! Each story shares a `correlation_id` (the work order id) and chains
//! `causation_id`s. Partition keys: the work order id for `work_order.*`, the
//! work item id for `work_item.*` and `attempt.*`, the component for `system.*`.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use eventbus::Envelope;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::{json, Value};
use uuid::Uuid;

/// Every event type of the catalogue, in story order.
pub(crate) const EVENT_TYPES: [&str; 12] = [
    "work_order.created",
    "work_order.status_changed",
    "work_item.processing_started",
    "attempt.started",
    "attempt.failed",
    "attempt.retried",
    "attempt.completed",
    "work_item.processing_completed",
    "work_item.processing_failed",
    "system.health_check",
    "system.error",
    "system.maintenance",
];

const CUSTOMERS: &[&str] = &[
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Health",
    "Stark Logistics",
    "Wayne Foods",
];
const REQUESTERS: &[&str] = &[
    "alice@example.com",
    "bob@example.com",
    "carol@example.com",
    "slack:U04TRIAGE",
    "api:billing-service",
];
/// (work order kind, title template, work item kinds, activity)
const WORK_KINDS: &[(&str, &str, [&str; 2], &str)] = &[
    (
        "invoice_reconciliation",
        "Reconcile {} invoices for {}",
        ["match_payments", "extract_line_items"],
        "fetchInvoices",
    ),
    (
        "customer_onboarding",
        "Onboard {} ({})",
        ["provision_workspace", "send_welcome_kit"],
        "createTenant",
    ),
    (
        "contract_review",
        "Review {} contract for {}",
        ["ai_summarize", "flag_clauses"],
        "callLlmSummarize",
    ),
    (
        "support_triage",
        "Triage {} escalation from {}",
        ["classify_ticket", "notify_slack"],
        "postSlackMessage",
    ),
];
const COMPONENTS: &[&str] = &[
    "api-gateway",
    "work-order-service",
    "temporal-worker",
    "slack-bot",
    "ai-agent",
    "eventbus-relay",
];
/// (code, message, retryable)
const ATTEMPT_ERRORS: &[(&str, &str, bool)] = &[
    (
        "RATE_LIMITED",
        "upstream API returned 429 Too Many Requests",
        true,
    ),
    (
        "UPSTREAM_TIMEOUT",
        "no response from upstream within 30s",
        true,
    ),
    ("CONNECTION_RESET", "connection reset by peer", true),
];
const ITEM_ERRORS: &[(&str, &str)] = &[
    ("VALIDATION_FAILED", "document is missing a signature page"),
    ("RETRIES_EXHAUSTED", "activity failed after 5 attempts"),
    ("NOT_FOUND", "referenced customer record does not exist"),
];

/// `per_type` events of each of the twelve types, in publishing order.
pub(crate) fn generate<R: Rng>(per_type: usize, rng: &mut R) -> Vec<Envelope> {
    let now = Utc::now();
    let mut out = Vec::with_capacity(per_type * EVENT_TYPES.len());
    for i in 0..per_type {
        // Stories are spread over the last hours, a few minutes apart.
        let start = now - Duration::minutes(((per_type - i) * 3) as i64);
        work_story(&mut out, start, rng);
        system_story(&mut out, start, rng);
    }
    out
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn id<R: Rng>(rng: &mut R) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

fn pick<'a, T, R: Rng>(items: &'a [T], rng: &mut R) -> &'a T {
    items.choose(rng).expect("sample lists are not empty")
}

/// Appends events that share a correlation id, each caused by the one before.
struct Chain<'a> {
    out: &'a mut Vec<Envelope>,
    correlation: String,
    last: Option<Uuid>,
}

impl Chain<'_> {
    fn push(&mut self, event_type: &str, key: &str, source: &str, at: DateTime<Utc>, data: Value) {
        let mut e = Envelope::new(event_type, key, data).with_source(source);
        e.occurred_at = at;
        e.correlation_id = Some(self.correlation.clone());
        e.causation_id = self.last.map(|id| id.to_string());
        e.headers.insert("demo".into(), "true".into());
        self.last = Some(e.id);
        self.out.push(e);
    }
}

/// Nine events: a work order, its two work items and three attempts.
fn work_story<R: Rng>(out: &mut Vec<Envelope>, t0: DateTime<Utc>, rng: &mut R) {
    let (kind, title, item_kinds, activity) = *pick(WORK_KINDS, rng);
    let customer = *pick(CUSTOMERS, rng);
    let month = *pick(&["January", "February", "March", "Q1", "Q2"], rng);
    let wo = id(rng).to_string();
    let wi = id(rng).to_string();
    let wi_failed = id(rng).to_string();
    let (a1, a2) = (id(rng).to_string(), id(rng).to_string());
    let ms = |rng: &mut R, lo: i64, hi: i64| rng.random_range(lo..hi);
    let mut chain = Chain {
        out,
        correlation: wo.clone(),
        last: None,
    };

    chain.push(
        "work_order.created",
        &wo,
        "work-order-service",
        t0,
        json!({
            "id": wo,
            "kind": kind,
            "title": title.replacen("{}", month, 1).replacen("{}", customer, 1),
            "status": "pending",
            "priority": pick(&["low", "normal", "normal", "high"], rng),
            "requested_by": pick(REQUESTERS, rng),
            "created_at": ts(t0),
        }),
    );
    let t1 = t0 + Duration::milliseconds(ms(rng, 200, 3_000));
    chain.push(
        "work_order.status_changed",
        &wo,
        "work-order-service",
        t1,
        json!({
            "id": wo,
            "from": "pending",
            "to": "in_progress",
            "reason": "work items scheduled by WorkOrderWorkflow",
            "changed_by": "temporal:WorkOrderWorkflow",
            "changed_at": ts(t1),
        }),
    );
    let t2 = t1 + Duration::milliseconds(ms(rng, 50, 500));
    chain.push(
        "work_item.processing_started",
        &wi,
        "work-item-worker",
        t2,
        json!({
            "work_item_id": wi,
            "work_order_id": wo,
            "kind": item_kinds[0],
            "started_at": ts(t2),
            "worker": format!("temporal-worker-{}", rng.random_range(1..=4)),
            "workflow_id": format!("work-item/{wi}"),
        }),
    );
    let (code, message, retryable) = *pick(ATTEMPT_ERRORS, rng);
    let t3 = t2 + Duration::milliseconds(ms(rng, 5, 50));
    let attempt = |number: u32, attempt_id: &str| {
        json!({
            "attempt_id": attempt_id, "work_item_id": wi, "work_order_id": wo,
            "activity": activity, "attempt_number": number, "task_queue": "work-items",
        })
    };
    let mut data = attempt(1, &a1);
    data["started_at"] = json!(ts(t3));
    chain.push("attempt.started", &wi, "temporal-worker", t3, data);
    let d4 = ms(rng, 100, 30_000);
    let t4 = t3 + Duration::milliseconds(d4);
    let mut data = attempt(1, &a1);
    data["started_at"] = json!(ts(t3));
    data["failed_at"] = json!(ts(t4));
    data["duration_ms"] = json!(d4);
    data["outcome"] = json!("failed");
    data["error"] = json!({"code": code, "message": message, "retryable": retryable});
    chain.push("attempt.failed", &wi, "temporal-worker", t4, data);
    let backoff = 1_000 * rng.random_range(1..=8);
    let t5 = t4 + Duration::milliseconds(backoff);
    let mut data = attempt(1, &a1);
    data["next_attempt_number"] = json!(2);
    data["backoff_ms"] = json!(backoff);
    data["next_retry_at"] = json!(ts(t5));
    data["reason"] = json!(code);
    chain.push("attempt.retried", &wi, "temporal-worker", t4, data);
    let d6 = ms(rng, 100, 5_000);
    let t6 = t5 + Duration::milliseconds(d6);
    let mut data = attempt(2, &a2);
    data["started_at"] = json!(ts(t5));
    data["completed_at"] = json!(ts(t6));
    data["duration_ms"] = json!(d6);
    data["outcome"] = json!("succeeded");
    chain.push("attempt.completed", &wi, "temporal-worker", t6, data);
    let records = rng.random_range(1..500);
    chain.push(
        "work_item.processing_completed",
        &wi,
        "work-item-worker",
        t6,
        json!({
            "work_item_id": wi,
            "work_order_id": wo,
            "kind": item_kinds[0],
            "started_at": ts(t2),
            "completed_at": ts(t6),
            "duration_ms": (t6 - t2).num_milliseconds(),
            "attempts": 2,
            "result": {
                "summary": format!("processed {records} records for {customer}"),
                "records_processed": records,
                "output_ref": format!("s3://work-results/{wo}/{wi}.json"),
            },
        }),
    );
    let (code, message) = *pick(ITEM_ERRORS, rng);
    let t7 = t6 + Duration::milliseconds(ms(rng, 10, 2_000));
    chain.push(
        "work_item.processing_failed",
        &wi_failed,
        "work-item-worker",
        t7,
        json!({
            "work_item_id": wi_failed,
            "work_order_id": wo,
            "kind": item_kinds[1],
            "started_at": ts(t2),
            "failed_at": ts(t7),
            "duration_ms": (t7 - t2).num_milliseconds(),
            "attempts": if code == "RETRIES_EXHAUSTED" { 5 } else { 1 },
            "error": {"code": code, "message": message, "retryable": false},
        }),
    );
}

/// Three system events of one component.
fn system_story<R: Rng>(out: &mut Vec<Envelope>, t0: DateTime<Utc>, rng: &mut R) {
    let component = *pick(COMPONENTS, rng);
    let mut chain = Chain {
        out,
        correlation: format!("{component}/{}", id(rng)),
        last: None,
    };
    let degraded = rng.random_bool(0.2);
    let latency = |rng: &mut R| rng.random_range(1..40);
    let checks = json!({
        "redis": {"status": "up", "latency_ms": latency(rng)},
        "postgres": {"status": "up", "latency_ms": latency(rng)},
        "temporal": {"status": if degraded { "slow" } else { "up" }, "latency_ms": if degraded { 1_800 } else { latency(rng) }},
    });
    chain.push(
        "system.health_check",
        component,
        component,
        t0,
        json!({
            "component": component,
            "status": if degraded { "degraded" } else { "healthy" },
            "checks": checks,
            "version": format!("1.{}.{}", rng.random_range(10..20), rng.random_range(0..9)),
            "instance": format!("{component}-{}", rng.random_range(0..3)),
            "checked_at": ts(t0),
        }),
    );
    let t1 = t0 + Duration::milliseconds(rng.random_range(100..60_000));
    let (code, message, details) = pick(
        &[
            (
                "DB_POOL_EXHAUSTED",
                "no free database connection within 5s",
                json!({"pool_size": 20, "waiting": 37}),
            ),
            (
                "UNHANDLED_EXCEPTION",
                "TypeError: cannot read properties of undefined (reading 'id')",
                json!({"route": "POST /work-orders", "status": 500}),
            ),
            (
                "SLACK_API_ERROR",
                "chat.postMessage failed: channel_not_found",
                json!({"channel": "C0DEMO", "retry_after_s": null}),
            ),
        ],
        rng,
    )
    .clone();
    chain.push(
        "system.error",
        component,
        component,
        t1,
        json!({
            "component": component,
            "severity": pick(&["error", "error", "critical"], rng),
            "error": {"code": code, "message": message, "details": details},
            "request_id": id(rng),
            "occurred_at": ts(t1),
        }),
    );
    let starts = t1 + Duration::hours(rng.random_range(1..48));
    let ends = starts + Duration::minutes(15 * rng.random_range(1..8));
    chain.push("system.maintenance", component, component, t1, json!({
        "component": component,
        "kind": "scheduled",
        "window": {"starts_at": ts(starts), "ends_at": ts(ends)},
        "reason": pick(&["database minor version upgrade", "certificate rotation", "node pool resize"], rng),
        "expected_impact": pick(&["none", "brief latency increase", "writes paused up to 2 minutes"], rng),
        "announced_by": pick(REQUESTERS, rng),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_type_per_type_times_with_the_right_keys() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let events = generate(5, &mut rng);
        assert_eq!(events.len(), 60);
        for t in EVENT_TYPES {
            let of_type: Vec<_> = events.iter().filter(|e| e.event_type == t).collect();
            assert_eq!(of_type.len(), 5, "{t}");
            for e in of_type {
                let key_field = match e.topic() {
                    "work_order" => "id",
                    "work_item" | "attempt" => "work_item_id",
                    _ => "component",
                };
                assert_eq!(e.data[key_field], json!(e.key), "{t}");
                eventbus::topology::validate_event_type(&e.event_type).unwrap();
            }
        }
    }

    #[test]
    fn every_sample_fits_the_catalogue() {
        let catalog = eventbus::Catalog::embedded().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for e in generate(40, &mut rng) {
            if let Err(errors) = catalog.validate(&e) {
                panic!(
                    "{errors}\n{}",
                    serde_json::to_string_pretty(&e.data).unwrap()
                );
            }
        }
    }
}
