//! The catalogue as Markdown: an index and one page per type with its
//! description, topic, partition key, versions, upcasters, a field table per
//! version, examples and counter-examples. The output depends only on the
//! catalogue, so a committed copy can be checked for staleness.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::{Catalog, EventType, SchemaVersion};

/// The index page's file name.
pub(crate) const INDEX: &str = "README.md";

impl Catalog {
    /// The catalogue as Markdown pages keyed by file name: `README.md` (the
    /// index) and `<type>.md` per type. Deterministic: the same catalogue
    /// always gives the same bytes.
    pub fn markdown_docs(&self) -> BTreeMap<String, String> {
        let mut pages = BTreeMap::new();
        pages.insert(INDEX.to_owned(), self.index_page());
        for ty in self.types() {
            pages.insert(format!("{}.md", ty.name()), self.type_page(ty));
        }
        pages
    }

    fn index_page(&self) -> String {
        let mut out = String::new();
        out.push_str("# Event catalogue\n\n");
        out.push_str(GENERATED);
        out.push_str(
            "Every event is an envelope (`docs/wire-format.md`) whose `data` must validate against the \
             JSON Schema (draft 2020-12) of its `type` and `version`, and whose `key` must equal the \
             type's partition-key field in `data`. Publishers refuse events that do not; consumers \
             never hand them to a handler. How versions, upcasters and compatibility checks work: \
             [`docs/schemas.md`](../schemas.md).\n\n",
        );
        out.push_str(
            "| type | topic | partition key | versions | description |\n|---|---|---|---|---|\n",
        );
        for ty in self.types() {
            let versions: Vec<String> = ty
                .versions()
                .iter()
                .map(|v| v.version().to_string())
                .collect();
            let _ = writeln!(
                out,
                "| [`{name}`]({name}.md) | `{}` | `{}` | {} | {} |",
                ty.topic(),
                ty.partition_key(),
                versions.join(", "),
                cell(ty.description()),
                name = ty.name(),
            );
        }
        out
    }

    fn type_page(&self, ty: &EventType) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# `{}`\n", ty.name());
        out.push_str(GENERATED);
        let _ = writeln!(out, "{}\n", ty.description());
        let versions: Vec<String> = ty
            .versions()
            .iter()
            .map(|v| v.version().to_string())
            .collect();
        out.push_str("| | |\n|---|---|\n");
        let _ = writeln!(out, "| topic | `{}` |", ty.topic());
        let _ = writeln!(
            out,
            "| streams | `<namespace>:{{{}:<partition>}}` |",
            ty.topic()
        );
        let _ = writeln!(
            out,
            "| partition key | `data.{}`: the envelope's `key` must equal it |",
            ty.partition_key()
        );
        let _ = writeln!(
            out,
            "| versions | {} (latest: {}) |",
            versions.join(", "),
            ty.latest().version()
        );
        let files: Vec<String> = ty
            .versions()
            .iter()
            .map(|v| format!("`schemas/{}`", v.file()))
            .collect();
        let _ = writeln!(out, "| schemas | {} |", files.join(", "));
        let upcasters: Vec<_> = self
            .upcasters()
            .into_iter()
            .filter(|u| u.event_type() == ty.name())
            .collect();
        if !upcasters.is_empty() {
            out.push_str("\n## Upcasters\n\n");
            for u in upcasters {
                let _ = writeln!(out, "- v{} → v{}: {}", u.from(), u.to(), u.description());
            }
        }
        for version in ty.versions().iter().rev() {
            version_section(&mut out, version);
        }
        out
    }
}

const GENERATED: &str =
    "_Generated from `schemas/` by `eventbus schemas docs --out docs/events`; do not edit by hand._\n\n";

fn version_section(out: &mut String, v: &SchemaVersion) {
    let _ = writeln!(out, "\n## Version {}\n", v.version());
    if let Some(d) = v.schema().get("description").and_then(Value::as_str) {
        let _ = writeln!(out, "{d}\n");
    }
    out.push_str("| field | type | required | description |\n|---|---|---|---|\n");
    let mut rows = Vec::new();
    if let Some(schema) = v.schema().as_object() {
        field_rows(schema, "", &mut rows, 0);
    }
    for (field, ty, required, description) in rows {
        let _ = writeln!(
            out,
            "| `{field}` | {} | {} | {} |",
            cell(&ty),
            if required { "yes" } else { "no" },
            cell(&description)
        );
    }
    if !v.examples().is_empty() {
        out.push_str("\n### Examples\n");
        for example in v.examples() {
            let text = serde_json::to_string_pretty(example).expect("JSON values serialize");
            let _ = write!(out, "\n```json\n{text}\n```\n");
        }
    }
    if !v.counter_examples().is_empty() {
        out.push_str("\n### Refused\n\n| case | fails at |\n|---|---|\n");
        for c in v.counter_examples() {
            let pointers: Vec<String> = c
                .errors
                .iter()
                .map(|p| {
                    if p.is_empty() {
                        "(root)".to_owned()
                    } else {
                        format!("`{p}`")
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} |",
                cell(&c.description),
                pointers.join(", ")
            );
        }
    }
}

/// (field path, type, required, description) for each property, depth first.
fn field_rows(
    schema: &Map<String, Value>,
    prefix: &str,
    rows: &mut Vec<(String, String, bool, String)>,
    depth: usize,
) {
    if depth > 8 {
        return;
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let path = format!("{prefix}{name}");
            push_row(
                rows,
                &path,
                property,
                required.contains(&name.as_str()),
                depth,
            );
        }
    }
    if let Some(extra @ Value::Object(_)) = schema.get("additionalProperties") {
        let path = format!("{prefix}<name>");
        push_row(rows, &path, extra, false, depth);
    }
}

fn push_row(
    rows: &mut Vec<(String, String, bool, String)>,
    path: &str,
    property: &Value,
    required: bool,
    depth: usize,
) {
    let Some(p) = property.as_object() else {
        return;
    };
    let description = p
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    rows.push((path.to_owned(), describe(p), required, description));
    field_rows(p, &format!("{path}."), rows, depth + 1);
    if let Some(Value::Object(items)) = p.get("items") {
        push_row(
            rows,
            &format!("{path}[]"),
            &Value::Object(items.clone()),
            true,
            depth + 1,
        );
    }
}

/// A property's type and constraints in a few words.
fn describe(p: &Map<String, Value>) -> String {
    if let Some(c) = p.get("const") {
        return format!("always `{c}`");
    }
    let mut parts = Vec::new();
    let types = match p.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".to_owned(),
    };
    let map_of = matches!(p.get("additionalProperties"), Some(Value::Object(_)))
        && p.get("properties").is_none();
    parts.push(if map_of {
        "object (a map by name)".to_owned()
    } else {
        types
    });
    if let Some(values) = p.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values
            .iter()
            .map(|v| {
                format!(
                    "`{}`",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
            .collect();
        parts.push(format!("one of {}", values.join(", ")));
    }
    if let Some(f) = p.get("format").and_then(Value::as_str) {
        parts.push(format!("format `{f}`"));
    }
    let bound = |k: &str| p.get(k).map(ToString::to_string);
    match (bound("minLength"), bound("maxLength")) {
        (Some(a), Some(b)) => parts.push(format!("{a}–{b} characters")),
        (Some(a), None) => parts.push(format!("at least {a} characters")),
        (None, Some(b)) => parts.push(format!("at most {b} characters")),
        (None, None) => {}
    }
    if let Some(m) = bound("minimum") {
        parts.push(format!("≥ {m}"));
    }
    if let Some(m) = bound("maximum") {
        parts.push(format!("≤ {m}"));
    }
    if let Some(pattern) = p.get("pattern").and_then(Value::as_str) {
        parts.push(format!("pattern `{pattern}`"));
    }
    if p.get("additionalProperties") == Some(&Value::Bool(false)) && p.contains_key("properties") {
        parts.push("no other fields".to_owned());
    }
    parts.join(", ")
}

/// Text safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_for_every_type_and_an_index() {
        let catalog = Catalog::embedded().unwrap();
        let pages = catalog.markdown_docs();
        assert_eq!(pages.len(), catalog.types().len() + 1);
        let failed = &pages["work_item.processing_failed.md"];
        assert!(failed.contains("## Version 2"));
        assert!(failed.contains("| `error.category` |"));
        assert!(failed.contains("- v1 → v2: adds `error.category`"));
        assert!(failed.find("## Version 2") < failed.find("## Version 1"));
        let health = &pages["system.health_check.md"];
        assert!(health.contains("| `checks.<name>.status` |"), "{health}");
        assert_eq!(catalog.markdown_docs(), pages, "deterministic");
    }

    #[test]
    fn cells_escape_pipes() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
