//! `eventbus schemas list|show|validate|check|docs`, and what the other
//! commands use of the catalogue: loading it (embedded, or
//! `EVENT_BUS_SCHEMA_DIR`), validating events before `publish` sends
//! anything, and the validating wrapper of `consume`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use eventbus::catalog::{CompatMode, CompatReport};
use eventbus::{Catalog, Envelope};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::schemas::{SchemasArgs, SchemasCommand};
use crate::config::Settings;
use crate::error::{CliError, Result};
use crate::output;

/// The catalogue: `EVENT_BUS_SCHEMA_DIR` when set, else the embedded one.
pub(crate) fn load_catalog(settings: &Settings) -> Result<Arc<Catalog>> {
    let catalog = match &settings.schema_dir {
        Some(dir) => Catalog::from_dir(dir).map_err(|e| CliError::Setting {
            var: "EVENT_BUS_SCHEMA_DIR",
            reason: e.to_string(),
        })?,
        None => Catalog::embedded().map_err(eventbus::Error::from)?,
    };
    Ok(Arc::new(catalog))
}

/// Validates events before anything is published; every invalid event is
/// listed (with its batch line), with every error of each.
pub(crate) fn validate_events(
    settings: &Settings,
    events: &[(Option<usize>, Envelope)],
) -> Result<()> {
    let catalog = load_catalog(settings)?;
    let mut problems = Vec::new();
    for (line, event) in events {
        if let Err(errors) = catalog.validate(event) {
            problems.push(match line {
                Some(n) => format!("line {n}: {errors}"),
                None => errors.to_string(),
            });
        }
    }
    match problems.len() {
        0 => Ok(()),
        1 if events.len() == 1 => Err(CliError::Input(format!(
            "invalid event: {} (nothing published; --no-validate skips the catalogue)",
            problems[0]
        ))),
        n => Err(CliError::Input(format!(
            "{n} of {} events are invalid (nothing published): {}",
            events.len(),
            problems.join("; ")
        ))),
    }
}

/// Runs `eventbus schemas`.
pub(crate) async fn run(args: SchemasArgs, settings: &Settings) -> Result<()> {
    let catalog = load_catalog(settings)?;
    match args.command {
        SchemasCommand::List { json } => list(&catalog, json),
        SchemasCommand::Show {
            event_type,
            version,
        } => show(&catalog, &event_type, version),
        SchemasCommand::Validate { file, json } => validate_file(&catalog, &file, json),
        SchemasCommand::Check { mode, json } => check(&catalog, mode.into(), json),
        SchemasCommand::Docs { out, check } => docs(&catalog, &out, check),
    }
}

fn list(catalog: &Catalog, json: bool) -> Result<()> {
    if json {
        let rows: Vec<Value> = catalog
            .types()
            .iter()
            .map(|t| {
                json!({
                    "type": t.name(),
                    "topic": t.topic(),
                    "partition_key": t.partition_key(),
                    "versions": t.versions().iter().map(|v| v.version()).collect::<Vec<_>>(),
                    "description": t.description(),
                })
            })
            .collect();
        return output::json_lines(&rows);
    }
    let mut text = format!(
        "{:<32} {:<11} {:<13} {:<9} description\n",
        "type", "topic", "partition key", "versions"
    );
    for t in catalog.types() {
        let versions: Vec<String> = t
            .versions()
            .iter()
            .map(|v| v.version().to_string())
            .collect();
        let mut description = t.description().to_owned();
        if description.chars().count() > 72 {
            description = description.chars().take(71).collect::<String>() + "…";
        }
        text.push_str(&format!(
            "{:<32} {:<11} {:<13} {:<9} {description}\n",
            t.name(),
            t.topic(),
            t.partition_key(),
            versions.join(",")
        ));
    }
    output::write_stdout(text.as_bytes())
}

fn show(catalog: &Catalog, event_type: &str, version: Option<u32>) -> Result<()> {
    let ty = catalog
        .get(event_type)
        .ok_or_else(|| CliError::Input(catalog.unknown_type(event_type)))?;
    let schema = match version {
        None => ty.latest(),
        Some(v) => ty.version(v).ok_or_else(|| {
            let versions: Vec<String> = ty
                .versions()
                .iter()
                .map(|v| v.version().to_string())
                .collect();
            CliError::Input(format!(
                "{event_type} has no version {v} (versions: {})",
                versions.join(", ")
            ))
        })?,
    };
    let text = serde_json::to_string_pretty(schema.schema()).expect("JSON values serialize");
    output::write_stdout(format!("{text}\n").as_bytes())
}

/// One event read from a `validate` file: where it was and what it is.
struct Item {
    label: String,
    parsed: std::result::Result<Candidate, String>,
}

struct Candidate {
    event_type: String,
    version: u32,
    key: Option<String>,
    data: Value,
}

/// The events of a file: one JSON document (an object, or an array of
/// them), else JSON lines.
fn read_items(text: &str) -> Vec<Item> {
    if let Ok(doc) = serde_json::from_str::<Value>(text) {
        return match doc {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| Item {
                    label: format!("item {}", i + 1),
                    parsed: candidate(v),
                })
                .collect(),
            other => vec![Item {
                label: "event".to_owned(),
                parsed: candidate(other),
            }],
        };
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| Item {
            label: format!("line {}", i + 1),
            parsed: serde_json::from_str::<Value>(line)
                .map_err(|e| format!("not valid JSON: {e}"))
                .and_then(candidate),
        })
        .collect()
}

fn candidate(v: Value) -> std::result::Result<Candidate, String> {
    // A `tail` line carries the envelope under "event".
    let v = match v {
        Value::Object(mut m)
            if !m.contains_key("type") && m.get("event").is_some_and(Value::is_object) =>
        {
            m.remove("event").expect("checked")
        }
        other => other,
    };
    let Value::Object(mut m) = v else {
        return Err("not a JSON object with \"type\" and \"data\"".to_owned());
    };
    let event_type = match m.get("type") {
        Some(Value::String(t)) => t.clone(),
        _ => return Err("\"type\" is missing or not a string".to_owned()),
    };
    let data = m.remove("data").ok_or("\"data\" is missing")?;
    let version = match m.get("version") {
        None => 1,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("\"version\" {v} is not a whole number"))?,
    };
    let key = match m.get("key") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(other) => return Err(format!("\"key\" {other} is not a string")),
    };
    Ok(Candidate {
        event_type,
        version,
        key,
        data,
    })
}

#[derive(Serialize)]
struct Verdict<'a> {
    #[serde(rename = "line")]
    label: &'a str,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    event_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    valid: bool,
    errors: Vec<Value>,
}

fn validate_file(catalog: &Catalog, path: &str, json: bool) -> Result<()> {
    let text = super::input::read_input("file", path, super::input::MAX_BATCH_BYTES)?;
    let items = read_items(&text);
    if items.is_empty() {
        return Err(CliError::Input(format!("{path}: no events in the file")));
    }
    let mut invalid = 0;
    let mut lines = String::new();
    let mut rows = Vec::new();
    for item in &items {
        let (verdict, text) = match &item.parsed {
            Err(reason) => (
                Verdict {
                    label: &item.label,
                    event_type: None,
                    version: None,
                    valid: false,
                    errors: vec![json!({"pointer": "", "message": reason})],
                },
                format!("{}: invalid: {reason}", item.label),
            ),
            Ok(c) => {
                let key = c
                    .key
                    .clone()
                    .or_else(|| {
                        catalog
                            .partition_key_of(&c.event_type, &c.data)
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| "-".to_owned());
                let envelope = Envelope::new(c.event_type.clone(), key, c.data.clone())
                    .with_version(c.version);
                let result = catalog.validate(&envelope);
                let valid = result.is_ok();
                let text = match &result {
                    Ok(()) => format!("{}: ok ({} v{})", item.label, c.event_type, c.version),
                    Err(e) => format!("{}: invalid: {e}", item.label),
                };
                let errors = result
                    .err()
                    .map(|e| {
                        e.errors
                            .iter()
                            .map(|e| json!({"pointer": e.pointer, "message": e.message}))
                            .collect()
                    })
                    .unwrap_or_default();
                (
                    Verdict {
                        label: &item.label,
                        event_type: Some(&c.event_type),
                        version: Some(c.version),
                        valid,
                        errors,
                    },
                    text,
                )
            }
        };
        if !verdict.valid {
            invalid += 1;
        }
        lines.push_str(&text);
        lines.push('\n');
        rows.push(serde_json::to_value(&verdict).expect("a verdict serializes"));
    }
    if json {
        output::json_lines(&rows)?;
    } else {
        output::write_stdout(lines.as_bytes())?;
    }
    if invalid > 0 {
        return Err(CliError::Input(format!(
            "{path}: {invalid} of {} events are invalid",
            items.len()
        )));
    }
    Ok(())
}

fn check(catalog: &Catalog, mode: CompatMode, json: bool) -> Result<()> {
    let report: CompatReport = catalog.check_compatibility(mode);
    let counter = catalog.check_counter_examples();
    if json {
        output::json_line(
            &json!({"mode": mode, "pairs": report.pairs, "counter_example_problems": counter, "compatible": report.is_compatible() && counter.is_empty()}),
        )?;
    } else {
        let mut text = String::new();
        for pair in &report.pairs {
            let verdict = if pair.is_compatible() {
                "compatible"
            } else {
                "BREAKING"
            };
            text.push_str(&format!(
                "{} v{} → v{} ({mode}): {verdict}\n",
                pair.event_type, pair.from, pair.to
            ));
            for f in &pair.breaking {
                text.push_str(&format!("  breaking: {f}\n"));
            }
            if !pair.covered_by_upcaster.is_empty() {
                let by = pair.upcaster.as_deref().unwrap_or("the upcaster");
                for f in &pair.covered_by_upcaster {
                    text.push_str(&format!("  covered by the upcaster: {f}\n"));
                }
                text.push_str(&format!("  upcaster v{} → v{}: {by}\n", pair.from, pair.to));
            }
        }
        for problem in &counter {
            text.push_str(&format!("counter-example: {problem}\n"));
        }
        let single = catalog
            .types()
            .iter()
            .filter(|t| t.versions().len() == 1)
            .count();
        text.push_str(&format!(
            "{} types, {} version pairs compared in {mode} mode, {single} types with one version\n",
            catalog.types().len(),
            report.pairs.len()
        ));
        output::write_stdout(text.as_bytes())?;
    }
    let breaking = report.pairs.iter().filter(|p| !p.is_compatible()).count();
    if breaking > 0 || !counter.is_empty() {
        return Err(CliError::Failed(format!(
            "schemas check ({mode}): {breaking} version pair(s) break, {} counter-example problem(s)",
            counter.len()
        )));
    }
    Ok(())
}

fn docs(catalog: &Catalog, out: &Path, check: bool) -> Result<()> {
    let pages = catalog.markdown_docs();
    let existing = existing_pages(out);
    let stale: Vec<&String> = existing
        .keys()
        .filter(|name| !pages.contains_key(*name))
        .collect();
    let changed: Vec<&String> = pages
        .iter()
        .filter(|(name, text)| existing.get(*name) != Some(*text))
        .map(|(name, _)| name)
        .collect();
    if check {
        if stale.is_empty() && changed.is_empty() {
            return output::write_stdout(format!("{} is up to date\n", out.display()).as_bytes());
        }
        let names: Vec<&str> = changed.iter().chain(&stale).map(|s| s.as_str()).collect();
        return Err(CliError::Failed(format!(
            "{} is out of date ({}): run `eventbus schemas docs --out {}`",
            out.display(),
            names.join(", "),
            out.display()
        )));
    }
    let write_error = |path: &Path, e: std::io::Error| {
        CliError::Input(format!("cannot write {}: {e}", path.display()))
    };
    std::fs::create_dir_all(out).map_err(|e| write_error(out, e))?;
    for name in &stale {
        let path = out.join(name);
        std::fs::remove_file(&path).map_err(|e| write_error(&path, e))?;
    }
    for name in &changed {
        let path = out.join(name);
        std::fs::write(&path, &pages[*name]).map_err(|e| write_error(&path, e))?;
    }
    output::write_stdout(
        format!(
            "{}: {} pages, {} written, {} removed\n",
            out.display(),
            pages.len(),
            changed.len(),
            stale.len()
        )
        .as_bytes(),
    )
}

/// The Markdown pages already in `dir` (none when it does not exist).
fn existing_pages(dir: &Path) -> BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "md"))
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_envelopes_batch_lines_tail_lines_and_arrays() {
        let items = read_items(r#"{"type": "a.b", "version": 2, "key": "k", "data": {"x": 1}}"#);
        assert_eq!(items.len(), 1);
        let c = items[0].parsed.as_ref().unwrap();
        assert_eq!(
            (c.event_type.as_str(), c.version, c.key.as_deref()),
            ("a.b", 2, Some("k"))
        );

        let text = "{\"type\": \"a.b\", \"data\": 1}\n\n{nope\n{\"stream\": \"s\", \"event\": {\"type\": \"c.d\", \"data\": null}}\n[1]\n";
        let items = read_items(text);
        let labels: Vec<&str> = items.iter().map(|i| i.label.as_str()).collect();
        assert_eq!(labels, ["line 1", "line 3", "line 4", "line 5"]);
        assert!(items[0].parsed.is_ok());
        assert!(items[1]
            .parsed
            .as_ref()
            .err()
            .unwrap()
            .contains("not valid JSON"));
        assert_eq!(items[2].parsed.as_ref().unwrap().event_type, "c.d");
        assert!(items[3].parsed.is_err());

        let items = read_items(
            r#"[{"type": "a.b", "data": 1}, {"data": 1}, {"type": "a.b", "data": 1, "version": -1}]"#,
        );
        assert_eq!(items.len(), 3);
        assert!(items[1].parsed.as_ref().err().unwrap().contains("\"type\""));
        assert!(items[2].parsed.as_ref().err().unwrap().contains("version"));
    }
}
