//! The CI-sized fuzz run: every committed corpus file (`fuzz/corpus/<target>/`)
//! goes through the same property checks as the fuzz targets
//! (`fuzz/src/checks.rs`, included by path), on stable and in seconds.
//! Fuzzing itself (cargo-fuzz, libFuzzer) is in docs/fuzzing.md.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

// The fuzz crate's checks are `pub` for its targets; here they are a private module.
#[allow(unreachable_pub)]
#[path = "../../../fuzz/src/checks.rs"]
mod checks;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no corpus files", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Runs `check` on every corpus file of `target`; fails naming each file that panicked.
fn replay(target: &str, check: Check) {
    let failed: Vec<String> = corpus(target)
        .iter()
        .filter(|(_, bytes)| catch_unwind(AssertUnwindSafe(|| check(bytes))).is_err())
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: properties fail on {failed:#?}"
    );
}

/// A target's property check: panics when a property fails.
type Check = fn(&[u8]);

/// Every fuzz target (`fuzz/fuzz_targets/`) and its check.
const TARGETS: [(&str, Check); 5] = [
    ("envelope_fields", checks::envelope_fields),
    ("outbox_row", checks::outbox_row_to_envelope),
    ("deadletter_raw_fields", checks::deadletter_raw_fields),
    ("deadletter_storable", checks::deadletter_storable),
    ("http_events_body", checks::http_events_body),
];

#[test]
fn every_corpus_file_keeps_its_targets_properties() {
    for (target, check) in TARGETS {
        replay(target, check);
    }
}

#[test]
fn every_fuzz_target_is_replayed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    targets.sort();
    let mut replayed: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
    replayed.sort();
    assert_eq!(targets, replayed);
}

/// The seed format of `envelope_fields` expresses any fields: joining what
/// a corpus file splits into gives an input that splits into the same.
#[test]
fn field_input_format_round_trips() {
    for (path, bytes) in corpus("envelope_fields") {
        let fields = checks::split_fields(&bytes);
        assert_eq!(
            checks::split_fields(&checks::join_fields(&fields)),
            fields,
            "{}",
            path.display()
        );
    }
    let odd: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"a=b\\".to_vec(), b"\n\\=\\\\x\\".to_vec()),
        (Vec::new(), Vec::new()),
        (vec![0xff, b'\\'], vec![b'=', 0]),
    ];
    assert_eq!(checks::split_fields(&checks::join_fields(&odd)), odd);
}
