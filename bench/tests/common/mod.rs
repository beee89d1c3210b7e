//! Runs `bench/run` with the `eventbus-bench` this `cargo test` built (no
//! second, release build), echoing its output.

use std::process::Command;

/// `bench/run ARGS`: its exit status and standard output.
pub(crate) fn bench_run(args: &[&str]) -> (std::process::ExitStatus, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is inside the workspace");
    let out = Command::new("bash")
        .arg(root.join("bench/run"))
        .args(args)
        .current_dir(root)
        .env("EVENTBUS_BENCH_BIN", env!("CARGO_BIN_EXE_eventbus-bench"))
        .output()
        .expect("bench/run starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    (out.status, stdout)
}
