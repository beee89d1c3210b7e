//! docs/openapi.json against the live server: `eventbus serve` on the
//! shared Redis and PostgreSQL (own namespace and schema), with data behind
//! every route (events through the outbox and direct, a consumer group, dead
//! letters, one of them of an entry that is no envelope), then every
//! documented route that answers JSON with 2xx is called and its answer
//! validated against its documented schema (`$ref`s resolved to the
//! components). The document's example events must be
//! valid catalogue events, and no 2xx schema may be a bare object.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eventbus_testkit::{shared_database_url, shared_redis_url, TestNamespace, TestSchema};
use serde_json::{json, Map, Value};

const ADMIN: &str = "openapi-live-admin-token";

fn document() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// An OpenAPI 3.0 schema as JSON Schema 2020-12: `nullable: true` becomes a
/// `null` type, a boolean `exclusiveMinimum` the number it qualifies.
fn to_json_schema(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
        Value::Object(o) => {
            let mut out: Map<String, Value> = o
                .iter()
                .map(|(k, v)| (k.clone(), to_json_schema(v)))
                .collect();
            if out.remove("nullable") == Some(Value::Bool(true)) {
                if let Some(t) = out.get("type").cloned() {
                    out.insert("type".into(), json!([t, "null"]));
                }
                if let Some(Value::Array(e)) = out.get_mut("enum") {
                    e.push(Value::Null);
                }
            }
            if out.get("exclusiveMinimum") == Some(&Value::Bool(true)) {
                let min = out
                    .remove("minimum")
                    .expect("exclusiveMinimum qualifies a minimum");
                out.insert("exclusiveMinimum".into(), min);
            } else if out.get("exclusiveMinimum") == Some(&Value::Bool(false)) {
                out.remove("exclusiveMinimum");
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// The schema `#/components/schemas/NAME` points to, or `s` itself.
fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.strip_prefix('#').expect("a local $ref"))
            .unwrap_or_else(|| panic!("{r} does not resolve")),
        None => s,
    }
}

/// The JSON schemas of the 2xx answers: (method, path, status) → schema.
fn documented_answers(doc: &Value) -> Vec<(String, String, u16, Value)> {
    let mut out = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (code, answer) in op["responses"].as_object().unwrap() {
                let code: u16 = code.parse().unwrap();
                if !(200..300).contains(&code) {
                    continue;
                }
                if let Some(s) = answer.pointer("/content/application~1json/schema") {
                    out.push((method.clone(), path.clone(), code, s.clone()));
                }
            }
        }
    }
    out
}

/// Validates `answer` against `schema` of the document.
fn check(doc: &Value, what: &str, schema: &Value, answer: &Value) {
    let mut root = to_json_schema(schema);
    root.as_object_mut()
        .unwrap()
        .insert("components".into(), to_json_schema(&doc["components"]));
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("{what}: the documented schema does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(answer)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: the live answer does not match docs/openapi.json:\n{}\nanswer: {answer:#}",
        errors.join("\n")
    );
}

#[test]
fn every_2xx_json_answer_has_a_real_schema() {
    let doc = document();
    let answers = documented_answers(&doc);
    assert!(answers.len() >= 14, "{answers:?}");
    for (method, path, code, s) in &answers {
        let s = resolve(&doc, s);
        let has_required = s["required"].as_array().is_some_and(|r| !r.is_empty());
        assert!(
            has_required || s.get("items").is_some(),
            "{method} {path} {code}: the schema declares neither required fields nor items: {s}"
        );
        for field in s["required"].as_array().into_iter().flatten() {
            assert!(
                s["properties"].get(field.as_str().unwrap()).is_some(),
                "{method} {path} {code}: required {field} has no property"
            );
        }
    }
}

/// Every event in the document (the Event schema's example, the request
/// body's examples, one or in a batch) is valid against the catalogue.
#[test]
fn example_events_are_valid_catalogue_events() {
    let doc = document();
    let catalog = eventbus::Catalog::embedded().unwrap();
    let post = &doc["paths"]["/v1/events"]["post"];
    let mut bodies = vec![doc["components"]["schemas"]["Event"]["example"].clone()];
    let examples = post["requestBody"]["content"]["application/json"]["examples"]
        .as_object()
        .expect("the request body has examples");
    bodies.extend(examples.values().map(|e| e["value"].clone()));
    let mut checked = 0;
    for body in bodies {
        let events = eventbus_server::events_body::parse_events(body.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        for e in events {
            if let Err(errors) = catalog.validate(&e) {
                panic!(
                    "example {} is not a valid catalogue event: {errors}",
                    e.event_type
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "{checked} example events");
}

/// `eventbus serve` with PostgreSQL and a consumer of group `files` whose
/// handler fails every event for good (exit 65: dead letter at once).
struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(ns: &TestNamespace, db: &TestSchema) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("consumers.json");
        let args = ["--group", "files", "--block", "100ms", "--exec", "exit 65"];
        std::fs::write(
            &config,
            json!({"consumers": [{"name": "files", "args": args}]}).to_string(),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_eventbus"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("REDIS_URL", ns.url())
            .env("DATABASE_URL", shared_database_url())
            .env("EVENT_BUS_DB_SCHEMA", db.name())
            .env("EVENT_BUS_NAMESPACE", ns.name())
            .env("EVENT_BUS_PARTITIONS", "4")
            .env("EVENT_BUS_API_TOKEN", ADMIN)
            .env("EVENT_BUS_LOG", "info")
            .env("EVENT_BUS_LOG_FORMAT", "json")
            .args(["serve", "--addr", "127.0.0.1:0", "--consumers"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let v: Value = serde_json::from_str(&line).unwrap_or_default();
                    if v["fields"]["message"] == "eventbus serve listening" {
                        let _ = tx.send(v["fields"]["addr"].as_str().unwrap().to_owned());
                    }
                }
            });
        }
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("serve did not start");
        Server {
            child,
            base: format!("http://{addr}"),
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls the server and validates a 2xx JSON answer against the document.
struct Checker {
    doc: Value,
    http: reqwest::Client,
    base: String,
    /// (method, documented path, status) answered and checked.
    checked: BTreeSet<(String, String, u16)>,
}

impl Checker {
    /// `method uri` (the documented `path` with its parameters filled in),
    /// expecting `status`; validates and returns the answer.
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        uri: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{uri}", self.base))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let res = req.send().await.unwrap();
        let got = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert_eq!(got, status, "{method} {uri}: {text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        let m = method.to_ascii_lowercase();
        let schema = self.doc["paths"][path][&m]["responses"][status.to_string()]
            .pointer("/content/application~1json/schema")
            .unwrap_or_else(|| panic!("{method} {path} {status} is not documented"))
            .clone();
        check(&self.doc, &format!("{method} {uri}"), &schema, &answer);
        self.checked.insert((m, path.to_owned(), status));
        answer
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_answer_matches_its_schema() {
    let ns = TestNamespace::new(shared_redis_url(), "openapi");
    let db = TestSchema::new("openapi").await;
    let server = Server::start(&ns, &db);
    let doc = document();
    let mut c = Checker {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        checked: BTreeSet::new(),
        doc: doc.clone(),
    };
    let examples = &doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]
        ["application/json"]["examples"];

    // Data behind every route: one event through the outbox, a batch
    // straight to Redis, all dead-lettered by the consumer.
    let one = examples["one"]["value"].clone();
    let batch = examples["batch"]["value"].clone();
    c.call("POST", "/v1/events", "/v1/events", Some(one), 202)
        .await;
    let direct = c
        .call(
            "POST",
            "/v1/events",
            "/v1/events?direct=true",
            Some(batch),
            201,
        )
        .await;
    assert_eq!(direct["events"].as_array().unwrap().len(), 2);
    // And an entry that is no envelope (not UTF-8, a U+0000): dead-lettered
    // as `_invalid.undecodable` with its exact fields in `raw_fields`.
    let stream = ns.topology(4).stream_key("work_order", 0);
    let mut redis = redis::Client::open(ns.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("junk")
        .arg(&b"\xff\x00"[..])
        .query(&mut redis)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let listed = c.call("GET", "/v1/dlq", "/v1/dlq", None, 200).await;
        let dead = listed["dead_letters"].as_array().unwrap().clone();
        if dead.len() == 4 {
            break dead;
        }
        assert!(Instant::now() < deadline, "not dead-lettered: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let junk = dead
        .iter()
        .find(|d| d["event_type"] == "_invalid.undecodable")
        .expect("the junk entry is dead-lettered");
    assert!(junk["raw_fields"].is_array(), "{junk}");
    let events: Vec<&Value> = dead.iter().filter(|d| *d != junk).collect();
    let (a, b) = (
        events[0]["id"].as_str().unwrap(),
        events[1]["id"].as_str().unwrap(),
    );

    c.call(
        "GET",
        "/v1/dlq",
        "/v1/dlq?group=files&status=new&limit=2&offset=1",
        None,
        200,
    )
    .await;
    c.call("GET", "/v1/streams", "/v1/streams", None, 200).await;
    let groups = c.call("GET", "/v1/groups", "/v1/groups", None, 200).await;
    assert_eq!(groups["groups"][0]["group"], "files", "{groups}");
    c.call("GET", "/v1/groups/{group}", "/v1/groups/files", None, 200)
        .await;
    c.call("GET", "/v1/outbox", "/v1/outbox", None, 200).await;
    c.call("GET", "/v1/schemas", "/v1/schemas", None, 200).await;
    c.call(
        "GET",
        "/v1/schemas/{type}/{version}",
        "/v1/schemas/work_order.created/v1",
        None,
        200,
    )
    .await;
    c.call("GET", "/v1/openapi.json", "/v1/openapi.json", None, 200)
        .await;
    c.call("GET", "/health", "/health", None, 200).await;
    c.call("GET", "/ready", "/ready", None, 200).await;
    let dry = c
        .call(
            "POST",
            "/v1/dlq/replay",
            "/v1/dlq/replay",
            Some(json!({"all": true, "dry_run": true})),
            200,
        )
        .await;
    assert_eq!(dry["selected"].as_array().unwrap().len(), 4, "{dry}");
    c.call(
        "POST",
        "/v1/dlq/replay",
        "/v1/dlq/replay",
        Some(json!({"ids": [a], "rate": 100.0})),
        200,
    )
    .await;
    let shown = c
        .call("GET", "/v1/dlq/{id}", &format!("/v1/dlq/{a}"), None, 200)
        .await;
    assert_eq!(shown["history"][1]["action"], "replayed", "{shown}");
    c.call(
        "POST",
        "/v1/dlq/{id}/discard",
        &format!("/v1/dlq/{b}/discard"),
        None,
        200,
    )
    .await;

    // A scheduled event (an hour ahead): listed, then cancelled.
    let mut later = examples["one"]["value"].clone();
    later["deliver_at"] = json!((chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339());
    let scheduled = c
        .call(
            "POST",
            "/v1/events",
            "/v1/events?direct=true",
            Some(later),
            201,
        )
        .await;
    let id = scheduled["events"][0]["id"].as_str().unwrap().to_owned();
    let listed = c
        .call("GET", "/v1/scheduled", "/v1/scheduled?limit=10", None, 200)
        .await;
    assert_eq!(listed["scheduled"][0]["id"], id.as_str(), "{listed}");
    c.call(
        "DELETE",
        "/v1/scheduled/{id}",
        &format!("/v1/scheduled/{id}"),
        None,
        200,
    )
    .await;

    let documented: BTreeSet<(String, String, u16)> = documented_answers(&doc)
        .into_iter()
        .map(|(m, p, code, _)| (m, p, code))
        .collect();
    let missed: Vec<_> = documented.difference(&c.checked).collect();
    assert!(
        missed.is_empty(),
        "documented answers not checked live: {missed:?}"
    );
    drop(server);
    ns.cleanup();
}
