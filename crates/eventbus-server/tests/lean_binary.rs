//! The `eventbus` binary links neither the benchmark harness nor the
//! testkit; `eventbus bench` runs the separate `eventbus-bench` program,
//! passing its arguments, the configured servers and its exit status.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn eventbus() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_eventbus"));
    c.env_remove("EVENTBUS_BENCH_BIN")
        .env("REDIS_URL", "redis://127.0.0.1:6379");
    c
}

#[test]
fn the_binary_does_not_link_the_bench_harness_or_the_testkit() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "eventbus-server",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    for crate_name in [
        "eventbus-bench ",
        "eventbus-testkit ",
        "criterion ",
        "proptest ",
    ] {
        assert!(
            !tree.lines().any(|l| l.starts_with(crate_name)),
            "eventbus links {crate_name}:\n{tree}"
        );
    }
}

#[test]
fn bench_without_the_bench_program_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = eventbus()
        .arg("bench")
        .env("EVENTBUS_BENCH_BIN", dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cargo build --release -p eventbus-bench"),
        "{err}"
    );
    // Not on PATH and not beside the binary either: a link to the binary in
    // a directory of its own (a workspace build may have put the real
    // eventbus-bench beside the original, which would run a whole benchmark).
    let alone = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let exe = alone.path().join("eventbus");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_eventbus"), &exe).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_eventbus"), &exe).unwrap();
    }
    let out = Command::new(&exe)
        .arg("bench")
        .env_remove("EVENTBUS_BENCH_BIN")
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("EVENTBUS_BENCH_BIN"), "{err}");
}

#[test]
fn bench_passes_arguments_servers_and_exit_status_through() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("eventbus-bench");
    let log = dir.path().join("log");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@|$REDIS_URL|$EVENT_BUS_PARTITIONS\" > {}\nexit 3\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = eventbus()
        .args(["bench", "--only", "publish", "--json"])
        .env("EVENTBUS_BENCH_BIN", &script)
        .env("EVENT_BUS_PARTITIONS", "8")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        seen.trim(),
        "--only publish --json|redis://127.0.0.1:6379|8"
    );
    // --help is the bench program's, not ours.
    let out = eventbus()
        .args(["bench", "--help"])
        .env("EVENTBUS_BENCH_BIN", &script)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .starts_with("--help|"));
}
