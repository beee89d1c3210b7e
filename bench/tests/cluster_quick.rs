//! `bench/run --quick --cluster` (one Redis vs a 3-master Redis Cluster,
//! both private, small sizes) runs to the end and exits 0. Only the exit
//! code and the presence of the comparison are checked, never a figure:
//! speed is measured, not asserted. A file of its own, so cargo runs it
//! after `quick.rs`, not beside it on the same cores.

use std::process::Command;

#[test]
fn quick_cluster_run_succeeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is inside the workspace");
    let out = Command::new("bash")
        .arg(root.join("bench/run"))
        .args(["--quick", "--cluster"])
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
        "bench/run --quick --cluster failed with {}",
        out.status
    );
    assert!(
        stdout.contains("one Redis vs the cluster"),
        "no comparison table in the output"
    );
    assert!(
        !stdout.contains("failed:"),
        "a scenario failed on one of the deployments"
    );
}
