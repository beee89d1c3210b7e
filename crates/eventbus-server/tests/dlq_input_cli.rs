//! Absurd times given to `eventbus dlq` are the user's mistake: exit 2
//! with the reason, never a panic or PostgreSQL's refusal (exit 1), with
//! PostgreSQL and without it. (U+0000, refused the same way by the store,
//! cannot be in an argument: the HTTP tests cover it.)

#[allow(dead_code)] // each test file uses some of the helpers
mod common;

use std::process::Command;

use eventbus_testkit::TestSchema;

#[tokio::test(flavor = "multi_thread")]
async fn absurd_times_exit_2_and_huge_ages_purge_without_a_panic() {
    let ns = common::namespace();
    let db = TestSchema::new("dlqinput").await;
    let with_pg = || common::eventbus_pg(&ns, db.url(), db.name(), 4);
    let redis_only = || common::eventbus(&ns, &[]);
    for (backend, cmd) in [
        ("postgres", &with_pg as &dyn Fn() -> Command),
        ("redis", &redis_only),
    ] {
        let run = |args: &[&str]| {
            let mut c = cmd();
            c.args(args);
            common::run(c, None)
        };
        // Earlier than PostgreSQL can compare (4713 BC): refused by the store.
        let out = run(&["dlq", "list", "--since", "10000000d"]);
        assert_eq!(out.code, 2, "{backend}: {}", out.stderr);
        assert!(
            out.error_line().contains("0000-9999"),
            "{backend}: {}",
            out.stderr
        );
        // Further back than a time can be written: refused as the flag is read.
        for verb in ["list", "replay"] {
            let out = run(&["dlq", verb, "--since", "9999999999d"]);
            assert_eq!(out.code, 2, "{backend} {verb}: {}", out.stderr);
            assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        }
        // Older than the year 0000: nothing is, and nothing panics.
        let out = run(&["dlq", "purge", "--older-than", "9999999999d", "--dry-run"]);
        assert_eq!(out.code, 0, "{backend}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    ns.cleanup();
}
