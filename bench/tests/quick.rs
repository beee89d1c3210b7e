//! `bench/run --quick` runs to the end and exits 0. Only the exit code is
//! checked, never a figure: speed is measured, not asserted. Peers that
//! cannot be built or installed (offline) are skipped by the script with a
//! reason, which does not fail the run.

use std::process::Command;

#[test]
fn quick_run_succeeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is inside the workspace");
    let out = Command::new("bash")
        .arg(root.join("bench/run"))
        .arg("--quick")
        .current_dir(root)
        // The binary this `cargo test` built: no second (release) build.
        .env("EVENTBUS_BENCH_BIN", env!("CARGO_BIN_EXE_eventbus-bench"))
        .output()
        .expect("bench/run starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "bench/run --quick failed with {}",
        out.status
    );
}
