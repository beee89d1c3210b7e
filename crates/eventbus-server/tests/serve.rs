//! `eventbus serve` as a process, over a real socket: the API answers, a
//! request in flight when SIGTERM arrives still completes, the process
//! exits cleanly, and no secret (Redis or PostgreSQL password, API tokens)
//! appears anywhere in its output or its answers. Without PostgreSQL, the
//! dead-letter routes work on the records kept in Redis.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus_testkit::{
    shared_database_url, shared_redis_url, RedisServer, TestNamespace, TestSchema,
};
use serde_json::{json, Value};

const SENTINEL: &str = "S3ntinel-Secret-7f3a";
const ADMIN: &str = "S3ntinel-Secret-7f3a-admin-token";
const READ: &str = "S3ntinel-Secret-7f3a-read-token";

/// `scheme://[user]:SENTINEL@host...`: the private Redis requires it,
/// the shared PostgreSQL (trust auth) accepts any password.
fn with_password(url: &str, user: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    if u.username().is_empty() {
        u.set_username(user).unwrap();
    }
    u.set_password(Some(SENTINEL)).unwrap();
    u.to_string()
}

struct Server {
    child: Child,
    addr: String,
    output: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Without `db`, no `DATABASE_URL`.
    fn start(
        ns: &TestNamespace,
        db: Option<&TestSchema>,
        extra_env: &[(&str, &str)],
        extra_args: &[&str],
    ) -> Server {
        Self::start_with(
            Command::new(env!("CARGO_BIN_EXE_eventbus")),
            ns,
            db,
            extra_env,
            extra_args,
        )
    }

    /// The same, run as `sh -c 'ulimit -n FDS; exec eventbus ...'`.
    fn start_with_fd_limit(fds: u32, ns: &TestNamespace, extra_env: &[(&str, &str)]) -> Server {
        let mut sh = Command::new("/bin/sh");
        sh.args([
            "-c",
            &format!("ulimit -n {fds} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_eventbus"),
        ]);
        Self::start_with(sh, ns, None, extra_env, &[])
    }

    fn start_with(
        mut cmd: Command,
        ns: &TestNamespace,
        db: Option<&TestSchema>,
        extra_env: &[(&str, &str)],
        extra_args: &[&str],
    ) -> Server {
        cmd.env_clear().env("REDIS_URL", ns.url());
        if let Some(db) = db {
            cmd.env(
                "DATABASE_URL",
                with_password(&shared_database_url(), "postgres"),
            )
            .env("EVENT_BUS_DB_SCHEMA", db.name());
        }
        cmd.env("EVENT_BUS_NAMESPACE", ns.name())
            .env("EVENT_BUS_PARTITIONS", "4")
            .env("EVENT_BUS_API_TOKEN", ADMIN)
            .env("EVENT_BUS_API_READ_TOKEN", READ)
            .env("EVENT_BUS_LOG", "debug")
            .env("EVENT_BUS_LOG_FORMAT", "json");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let output = output.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if v["fields"]["message"] == "eventbus serve listening" {
                            let _ = tx.send(v["fields"]["addr"].as_str().unwrap().to_owned());
                        }
                    }
                    output.lock().unwrap().push(line);
                }
            });
        }
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("serve did not start: {:?}", output.lock().unwrap()));
        Server {
            child,
            addr,
            output,
        }
    }

    /// One HTTP/1.1 request; returns (status, body).
    fn request(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        self.raw(
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"))
    }

    /// Sends `text` on a new connection and reads the answer until the
    /// server closes it, waiting at most `within` for each read.
    fn raw(&self, text: &str, within: Duration) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(within))?;
        s.write_all(text.as_bytes())?;
        try_read_response(&mut s)
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait(mut self) -> (i32, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                let lines = self.output.lock().unwrap().clone();
                return (status.code().unwrap_or(-1), lines);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("serve did not stop after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A test that fails leaves no server behind.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_response(s: &mut TcpStream) -> (u16, String) {
    try_read_response(s).unwrap()
}

fn try_read_response(s: &mut TcpStream) -> std::io::Result<(u16, String)> {
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

fn event() -> Value {
    let catalog = eventbus::Catalog::embedded().unwrap();
    let t = &catalog.types()[0];
    let data = t.latest().examples()[0].clone();
    let key = catalog
        .partition_key_of(t.name(), &data)
        .unwrap()
        .to_owned();
    json!({"type": t.name(), "version": t.latest().version(), "key": key, "data": data})
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_over_a_socket_drains_on_sigterm_and_leaks_no_secret() {
    let redis = RedisServer::start_with(&["--requirepass", SENTINEL]);
    let ns = TestNamespace::new(with_password(&redis.url(), ""), "serve");
    let db = TestSchema::new("serve").await;
    let server = Server::start(&ns, Some(&db), &[], &[]);

    let (s, body) = server.request("GET", "/health", None, "");
    assert_eq!(s, 200, "{body}");
    let (s, _) = server.request("GET", "/v1/streams", None, "");
    assert_eq!(s, 401);
    let (s, _) = server.request("GET", "/v1/streams", Some("S3ntinel-Secret-7f3a-wrong"), "");
    assert_eq!(s, 401);
    let (s, _) = server.request("POST", "/v1/events", Some(READ), &event().to_string());
    assert_eq!(s, 403);
    let (s, body) = server.request("POST", "/v1/events", Some(ADMIN), "{broken");
    assert_eq!(s, 400, "{body}");
    let (s, body) = server.request(
        "POST",
        "/v1/events?direct=true",
        Some(ADMIN),
        &event().to_string(),
    );
    assert_eq!(s, 201, "{body}");
    let (s, body) = server.request("GET", "/ready", None, "");
    assert_eq!(s, 200, "{body}");
    let (s, body) = server.request("GET", "/metrics", Some(READ), "");
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("eventbus_published_total"), "{body}");
    let mut answers = body;

    // Through the outbox: the relay running inside serve drains it.
    let (s, body) = server.request("POST", "/v1/events", Some(ADMIN), &event().to_string());
    assert_eq!(s, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, body) = server.request("GET", "/v1/outbox", Some(READ), "");
        assert_eq!(s, 200, "{body}");
        if serde_json::from_str::<Value>(&body).unwrap()["backlog"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay in serve did not drain the outbox: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A request in flight: headers and half the body sent, then SIGTERM,
    // then the rest. It is answered, and the event is in the outbox or
    // already relayed to the stream.
    let payload = event().to_string();
    let (first, rest) = payload.split_at(payload.len() / 2);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
        payload.len()
    )
    .unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    server.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(rest.as_bytes()).unwrap();
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 202, "{body}");
    answers.push_str(&body);
    let id = serde_json::from_str::<Value>(&body).unwrap()["events"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (code, lines) = server.wait();
    assert_eq!(code, 0, "{lines:#?}");
    let all = lines.join("\n");
    assert!(all.contains("eventbus serve stopped"), "{all}");
    assert!(
        all.contains("request_id"),
        "request logs carry the request id: {all}"
    );
    assert!(!all.contains(SENTINEL), "a secret in the output:\n{all}");
    assert!(!answers.contains(SENTINEL));
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {} WHERE event_id = '{id}'",
        db.table("eventbus_outbox")
    )))
    .fetch_one(db.pool())
    .await
    .unwrap();
    if n == 0 {
        // The relay running in serve sent it (and deleted the row): the
        // streams hold it beside the direct one and the first relayed one.
        let conn = eventbus::RedisConnector::new(ns.url(), eventbus::RedisOptions::default())
            .unwrap()
            .shared()
            .await
            .unwrap();
        let topology = ns.topology(4);
        let topics = eventbus::admin::known_topics(&conn, &topology)
            .await
            .unwrap();
        let stats = eventbus::admin::partition_stats(&conn, &topology, &topics)
            .await
            .unwrap();
        assert_eq!(stats.iter().map(|p| p.length).sum::<u64>(), 3);
    }
}

#[test]
fn refuses_a_public_address_without_a_token() {
    let out = Command::new(env!("CARGO_BIN_EXE_eventbus"))
        .env_clear()
        .env("REDIS_URL", with_password(&shared_redis_url(), ""))
        .args(["serve", "--addr", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("EVENT_BUS_API_TOKEN"), "{stderr}");
    assert!(!stderr.contains(SENTINEL));
}

/// A `--consumers` file with one consumer, group `files`, that writes each
/// envelope to `handled/<event id>`, plus `args` (mode flags).
struct FileConsumer {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    handled: std::path::PathBuf,
}

impl FileConsumer {
    fn new(mode: &[&str]) -> Self {
        Self::with_exec(mode, "cat > \"$OUT/$EVENTBUS_EVENT_ID\"")
    }

    /// The same with another `--exec` command (`$OUT` is `handled`).
    fn with_exec(mode: &[&str], exec: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("consumers.json");
        let handled = dir.path().join("handled");
        std::fs::create_dir(&handled).unwrap();
        let mut args = vec!["--group", "files"];
        args.extend_from_slice(mode);
        args.extend(["--block", "100ms", "--exec", exec]);
        std::fs::write(
            &config,
            json!({"consumers": [{"name": "files", "args": args}]}).to_string(),
        )
        .unwrap();
        FileConsumer {
            _dir: dir,
            config,
            handled,
        }
    }

    /// Starts `serve --consumers` with it, plus `env` (without `db`, no
    /// PostgreSQL).
    fn serve(&self, ns: &TestNamespace, db: Option<&TestSchema>, env: &[(&str, &str)]) -> Server {
        let path = std::env::var("PATH").unwrap_or_default();
        let mut env = env.to_vec();
        env.extend([("OUT", self.handled.to_str().unwrap()), ("PATH", &path)]);
        Server::start(
            ns,
            db,
            &env,
            &["--consumers", self.config.to_str().unwrap()],
        )
    }

    /// Posts three events to `path`, expecting `status`; their ids.
    fn post_three(&self, server: &Server, path: &str, status: u16) -> Vec<String> {
        (0..3)
            .map(|_| {
                let (s, body) = server.request("POST", path, Some(ADMIN), &event().to_string());
                assert_eq!(s, status, "{body}");
                let v: Value = serde_json::from_str(&body).unwrap();
                v["events"][0]["id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    /// Waits until every event of `ids` was handled.
    fn wait_handled(&self, server: &Server, ids: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while ids.iter().any(|id| !self.handled.join(id).exists()) {
            assert!(
                Instant::now() < deadline,
                "the consumer did not handle every event: {:?}",
                server.output.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_the_consumers_of_its_config_file() {
    let ns = TestNamespace::new(shared_redis_url(), "serve");
    let db = TestSchema::new("serve").await;
    let files = FileConsumer::new(&["--unordered"]);
    let server = files.serve(&ns, Some(&db), &[]);
    let ids = files.post_three(&server, "/v1/events?direct=true", 201);
    files.wait_handled(&server, &ids);
    let (s, metrics) = server.request("GET", "/metrics", Some(READ), "");
    assert_eq!(s, 200);
    assert!(metrics.contains("eventbus_consumed_total"), "{metrics}");
    assert!(
        metrics.contains("eventbus_handler_duration_seconds"),
        "{metrics}"
    );
    let envelope: Value =
        serde_json::from_str(&std::fs::read_to_string(files.handled.join(&ids[0])).unwrap())
            .unwrap();
    assert_eq!(envelope["id"], ids[0].as_str());
    server.sigterm();
    let (code, lines) = server.wait();
    assert_eq!(code, 0, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("consumer stopped")),
        "{lines:#?}"
    );
    ns.cleanup();
}

#[test]
fn refuses_a_bad_consumers_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("consumers.json");
    std::fs::write(
        &config,
        r#"{"consumers": [{"name": "x", "args": ["--exec", "true"]}]}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eventbus"))
        .env_clear()
        .args(["serve", "--consumers", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--group is required"), "{stderr}");
}

/// `serve` on a private Redis Cluster (`REDIS_CLUSTER_NODES`): events posted
/// through the outbox are relayed and handled by a consumer of its config
/// file, and the admin views (streams, groups, readiness) answer.
#[tokio::test(flavor = "multi_thread")]
async fn serves_on_a_cluster() {
    let cluster = eventbus_testkit::RedisCluster::start();
    let ns = TestNamespace::new(shared_redis_url(), "serve-cluster");
    let db = TestSchema::new("servecl").await;
    let files = FileConsumer::new(&[]);
    let nodes = cluster.seed_urls().join(",");
    let server = files.serve(&ns, Some(&db), &[("REDIS_CLUSTER_NODES", &nodes)]);
    let (s, body) = server.request("GET", "/ready", None, "");
    assert_eq!(s, 200, "{body}");
    // Through the outbox (202): the relay of `serve` moves them to the cluster.
    let ids = files.post_three(&server, "/v1/events", 202);
    files.wait_handled(&server, &ids);
    let (s, streams) = server.request("GET", "/v1/streams", Some(READ), "");
    assert_eq!(s, 200, "{streams}");
    let (s, groups) = server.request("GET", "/v1/groups/files", Some(READ), "");
    assert_eq!(s, 200, "{groups}");
    assert!(groups.contains("files"), "{groups}");
    server.sigterm();
    let (code, lines) = server.wait();
    assert_eq!(code, 0, "{lines:#?}");
}

/// Answers `GET path` with the read token as JSON, expecting 200.
fn get_json(server: &Server, path: &str) -> Value {
    let (s, body) = server.request("GET", path, Some(READ), "");
    assert_eq!(s, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Without `DATABASE_URL`: the consumer of the config file dead-letters
/// what it fails into Redis, and `GET /v1/dlq`, `GET /v1/dlq/{id}`,
/// `POST /v1/dlq/replay` and `POST /v1/dlq/{id}/discard` work on those
/// records, refusing bad input with 4xx as with PostgreSQL.
#[tokio::test(flavor = "multi_thread")]
async fn without_postgres_the_dead_letter_routes_work_on_redis() {
    let ns = TestNamespace::new(shared_redis_url(), "serve-dlq");
    let files = FileConsumer::with_exec(
        &["--unordered"],
        "test -e \"$OUT/fixed\" || exit 65; cat > \"$OUT/$EVENTBUS_EVENT_ID\"",
    );
    let server = files.serve(&ns, None, &[]);
    let ids = files.post_three(&server, "/v1/events", 201);
    let deadline = Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let listed = get_json(&server, "/v1/dlq")["dead_letters"].clone();
        if listed.as_array().unwrap().len() == 3 {
            break listed;
        }
        assert!(Instant::now() < deadline, "not dead-lettered: {listed}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut event_ids: Vec<&str> = dead
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event_id"].as_str().unwrap())
        .collect();
    event_ids.sort();
    let mut posted: Vec<&str> = ids.iter().map(String::as_str).collect();
    posted.sort();
    assert_eq!(event_ids, posted);

    let page = get_json(&server, "/v1/dlq?group=files&limit=2&offset=1");
    assert_eq!(page["dead_letters"].as_array().unwrap().len(), 2);
    assert_eq!(page["dead_letters"][0]["id"], dead[1]["id"]);
    let none = get_json(&server, "/v1/dlq?group=other&status=new");
    assert!(none["dead_letters"].as_array().unwrap().is_empty());
    for bad in [
        "/v1/dlq?error_class=weird",
        "/v1/dlq?limit=0",
        "/v1/dlq/not-a-uuid",
    ] {
        let (s, body) = server.request("GET", bad, Some(READ), "");
        assert_eq!(s, 400, "{bad}: {body}");
    }
    let (s, _) = server.request(
        "GET",
        &format!("/v1/dlq/{}", uuid::Uuid::now_v7()),
        Some(READ),
        "",
    );
    assert_eq!(s, 404);
    let (a, b) = (
        dead[0]["id"].as_str().unwrap(),
        dead[1]["id"].as_str().unwrap(),
    );
    let shown = get_json(&server, &format!("/v1/dlq/{a}"));
    assert_eq!(shown["dead_letter"]["group"], "files");
    assert_eq!(shown["dead_letter"]["error_class"], "permanent");
    assert_eq!(shown["history"][0]["action"], "dead_lettered");

    let (s, _) = server.request("POST", "/v1/dlq/replay", Some(ADMIN), "{}");
    assert_eq!(s, 400, "a replay must say which");
    let (s, _) = server.request("POST", "/v1/dlq/replay", Some(READ), r#"{"all":true}"#);
    assert_eq!(s, 403);
    let (s, body) = server.request(
        "POST",
        "/v1/dlq/replay",
        Some(ADMIN),
        r#"{"group":"files","dry_run":true}"#,
    );
    assert_eq!(s, 200, "{body}");
    let dry: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (dry["selected"].as_array().unwrap().len(), &dry["replayed"]),
        (3, &json!(0))
    );

    let discard = format!("/v1/dlq/{b}/discard");
    let (s, body) = server.request("POST", &discard, Some(ADMIN), "");
    assert_eq!(s, 200, "{body}");
    let (s, _) = server.request("POST", &discard, Some(ADMIN), "");
    assert_eq!(s, 404, "discarded already");

    // Fixed: the replays of the other two are handled by the group.
    std::fs::write(files.handled.join("fixed"), "").unwrap();
    let (s, body) = server.request("POST", "/v1/dlq/replay", Some(ADMIN), r#"{"all":true}"#);
    assert_eq!(s, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["replayed"], 2);
    let replayed: Vec<String> = dead
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["id"] != b)
        .map(|d| d["event_id"].as_str().unwrap().to_owned())
        .collect();
    files.wait_handled(&server, &replayed);
    let statuses = |status: &str| {
        get_json(&server, &format!("/v1/dlq?status={status}"))["dead_letters"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(
        (statuses("replayed"), statuses("discarded"), statuses("new")),
        (2, 1, 0)
    );
    let shown = get_json(&server, &format!("/v1/dlq/{a}"));
    assert_eq!(shown["dead_letter"]["replay_count"], 1);
    assert_eq!(shown["history"][1]["action"], "replayed");
    assert_eq!(shown["history"][1]["detail"]["by"], "api");

    server.sigterm();
    let (code, lines) = server.wait();
    assert_eq!(code, 0, "{lines:#?}");
}

/// True when the server closes `s` (end of stream or reset) within
/// `within`; what it sends first is read and dropped.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// How long a probe may take to be answered while the server is under
/// attack (generous: the point is that it is answered at all).
const ANSWERED: Duration = Duration::from_secs(5);

/// More connections than the process has file descriptors (300 under
/// `ulimit -n 256`), each sending nothing: `/health` and an authenticated
/// request are still answered (the connections idle longest are closed to
/// make room), and every idle connection is closed within its idle
/// timeout (plus a margin). Before, the idle sockets held every
/// descriptor and the probe was never accepted.
#[test]
fn idle_connections_do_not_starve_the_api_under_a_small_fd_limit() {
    let ns = TestNamespace::new(shared_redis_url(), "serve-fds");
    let idle = Duration::from_secs(3);
    let server = Server::start_with_fd_limit(256, &ns, &[("EVENT_BUS_HTTP_IDLE_TIMEOUT", "3s")]);
    let mut quiet: Vec<(TcpStream, Instant)> = (0..300)
        .map(|_| (TcpStream::connect(&server.addr).unwrap(), Instant::now()))
        .collect();
    let health = server.raw(
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ANSWERED,
    );
    assert_eq!(health.expect("/health is answered").0, 200);
    let streams = server.raw(
        &format!("GET /v1/streams HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READ}\r\nConnection: close\r\n\r\n"),
        ANSWERED,
    );
    assert_eq!(streams.expect("/v1/streams is answered").0, 200);
    let margin = Duration::from_secs(3);
    for (i, (s, opened)) in quiet.iter_mut().enumerate() {
        let left = (*opened + idle + margin).saturating_duration_since(Instant::now());
        assert!(
            closed_within(s, left.max(Duration::from_millis(1))),
            "idle connection {i} still open {:?} after it was opened",
            opened.elapsed()
        );
    }
    drop(quiet);
    let (s, _) = server.request("GET", "/health", None, "");
    assert_eq!(s, 200);
    server.sigterm();
    let (code, lines) = server.wait();
    assert_eq!(code, 0, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("lowered to fit the file-descriptor limit")),
        "{lines:#?}"
    );
    ns.cleanup();
}

/// Half a request line and then nothing (slowloris) is closed after the
/// header timeout, while a connection that sent nothing waits for its own
/// (longer) idle timeout.
#[test]
fn a_half_sent_request_line_is_closed_after_the_header_timeout() {
    let ns = TestNamespace::new(shared_redis_url(), "serve-slow");
    let server = Server::start(
        &ns,
        None,
        &[
            ("EVENT_BUS_HTTP_HEADER_TIMEOUT", "1s"),
            ("EVENT_BUS_HTTP_IDLE_TIMEOUT", "60s"),
        ],
        &[],
    );
    let mut quiet = TcpStream::connect(&server.addr).unwrap();
    let mut slow = TcpStream::connect(&server.addr).unwrap();
    slow.write_all(b"GET /heal").unwrap();
    let sent = Instant::now();
    assert!(
        closed_within(&mut slow, Duration::from_secs(1) + ANSWERED),
        "a half-sent request line is still open after {:?}",
        sent.elapsed()
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "{:?}",
        sent.elapsed()
    );
    assert!(
        !closed_within(&mut quiet, Duration::from_millis(300)),
        "the idle connection was closed before its idle timeout"
    );
    let (s, _) = server.request("GET", "/health", None, "");
    assert_eq!(s, 200);
    server.sigterm();
    let (code, lines) = server.wait();
    assert_eq!(code, 0, "{lines:#?}");
    ns.cleanup();
}

/// A body that stops coming is answered 408 after the request timeout and
/// the connection closed.
#[test]
fn a_stalled_body_is_answered_408_after_the_request_timeout() {
    let ns = TestNamespace::new(shared_redis_url(), "serve-stall");
    let server = Server::start(&ns, None, &[("EVENT_BUS_HTTP_REQUEST_TIMEOUT", "1s")], &[]);
    let started = Instant::now();
    let (s, body) = server
        .raw(
            &format!("POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"type\":"),
            Duration::from_secs(1) + ANSWERED,
        )
        .expect("answered after the request timeout");
    assert_eq!(s, 408, "{body}");
    assert!(body.contains("request_timeout"), "{body}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    server.sigterm();
    let (code, lines) = server.wait();
    assert_eq!(code, 0, "{lines:#?}");
    ns.cleanup();
}

/// The client's mistakes over a socket, with PostgreSQL: 4xx, never 503,
/// and no ERROR in the log. A declared `Content-Length` over the limit is
/// refused without any body sent; U+0000 in each dead-letter filter and an
/// absurd `since` are 400; U+0000 in `source` or a header through the
/// outbox is 422; a batch of invalid events as large as the limit gets an
/// answer listing the first errors and counting all; the scheme `bearer`
/// in lower case is accepted.
#[tokio::test(flavor = "multi_thread")]
async fn client_mistakes_are_answered_4xx_over_a_socket() {
    let ns = TestNamespace::new(shared_redis_url(), "serve-4xx");
    let db = TestSchema::new("serve4xx").await;
    let server = Server::start(&ns, Some(&db), &[], &[]);

    for token in [Some(ADMIN), None] {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let (s, body) = server
            .raw(
                &format!("POST /v1/events HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n"),
                ANSWERED,
            )
            .expect("refused before the body is sent");
        assert_eq!(s, 413, "{body}");
    }

    for query in [
        "group=a%00b",
        "type=%00",
        "key=k%00",
        "error_class=permanent&type=a%00",
        "since=-100000-01-01T00:00:00Z",
        "since=%2B200000-01-01T00:00:00Z",
    ] {
        let (s, body) = server.request("GET", &format!("/v1/dlq?{query}"), Some(READ), "");
        assert_eq!(s, 400, "{query}: {body}");
    }
    let (s, body) = server.request(
        "POST",
        "/v1/dlq/replay",
        Some(ADMIN),
        r#"{"type": "a\u0000", "dry_run": true}"#,
    );
    assert_eq!(s, 400, "{body}");

    let mut in_source = event();
    in_source["source"] = json!("svc\u{0}");
    let mut in_header = event();
    in_header["headers"] = json!({"h": "v\u{0}"});
    for e in [in_source, in_header] {
        let (s, body) = server.request("POST", "/v1/events", Some(ADMIN), &e.to_string());
        assert_eq!(s, 422, "{body}");
    }

    let mut invalid = event();
    invalid["data"] = json!({"nonsense": "x".repeat(2000)});
    let one = invalid.to_string().len() + 1;
    let events: Vec<Value> = std::iter::repeat_n(invalid, 2 * 1024 * 1024 / one - 10).collect();
    let n = events.len();
    let batch = json!({ "events": events }).to_string();
    let (s, body) = server.request("POST", "/v1/events?direct=true", Some(ADMIN), &batch);
    assert_eq!(s, 422);
    assert!(body.len() < 200_000, "a {}-byte answer", body.len());
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["error"]["invalid_events"], n, "{answer}");
    assert_eq!(answer["error"]["truncated"], true);

    let (s, body) = server
        .raw(
            &format!("GET /v1/streams HTTP/1.1\r\nHost: x\r\nAuthorization: bearer {READ}\r\nConnection: close\r\n\r\n"),
            ANSWERED,
        )
        .unwrap();
    assert_eq!(s, 200, "lower-case bearer: {body}");

    server.sigterm();
    let (code, lines) = server.wait();
    assert_eq!(code, 0, "{lines:#?}");
    let errors: Vec<&String> = lines.iter().filter(|l| l.contains("\"ERROR\"")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    ns.cleanup();
}

/// Weak tokens are refused at start, exit 2, naming the variable and never
/// printing the token.
#[test]
fn weak_tokens_are_refused_at_start() {
    for var in ["EVENT_BUS_API_TOKEN", "EVENT_BUS_API_READ_TOKEN"] {
        for weak in [
            " ".repeat(16),
            "a".repeat(24),
            "Tab\tin-the-token-0123456789".to_owned(),
            "Weak-but-short".to_owned(),
        ] {
            let mut child = Command::new(env!("CARGO_BIN_EXE_eventbus"))
                .env_clear()
                .env("REDIS_URL", shared_redis_url())
                .env(var, &weak)
                .args(["serve", "--addr", "127.0.0.1:0"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("serve started with {var}={weak:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{var}={weak:?}: {stderr}");
            assert!(stderr.contains(var), "{stderr}");
            assert!(
                !stderr.contains(weak.trim()) || weak.trim().is_empty(),
                "{stderr}"
            );
        }
    }
}
