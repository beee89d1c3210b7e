//! The operator console end to end in a real browser: `eventbus serve`
//! runs against the local Redis and PostgreSQL (its own namespace and
//! schema), the CLI seeds what each test needs, then a Playwright script
//! (`tests/browser/*.mjs`, `playwright-core` driving Debian's headless
//! Chromium) logs in and checks the pages, saving a screenshot in
//! `target/screenshots/` (`docs/img/`, the README's pictures, with
//! `EVENTBUS_UPDATE_SCREENSHOTS=1`). The script's exit status is the verdict.
//!
//! Chromium (`/usr/bin/chromium`, or `EVENTBUS_CHROMIUM`), `node` and
//! `tests/browser/node_modules` (`npm ci` there) are needed. Missing, the
//! tests fail with what to install when `CI` or `EVENTBUS_REQUIRE_BROWSER`
//! is set (`.ci/run` sets it); elsewhere they say so on stderr and pass.

#[allow(dead_code)] // each test file uses some of the helpers
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_testkit::{TestNamespace, TestSchema};
use serde_json::{json, Value};

const ADMIN: &str = "Console-Admin-Token-0123456789";
const READ: &str = "Console-Read-Token-0123456789";

/// One browser at a time: two cores do not run several Chromiums well.
static BROWSER: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chromium() -> PathBuf {
    std::env::var_os("EVENTBUS_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Whether the browser tests can run; when they cannot, fails in CI and
/// says why elsewhere.
fn browser_available() -> bool {
    let mut missing = Vec::new();
    if !chromium().is_file() {
        missing.push(format!(
            "{} (apt-get install chromium chromium-driver)",
            chromium().display()
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node (apt-get install nodejs npm)".to_owned());
    }
    if !repo()
        .join("tests/browser/node_modules/playwright-core")
        .is_dir()
    {
        missing.push("tests/browser/node_modules (cd tests/browser && npm ci)".to_owned());
    }
    if missing.is_empty() {
        return true;
    }
    let required =
        std::env::var_os("CI").is_some() || std::env::var_os("EVENTBUS_REQUIRE_BROWSER").is_some();
    assert!(
        !required,
        "the console's browser tests need: {}",
        missing.join("; ")
    );
    eprintln!("SKIPPED: the console's browser tests need {} (set EVENTBUS_REQUIRE_BROWSER=1 to fail instead)", missing.join("; "));
    false
}

/// `eventbus serve` on a free port with both tokens, in `ns` and `db`.
struct Serve {
    child: Child,
    url: String,
    _log: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn start(ns: &TestNamespace, db: &TestSchema, env: &[(&str, &str)], args: &[&str]) -> Serve {
        let mut cmd = common::eventbus_pg(ns, db.url(), db.name(), 4);
        cmd.env("EVENT_BUS_API_TOKEN", ADMIN)
            .env("EVENT_BUS_API_READ_TOKEN", READ)
            .env("EVENT_BUS_LOG", "info")
            .envs(env.iter().copied())
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("eventbus serve starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["fields"]["message"] == "eventbus serve listening" {
                        let _ =
                            tx.send(v["fields"]["addr"].as_str().unwrap_or_default().to_owned());
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("serve did not start: {:?}", log.lock().unwrap()));
        Serve {
            child,
            url: format!("http://{addr}"),
            _log: log,
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = common::wait_or_kill(&mut self.child, Duration::from_secs(40));
    }
}

/// Runs `tests/browser/<spec>.mjs` against `serve` with `expect` (JSON) and
/// asserts it passed.
fn run_spec(spec: &str, serve: &Serve, expect: &Value) {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = repo().join("tests/browser");
    // The README's pictures are docs/img: written only on request, so a
    // test run leaves the checkout as it was.
    let shots = if std::env::var_os("EVENTBUS_UPDATE_SCREENSHOTS").is_some() {
        repo().join("docs/img")
    } else {
        repo().join("target/screenshots")
    };
    std::fs::create_dir_all(&shots).unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(format!("{spec}.mjs")))
        .current_dir(&dir)
        .env("CONSOLE_URL", &serve.url)
        .env("ADMIN_TOKEN", ADMIN)
        .env("READ_TOKEN", READ)
        .env("CHROMIUM", chromium())
        .env("SCREENSHOT_DIR", &shots)
        .env("EXPECT", expect.to_string())
        .stdin(Stdio::null());
    let out = common::run(cmd, None);
    assert_eq!(
        out.code, 0,
        "browser spec {spec} failed\n--- stdout\n{}\n--- stderr\n{}",
        out.stdout, out.stderr
    );
}

fn eventbus(ns: &TestNamespace, db: &TestSchema, args: &[&str]) -> common::Output {
    let mut cmd = common::eventbus_pg(ns, db.url(), db.name(), 4);
    cmd.args(args);
    let out = common::run(cmd, None);
    assert_eq!(out.code, 0, "eventbus {args:?}: {}", out.stderr);
    out
}

fn publish(
    ns: &TestNamespace,
    db: &TestSchema,
    event_type: &str,
    key: &str,
    data: &Value,
) -> Value {
    let out = eventbus(
        ns,
        db,
        &[
            "publish",
            "--no-validate",
            "--type",
            event_type,
            "--key",
            key,
            "--data",
            &data.to_string(),
        ],
    );
    serde_json::from_str(out.stdout.trim()).unwrap()
}

/// `eventbus streams --json`.
fn streams(ns: &TestNamespace, db: &TestSchema) -> Value {
    serde_json::from_str(&eventbus(ns, db, &["streams", "--json"]).stdout).unwrap()
}

fn dead_letters(ns: &TestNamespace, db: &TestSchema, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["dlq", "list", "--json"];
    args.extend_from_slice(extra);
    eventbus(ns, db, &args)
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Events of the catalogue over three topics (`common::batch_text`).
fn seed(ns: &TestNamespace, db: &TestSchema, n: usize) -> Vec<Value> {
    let mut cmd = common::eventbus_pg(ns, db.url(), db.name(), 4);
    cmd.args(["publish", "--batch", "-"]);
    let out = common::run(cmd, Some(&common::batch_text(n)));
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.lines()
}

fn consume(ns: &TestNamespace, db: &TestSchema, group: &str, n: usize) {
    let mut args = common::consume_unordered_args(group, n);
    args.extend(["--exec".to_owned(), "true".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    eventbus(ns, db, &args);
}

/// A consumers file for `serve`: group `billing` on `work_item`, failing
/// every event permanently until `fixed` exists, then writing each event
/// id to `seen`.
fn billing_consumer(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (fixed, seen, file) = (
        dir.join("fixed"),
        dir.join("seen"),
        dir.join("consumers.json"),
    );
    let exec = format!(
        "if [ -e {} ]; then echo \"$EVENTBUS_EVENT_ID\" >> {}; else echo 'handler: the schema of this event is not deployed yet' >&2; exit 65; fi",
        fixed.display(),
        seen.display()
    );
    let mut args: Vec<&str> =
        "--group billing --topics work_item --unordered --no-validate --block 200ms"
            .split(' ')
            .collect();
    args.extend(["--exec", &exec]);
    std::fs::write(
        &file,
        json!({"consumers": [{"name": "billing", "args": args}]}).to_string(),
    )
    .unwrap();
    (fixed, seen, file)
}

#[tokio::test]
async fn read_token_sees_the_overview_numbers_of_eventbus_streams() {
    if !browser_available() {
        return;
    }
    let ns = common::namespace();
    let db = TestSchema::new("ui").await;
    seed(&ns, &db, 30);
    consume(&ns, &db, "billing", 12);
    // Retention off: the trimmer must not change lengths between the CLI and the page.
    let serve = Serve::start(&ns, &db, &[("EVENT_BUS_STREAM_RETENTION", "off")], &[]);
    run_spec("overview", &serve, &streams(&ns, &db));
}

#[tokio::test]
async fn a_poison_event_is_shown_with_its_error_and_the_read_token_cannot_replay() {
    if !browser_available() {
        return;
    }
    let ns = common::namespace();
    let db = TestSchema::new("ui").await;
    let dir = tempfile::tempdir().unwrap();
    let (_, _, consumers) = billing_consumer(dir.path());
    let serve = Serve::start(&ns, &db, &[], &["--consumers", consumers.to_str().unwrap()]);
    let published = publish(
        &ns,
        &db,
        "work_item.poison",
        "wi-poison",
        &json!({"work_item_id": "wi-poison", "note": "<b>not bold</b>"}),
    );
    wait_until("the poison event was not dead-lettered", || {
        !dead_letters(&ns, &db, &[]).is_empty()
    });
    let dl = &dead_letters(&ns, &db, &[])[0];
    assert_eq!(dl["event_id"], published["id"]);
    run_spec(
        "dlq-read",
        &serve,
        &json!({"id": dl["id"], "error": dl["error_message"], "event_id": dl["event_id"]}),
    );
    // Refused means unchanged.
    assert_eq!(dead_letters(&ns, &db, &[])[0]["status"], "new");
}

#[tokio::test]
async fn the_admin_token_filters_dry_runs_and_replays_a_set_at_a_rate_then_sees_it_handled() {
    if !browser_available() {
        return;
    }
    let ns = common::namespace();
    let db = TestSchema::new("ui").await;
    let dir = tempfile::tempdir().unwrap();
    let (fixed, seen, consumers) = billing_consumer(dir.path());
    let serve = Serve::start(&ns, &db, &[], &["--consumers", consumers.to_str().unwrap()]);
    let mut chosen = Vec::new();
    for i in 0..5 {
        let (event_type, key) = if i < 3 {
            ("work_item.import_failed", format!("wi-a{i}"))
        } else {
            ("work_item.export_failed", format!("wi-b{i}"))
        };
        let p = publish(&ns, &db, event_type, &key, &json!({"work_item_id": key}));
        if i < 3 {
            chosen.push(p["id"].as_str().unwrap().to_owned());
        }
    }
    wait_until("the events were not dead-lettered", || {
        dead_letters(&ns, &db, &[]).len() == 5
    });
    // The fix is deployed: what is replayed from now on is handled.
    std::fs::write(&fixed, "").unwrap();
    run_spec(
        "dlq-admin",
        &serve,
        &json!({"type": "work_item.import_failed", "count": 3, "rate": 2, "other_type": "work_item.export_failed"}),
    );
    let mut handled: Vec<String> = common::read_lines(&seen);
    handled.sort();
    chosen.sort();
    assert_eq!(
        handled, chosen,
        "the group handled exactly the replayed events"
    );
    assert_eq!(dead_letters(&ns, &db, &["--status", "replayed"]).len(), 3);
    assert_eq!(dead_letters(&ns, &db, &["--status", "new"]).len(), 2);
}

#[tokio::test]
async fn a_lagging_group_shows_its_lag_and_that_it_holds_retention_back() {
    if !browser_available() {
        return;
    }
    let ns = common::namespace();
    let db = TestSchema::new("ui").await;
    for i in 0..24 {
        let key = format!("wo-{i}");
        publish(&ns, &db, "work_order.noted", &key, &json!({"id": key}));
    }
    consume(&ns, &db, "fast", 24);
    consume(&ns, &db, "slow", 4);
    // Retention on (the default), trimming every second: `fast` is done,
    // so what is left is what `slow` still needs.
    let serve = Serve::start(&ns, &db, &[("EVENT_BUS_TRIM_INTERVAL", "1s")], &[]);
    let stats = streams(&ns, &db);
    let lag = |group: &str| -> u64 {
        stats["streams"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["groups"].as_array().unwrap())
            .filter(|g| g["name"] == group)
            .map(|g| g["lag"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(lag("fast"), 0);
    assert!(lag("slow") > 0, "slow lags: {stats}");
    run_spec(
        "lag",
        &serve,
        &json!({"group": "slow", "lag": lag("slow"), "caught_up": "fast"}),
    );
}

#[tokio::test]
async fn the_event_browser_finds_an_event_by_id_and_tails_new_ones() {
    if !browser_available() {
        return;
    }
    let ns = common::namespace();
    let db = TestSchema::new("ui").await;
    let published = seed(&ns, &db, 40);
    // A work_order.created one (every third), so the spec can publish
    // another of its type and key for the tail.
    let target = &published[18];
    assert_eq!(target["type"], "work_order.created");
    let serve = Serve::start(&ns, &db, &[], &[]);
    run_spec(
        "events",
        &serve,
        &json!({"id": target["id"], "entry_id": target["entry_id"], "stream": target["stream"], "type": target["type"], "key": target["key"]}),
    );
}
