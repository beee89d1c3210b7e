//! Helpers for the CLI tests: run the built binary in a test namespace,
//! with a clean environment and a deadline against hangs.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eventbus_testkit::{shared_redis_url, TestNamespace};
use serde_json::{json, Value};

/// Longest any single command may run before the test calls it hung.
pub(crate) const HANG: Duration = Duration::from_secs(120);

/// The binary with none of this machine's eventbus settings: every
/// `EVENT_BUS_*`, `REDIS_*`, `OTEL_*` and `DATABASE_URL` variable is removed (by prefix,
/// so a setting added later is covered too), and it logs warnings as JSON.
pub(crate) fn bare_eventbus() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_eventbus"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("EVENT_BUS_")
            || k.starts_with("REDIS_")
            || k.starts_with("OTEL_")
            || k == "DATABASE_URL"
        {
            c.env_remove(k.as_ref());
        }
    }
    c.env("EVENT_BUS_LOG", "warn")
        .env("EVENT_BUS_LOG_FORMAT", "json")
        .stdin(Stdio::null());
    c
}

/// The binary pointed at a namespace (with `partitions` per topic) and a
/// PostgreSQL schema.
pub(crate) fn eventbus_pg(
    ns: &TestNamespace,
    database_url: &str,
    schema: &str,
    partitions: u32,
) -> Command {
    let mut c = bare_eventbus();
    c.env("REDIS_URL", ns.url())
        .env("EVENT_BUS_NAMESPACE", ns.name())
        .env("EVENT_BUS_PARTITIONS", partitions.to_string())
        .env("DATABASE_URL", database_url)
        .env("EVENT_BUS_DB_SCHEMA", schema);
    c
}

pub(crate) fn namespace() -> TestNamespace {
    TestNamespace::new(shared_redis_url(), "cli")
}

/// The binary, pointed at the namespace, with a clean environment. A
/// namespace on a private cluster is reached the way operators do, by
/// `REDIS_CLUSTER_NODES`.
pub(crate) fn eventbus(ns: &TestNamespace, args: &[&str]) -> Command {
    let mut c = bare_eventbus();
    match ns.url().strip_prefix("redis+cluster://") {
        Some(nodes) => c.env("REDIS_CLUSTER_NODES", nodes),
        None => c.env("REDIS_URL", ns.url()),
    };
    c.env("EVENT_BUS_NAMESPACE", ns.name()).args(args);
    c
}

pub(crate) struct Output {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Output {
    pub(crate) fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The one `eventbus: error:` line on stderr (log lines are JSON).
    pub(crate) fn error_line(&self) -> &str {
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("eventbus: error: "))
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "one error line expected in {:?}",
            self.stderr
        );
        errors[0]
    }
}

/// Runs to completion (panicking if it hangs), feeding `stdin` if given.
pub(crate) fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the eventbus binary starts");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    // Read the pipes on threads so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || read_all(&mut out));
    let err = std::thread::spawn(move || read_all(&mut err));
    let status = wait_or_kill(&mut child, HANG);
    Output {
        code: status.code().unwrap_or(-1),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn read_all(r: &mut impl std::io::Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

pub(crate) fn wait_or_kill(
    child: &mut std::process::Child,
    within: Duration,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("eventbus did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn publish_batch(ns: &TestNamespace, text: &str) -> Vec<Value> {
    let out = run(eventbus(ns, &["publish", "--batch", "-"]), Some(text));
    assert_eq!(out.code, 0, "publish failed: {}", out.stderr);
    out.lines()
}

/// A batch of `n` valid catalogue events over three topics and many keys.
pub(crate) fn batch_text(n: usize) -> String {
    const AT: &str = "2026-11-28T09:00:00Z";
    (0..n)
        .map(|i| {
            let key = format!("key-{}", i % 37);
            let (event_type, data) = match i % 3 {
                0 => (
                    "work_order.created",
                    json!({"id": key, "kind": "cli_test", "title": format!("event {i}"),
                           "status": "pending", "requested_by": "cli-test", "created_at": AT}),
                ),
                1 => (
                    "work_item.processing_started",
                    json!({"work_item_id": key, "work_order_id": "wo-cli", "kind": "cli_test",
                           "started_at": AT, "workflow_id": format!("cli-test/{i}")}),
                ),
                _ => (
                    "system.health_check",
                    json!({"component": key, "status": "healthy", "checks": {}, "checked_at": AT}),
                ),
            };
            json!({"type": event_type, "key": key, "data": data, "headers": {"test": "cli"}})
                .to_string()
                + "\n"
        })
        .collect()
}

pub(crate) fn ids_of(published: &[Value]) -> HashSet<String> {
    published
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_owned())
        .collect()
}

pub(crate) fn streams_json(ns: &TestNamespace) -> Value {
    let out = run(eventbus(ns, &["streams", "--json"]), None);
    assert_eq!(out.code, 0, "streams failed: {}", out.stderr);
    serde_json::from_str(&out.stdout).expect("streams --json prints JSON")
}

pub(crate) fn total_length(streams: &Value) -> u64 {
    streams["streams"]
        .as_array()
        .expect("streams array")
        .iter()
        .map(|s| s["length"].as_u64().expect("length"))
        .sum()
}

pub(crate) fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The arguments of `consume --unordered` of `n` events for `group`, one
/// at a time (no validation).
pub(crate) fn consume_unordered_args(group: &str, n: usize) -> Vec<String> {
    let n = n.to_string();
    [
        "consume",
        "--group",
        group,
        "--unordered",
        "--no-validate",
        "--max-events",
        &n,
        "--block",
        "200ms",
        "--concurrency",
        "1",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `consume --unordered` of `n` events for `group`, one at a time (no
/// validation), waiting for it to exit 0.
pub(crate) fn consume_unordered(ns: &TestNamespace, group: &str, n: usize) {
    let args = consume_unordered_args(group, n);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(eventbus(ns, &args), None);
    assert_eq!(out.code, 0, "consume {group}: {}", out.stderr);
}
