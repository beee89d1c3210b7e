//! Embeds the event catalogue (`schemas/` at the workspace root) into the
//! library: writes `$OUT_DIR/embedded_schemas.rs`, a list of
//! `(relative path, include_str!(absolute path))` for every `.json` file,
//! sorted by path. Cargo reruns this when anything under `schemas/` changes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let schemas = manifest_dir.join("../../schemas");
    println!("cargo:rerun-if-changed={}", schemas.display());
    let mut files = Vec::new();
    if schemas.is_dir() {
        collect(&schemas, &schemas, &mut files);
    }
    files.sort();
    let mut out = String::from(
        "/// The catalogue files compiled into this build: (path under `schemas/`, contents).\n\
         pub(crate) static EMBEDDED: &[(&str, &str)] = &[\n",
    );
    for (relative, absolute) in &files {
        writeln!(out, "    ({relative:?}, include_str!({absolute:?})),")
            .expect("write to a string");
    }
    out.push_str("];\n");
    let target =
        PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("embedded_schemas.rs");
    std::fs::write(&target, out).expect("write embedded_schemas.rs");
}

/// Every `.json` file under `dir`, as (path relative to `root` with `/`, absolute path).
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            let relative = path
                .strip_prefix(root)
                .expect("under the root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let absolute = path.canonicalize().expect("canonical path");
            out.push((relative, absolute.to_string_lossy().into_owned()));
        }
    }
}
