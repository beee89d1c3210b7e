//! Imports run one way: no cycle between the top-level modules of the
//! library (`crates/eventbus/src`) or of the server
//! (`crates/eventbus-server/src`), nor between the server's commands
//! (`src/cmd/*`). A module's imports are the `crate::name` paths (and
//! `super::name` inside `cmd/`) in its files, comments aside.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names a file refers to after `prefix` (`crate::x`, `crate::{x, y}`).
fn referred(text: &str, prefix: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices(prefix) {
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                out.insert(ident(part.trim()));
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

/// Module → the sibling modules it imports, for the modules in `dir`
/// (`name.rs` or `name/`), looking for `prefix` paths.
fn graph(dir: &Path, prefix: &str, skip: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if (path.is_dir() || path.extension().is_some_and(|e| e == "rs"))
            && !skip.contains(&name.as_str())
        {
            modules.insert(name);
        }
    }
    let mut g = BTreeMap::new();
    for m in &modules {
        let mut files = Vec::new();
        let as_dir = dir.join(m);
        if as_dir.is_dir() {
            rust_files(&as_dir, &mut files);
        }
        if dir.join(format!("{m}.rs")).is_file() {
            files.push(dir.join(format!("{m}.rs")));
        }
        let mut deps = BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            deps.extend(
                referred(&text, prefix)
                    .into_iter()
                    .filter(|d| d != m && modules.contains(d)),
            );
        }
        g.insert(m.clone(), deps);
    }
    g
}

/// A cycle in `g`, if there is one.
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut c = path[at..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for d in &g[n] {
            if let Some(c) = visit(d, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

fn assert_acyclic(dir: &Path, prefix: &str, skip: &[&str]) {
    let g = graph(dir, prefix, skip);
    assert!(g.len() > 3, "no modules found in {}", dir.display());
    if let Some(c) = cycle(&g) {
        panic!(
            "imports run in a circle in {}: {}\n{g:#?}",
            dir.display(),
            c.join(" → ")
        );
    }
}

fn crates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

#[test]
fn the_library_modules_import_one_way() {
    assert_acyclic(&crates().join("eventbus/src"), "crate::", &["lib"]);
}

#[test]
fn the_server_modules_import_one_way() {
    assert_acyclic(
        &crates().join("eventbus-server/src"),
        "crate::",
        &["lib", "main"],
    );
}

#[test]
fn the_commands_import_one_way() {
    assert_acyclic(
        &crates().join("eventbus-server/src/cmd"),
        "super::",
        &["mod"],
    );
}

#[test]
fn a_cycle_is_found() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), ["b".to_owned()].into()),
        ("b".to_owned(), ["c".to_owned()].into()),
        ("c".to_owned(), ["a".to_owned()].into()),
    ]
    .into();
    assert_eq!(cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    assert_eq!(
        referred(
            "use crate::{x, y::z};\n// crate::w\nlet _ = crate::v::f();",
            "crate::"
        ),
        ["v", "x", "y"].into_iter().map(String::from).collect()
    );
}
