//! Hardening of the command line, through the built binary: secrets never
//! reach stdout or stderr (URLs, DSNs, headers), settings a server refuses
//! are bad input (exit 2) rather than an outage (69), secret push-sink
//! headers come from a file or the environment and never from a flag, and
//! flags and variables are checked at start (namespaces, empty commands,
//! durations Redis cannot take, input files over the event size limit).

#[allow(dead_code)] // each test file uses some of the helpers
mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eventbus_testkit::{shared_database_url, shared_redis_url, HttpTestServer, Reply, TestSchema};

use common::*;

/// A secret that must never be printed.
const SENTINEL: &str = "SENTINEL-c0ffee";

/// Runs `cmd`, killing it after `within` (then the code is -1): commands
/// that should be refused at once must not hang a test that checks them.
fn run_within(mut cmd: Command, within: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the eventbus binary starts");
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + within;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

#[track_caller]
fn assert_refused(out: &Output, code: i32, needle: &str) {
    assert_eq!(out.code, code, "stderr: {}", out.stderr);
    let line = out.error_line();
    assert!(line.contains(needle), "{needle:?} not in {line:?}");
    assert_hidden(out);
}

#[track_caller]
fn assert_hidden(out: &Output) {
    assert!(
        !out.stdout.contains(SENTINEL) && !out.stderr.contains(SENTINEL),
        "the secret was printed: stdout {:?} stderr {:?}",
        out.stdout,
        out.stderr
    );
}

fn with_database(url: &str, args: &[&str]) -> Command {
    let mut c = bare_eventbus();
    c.env("EVENT_BUS_NAMESPACE", "hardening")
        .env("DATABASE_URL", url)
        .args(args);
    c
}

#[test]
fn database_passwords_never_show_in_errors() {
    // Unreachable: exit 69 once the pool gives up (30 s), so in a thread.
    let unreachable = std::thread::spawn(|| {
        let url = format!("postgres://u@127.0.0.1:1/x?password={SENTINEL}&sslpassword={SENTINEL}");
        run_within(with_database(&url, &["migrate"]), Duration::from_secs(90))
    });
    let cases = [
        // a key=value DSN: not supported, said so, the password hidden
        (
            format!("host=127.0.0.1 port=1 user=u password={SENTINEL} dbname=x"),
            2,
            "password=***",
        ),
        (
            format!("host=127.0.0.1 password='{SENTINEL} with spaces' dbname=x"),
            2,
            "not a PostgreSQL URL",
        ),
        // a server that refuses the role: bad input, password hidden
        (
            format!("postgres://no_such_role_14:{SENTINEL}@127.0.0.1:5432/test"),
            2,
            "role \"no_such_role_14\" does not exist",
        ),
    ];
    for (url, code, needle) in &cases {
        let out = run_within(with_database(url, &["migrate"]), Duration::from_secs(60));
        assert_refused(&out, *code, needle);
        // the same given as a flag
        let mut c = with_database("", &["migrate", "--database-url", url]);
        c.env_remove("DATABASE_URL");
        assert_refused(&run_within(c, Duration::from_secs(60)), *code, needle);
    }
    let out = unreachable.join().unwrap();
    assert_refused(
        &out,
        69,
        "cannot reach PostgreSQL at postgres://u@127.0.0.1:1/x?password=***",
    );
}

#[test]
fn settings_a_server_refuses_are_bad_input_not_an_outage() {
    let db = shared_database_url();
    let no_db = db
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/no_such_db_14"))
        .unwrap();
    for (url, needle) in [
        (
            "mysql://u@127.0.0.1:3306/x".to_owned(),
            "not a PostgreSQL URL",
        ),
        (
            "postgres://no_such_role_14@127.0.0.1:5432/test".to_owned(),
            "role",
        ),
        (no_db, "database \"no_such_db_14\" does not exist"),
    ] {
        let out = run_within(with_database(&url, &["migrate"]), Duration::from_secs(60));
        assert_refused(&out, 2, needle);
    }
    // Redis: an unknown user or wrong password, a database that does not exist
    let ns = namespace();
    let mut wrong_user = url::Url::parse(&shared_redis_url()).unwrap();
    wrong_user.set_username("nobody_14").unwrap();
    wrong_user.set_password(Some(SENTINEL)).unwrap();
    let mut no_such_db = url::Url::parse(&shared_redis_url()).unwrap();
    no_such_db.set_path("/99");
    for (url, needle) in [
        (wrong_user, "refused the connection"),
        (no_such_db, "DB index is out of range"),
    ] {
        let mut c = eventbus(&ns, &["streams"]);
        c.env("REDIS_URL", url.as_str());
        assert_refused(&run_within(c, Duration::from_secs(60)), 2, needle);
    }
}

#[test]
fn secret_headers_are_refused_as_flags_and_never_echoed() {
    let ns = namespace();
    for (header, needle) in [
        (
            format!("Authorization=Bearer {SENTINEL}"),
            "--http-headers-file",
        ),
        (
            format!("authorization: Bearer {SENTINEL}"),
            "--http-headers-file",
        ),
        (format!("X-Api-Key={SENTINEL}"), "EVENT_BUS_HTTP_HEADERS"),
        (format!("Cookie=session={SENTINEL}"), "flags show in `ps`"),
        (
            format!("Authorization Bearer {SENTINEL}"),
            "expected NAME=VALUE",
        ),
        (format!("X-Plain=ok{SENTINEL}\u{7}"), "control characters"),
    ] {
        let c = eventbus(
            &ns,
            &[
                "consume",
                "--group",
                "g",
                "--http",
                "http://127.0.0.1:9/hook",
                "--http-header",
                &header,
            ],
        );
        let out = run_within(c, Duration::from_secs(20));
        assert_refused(&out, 2, "--http-header #1");
        assert!(
            out.error_line().contains(needle),
            "{needle}: {}",
            out.stderr
        );
    }
    // a secret URL where clap expects no argument is not echoed either
    let out = run_within(
        eventbus(&ns, &["streams", &format!("postgres://u:{SENTINEL}@h/x")]),
        Duration::from_secs(20),
    );
    assert_refused(&out, 2, "unexpected argument");
    // the help recommends the file and the variable, not a flag
    let help = run_within(
        eventbus(&ns, &["consume", "--help"]),
        Duration::from_secs(20),
    );
    assert_eq!(help.code, 0);
    assert!(
        help.stdout.contains("--http-headers-file"),
        "{}",
        help.stdout
    );
    assert!(
        help.stdout.contains("EVENT_BUS_HTTP_HEADERS"),
        "{}",
        help.stdout
    );
    assert!(
        !help.stdout.contains("Authorization=Bearer"),
        "{}",
        help.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_headers_come_from_a_file_or_the_environment() {
    let ns = namespace();
    let server = HttpTestServer::start(|_, _| Reply::status(204)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("headers");
    std::fs::write(
        &file,
        format!("# the CRM's token\nAuthorization: Bearer {SENTINEL}\n\n"),
    )
    .unwrap();
    let out = run(
        eventbus(&ns, &["publish", "--no-validate", "--batch", "-"]),
        Some(r#"{"type":"work_item.created","key":"wi-1","data":{"n":1}}"#),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let url = format!("{}/hook", server.url());
    let mut c = eventbus(
        &ns,
        &[
            "consume",
            "--no-validate",
            "--group",
            "g",
            "--topics",
            "work_item",
            "--unordered",
            "--max-events",
            "1",
            "--http",
            &url,
            "--http-headers-file",
            file.to_str().unwrap(),
            "--http-header",
            "X-Tenant=acme",
        ],
    );
    c.env("EVENT_BUS_HTTP_HEADERS", "X-Api-Key: from-env\n");
    let out = tokio::task::spawn_blocking(move || run_within(c, Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_hidden(&out);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let h = &requests[0].headers;
    assert_eq!(h["authorization"], format!("Bearer {SENTINEL}"));
    assert_eq!(h["x-api-key"], "from-env");
    assert_eq!(h["x-tenant"], "acme");
}

#[test]
fn namespaces_commands_and_durations_are_checked_at_start() {
    let ns = namespace();
    for (value, needle) in [
        ("", "EVENT_BUS_NAMESPACE: is set but empty"),
        ("*", "EVENT_BUS_NAMESPACE"),
        ("app?", "wildcards"),
        ("app[12]", "wildcards"),
    ] {
        let mut c = eventbus(&ns, &["streams"]);
        c.env("EVENT_BUS_NAMESPACE", value);
        assert_refused(&run_within(c, Duration::from_secs(20)), 2, needle);
    }
    let out = run_within(
        eventbus(&ns, &["streams", "--namespace", "team-*"]),
        Duration::from_secs(20),
    );
    assert_refused(&out, 2, "--namespace");

    let consume = ["consume", "--group", "g", "--topics", "work_item"];
    for (args, needle) in [
        (&["--exec", ""][..], "--exec"),
        (&["--exec", "   "], "--exec"),
        (&["--inbox", "--sql", ""], "--sql"),
        (
            &["--claim-idle", "18446744073709551615s"],
            "longer than 24h",
        ),
        (
            &["--claim-idle", "18446744073709551615h"],
            "longer than 24h",
        ),
        (&["--block", "18446744073709551615ms"], "longer than 24h"),
        (&["--block", "25h"], "longer than 24h"),
        (
            &["--exec", "true", "--exec-timeout", "99999999999999999999s"],
            "longer than 24h",
        ),
    ] {
        let mut c = eventbus(&ns, &consume);
        c.args(args);
        // Accepted, these ran until killed (and --exec '' acknowledged
        // every event unhandled).
        assert_refused(&run_within(c, Duration::from_secs(20)), 2, needle);
    }
}

/// `eventbus publish` with at most 1 GB of address space, so that a
/// regression reading `/dev/zero` to its end fails instead of eating the
/// machine's memory.
fn publish_limited(ns: &eventbus_testkit::TestNamespace, args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("ulimit -v 1000000 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_eventbus"))
        .arg("publish")
        .args(args);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("EVENT_BUS_") || k.starts_with("REDIS_") || k == "DATABASE_URL" {
            c.env_remove(k.as_ref());
        }
    }
    c.env("REDIS_URL", ns.url())
        .env("EVENT_BUS_NAMESPACE", ns.name())
        .env("EVENT_BUS_LOG", "warn");
    c
}

#[test]
fn input_files_are_read_up_to_the_event_size_limit() {
    let ns = namespace();
    let single = [
        "--no-validate",
        "--type",
        "work_item.x",
        "--key",
        "k",
        "--data",
    ];
    let out = run_within(
        publish_limited(&ns, &[&single[..], &["@/dev/zero"]].concat()),
        Duration::from_secs(20),
    );
    assert_refused(&out, 2, "larger than 1048576 bytes");
    let out = run_within(
        publish_limited(&ns, &["--no-validate", "--batch", "/dev/zero"]),
        Duration::from_secs(20),
    );
    assert_refused(&out, 2, "line 1 is larger than 1048576 bytes");

    // The limit is EVENT_BUS_MAX_EVENT_BYTES: one byte over is refused,
    // at the limit is published.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.json");
    let body = format!(r#"{{"blob":"{}"}}"#, "x".repeat(990));
    assert_eq!(body.len(), 1001);
    std::fs::write(&data, &body).unwrap();
    let at_file = format!("@{}", data.display());
    let mut c = publish_limited(&ns, &[&single[..], &[at_file.as_str()]].concat());
    c.env("EVENT_BUS_MAX_EVENT_BYTES", "1000");
    assert_refused(
        &run_within(c, Duration::from_secs(20)),
        2,
        "larger than 1000 bytes",
    );
    let mut c = publish_limited(&ns, &[&single[..], &[at_file.as_str()]].concat());
    c.env("EVENT_BUS_MAX_EVENT_BYTES", "1001");
    let out = run_within(c, Duration::from_secs(60));
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_postgres_refuses_in_an_outbox_batch_are_bad_input() {
    let ns = namespace();
    let db = TestSchema::new("hardcli").await;
    for line in [
        r#"{"type":"work_item.x","key":"k","data":{},"source":"a\u0000b"}"#,
        r#"{"type":"work_item.x","key":"k","data":{},"headers":{"h":"a\u0000b"}}"#,
        r#"{"type":"work_item.x","key":"k\u0000","data":{}}"#,
    ] {
        let mut c = eventbus_pg(&ns, db.url(), db.name(), 8);
        c.args(["publish", "--no-validate", "--via-outbox", "--batch", "-"]);
        let input = format!(
            "{}\n{line}\n",
            r#"{"type":"work_item.x","key":"k","data":{}}"#
        );
        let out = tokio::task::spawn_blocking(move || run(c, Some(&input)))
            .await
            .unwrap();
        assert_eq!(out.code, 2, "{line}: {}", out.stderr);
        assert!(out.error_line().contains("U+0000"), "{}", out.stderr);
    }
    let (rows,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        db.table("eventbus_outbox")
    )))
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(rows, 0, "a refused batch wrote nothing");
}
