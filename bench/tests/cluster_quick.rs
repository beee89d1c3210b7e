//! `bench/run --quick --cluster` (one Redis vs a 3-master Redis Cluster,
//! both private, small sizes) runs to the end and exits 0. Only the exit
//! code and the presence of the comparison are checked, never a figure:
//! speed is measured, not asserted. A file of its own, so cargo runs it
//! after `quick.rs`, not beside it on the same cores.

mod common;

#[test]
fn quick_cluster_run_succeeds() {
    let (status, stdout) = common::bench_run(&["--quick", "--cluster"]);
    assert!(
        status.success(),
        "bench/run --quick --cluster failed with {status}"
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
