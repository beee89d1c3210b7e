//! Loading a catalogue: the manifest, each schema (compiled once), its
//! examples and counter-examples, with every inconsistency reported by file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::{Catalog, CatalogError, CounterExample, EventType, SchemaVersion};
use crate::topology::{topic_of, validate_event_type};

include!(concat!(env!("OUT_DIR"), "/embedded_schemas.rs"));

/// The `$schema` every schema must declare.
pub(crate) const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";
/// The manifest's file name.
const MANIFEST: &str = "manifest.json";

/// The files compiled into this build.
pub(super) fn embedded_files() -> BTreeMap<String, String> {
    EMBEDDED
        .iter()
        .map(|(path, text)| ((*path).to_owned(), (*text).to_owned()))
        .collect()
}

/// Every `.json` file under `dir` (recursively), keyed by its path relative
/// to `dir` with `/` separators. Other files (a README) are ignored.
pub(super) fn read_dir(dir: &Path) -> Result<BTreeMap<String, String>, CatalogError> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out, 0)?;
    Ok(out)
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, String>,
    depth: usize,
) -> Result<(), CatalogError> {
    let read_error = |path: &Path, source| CatalogError::Read {
        path: path.display().to_string(),
        source,
    };
    // The layout is two levels deep; deeper trees are not a catalogue.
    if depth > 4 {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| read_error(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| read_error(dir, e))?.path();
        if path.is_dir() {
            walk(root, &path, out, depth + 1)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).map_err(|e| read_error(&path, e))?;
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.insert(relative, text);
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(rename = "$comment", default)]
    _comment: Option<String>,
    types: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeEntry {
    topic: String,
    partition_key: String,
    description: String,
    versions: Vec<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CounterFile {
    #[serde(rename = "$comment", default)]
    _comment: Option<String>,
    cases: Vec<CounterCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CounterCase {
    description: String,
    data: Value,
    errors: Vec<String>,
}

/// Loads and checks a whole catalogue.
pub(super) fn load(files: BTreeMap<String, String>, origin: &str) -> Result<Catalog, CatalogError> {
    let invalid = |file: &str, reason: String| CatalogError::Invalid {
        origin: origin.to_owned(),
        file: file.to_owned(),
        reason,
    };
    let manifest_text = files.get(MANIFEST).ok_or_else(|| {
        invalid(
            MANIFEST,
            "missing: a catalogue needs a manifest listing its types".into(),
        )
    })?;
    let manifest: Manifest = serde_json::from_str(manifest_text)
        .map_err(|e| invalid(MANIFEST, format!("not a valid manifest: {e}")))?;

    let mut used: BTreeSet<&str> = BTreeSet::from([MANIFEST]);
    let mut types = Vec::new();
    let mut index = HashMap::new();
    for (name, entry) in manifest.types {
        let at = |reason: String| invalid(MANIFEST, format!("type {name:?}: {reason}"));
        let entry: TypeEntry = serde_json::from_value(entry).map_err(|e| at(e.to_string()))?;
        validate_event_type(&name).map_err(|e| at(e.to_string()))?;
        if entry.topic != topic_of(&name) {
            return Err(at(format!(
                "topic {:?} is not the type's prefix {:?}",
                entry.topic,
                topic_of(&name)
            )));
        }
        if entry.partition_key.is_empty() || entry.description.trim().is_empty() {
            return Err(at("partition_key and description must not be empty".into()));
        }
        if entry.versions.is_empty()
            || entry.versions[0] == 0
            || entry.versions.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(at(format!(
                "versions {:?} must be ascending whole numbers from 1, each once",
                entry.versions
            )));
        }
        let mut versions = Vec::new();
        for &v in &entry.versions {
            let file = format!("{name}/v{v}.json");
            let (key, text) = files
                .get_key_value(&file)
                .ok_or_else(|| invalid(&file, "missing (listed in manifest.json)".into()))?;
            used.insert(key.as_str());
            let mut version = compile(&file, text, v, &entry.partition_key)
                .map_err(|reason| invalid(&file, reason))?;
            let counter_file = format!("{name}/v{v}.invalid.json");
            if let Some((key, text)) = files.get_key_value(&counter_file) {
                used.insert(key.as_str());
                version.counter_examples =
                    counter_examples(text).map_err(|reason| invalid(&counter_file, reason))?;
            }
            versions.push(version);
        }
        index.insert(name.clone(), types.len());
        types.push(EventType {
            name,
            topic: entry.topic,
            partition_key: entry.partition_key,
            description: entry.description,
            versions,
        });
    }
    if let Some(stray) = files.keys().find(|f| !used.contains(f.as_str())) {
        return Err(invalid(
            stray,
            "not listed in manifest.json (add its type and version there, or remove the file)"
                .into(),
        ));
    }
    Ok(Catalog {
        origin: origin.to_owned(),
        types,
        index,
        upcasters: HashMap::new(),
    })
}

/// Parses, checks and compiles one schema file.
fn compile(
    file: &str,
    text: &str,
    version: u32,
    partition_key: &str,
) -> Result<SchemaVersion, String> {
    let schema: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    if !schema.is_object() {
        return Err("a schema file must hold a JSON object".into());
    }
    if schema.get("$schema").and_then(Value::as_str) != Some(DRAFT_2020_12) {
        return Err(format!("must declare \"$schema\": \"{DRAFT_2020_12}\""));
    }
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| format!("not a valid JSON Schema: {e}"))?;
    let key_type = schema
        .pointer(&format!("/properties/{partition_key}/type"))
        .and_then(Value::as_str);
    let key_required = schema
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|k| k == partition_key));
    if key_type != Some("string") || !key_required {
        return Err(format!(
            "the partition-key field {partition_key:?} must be a required top-level property of type \"string\""
        ));
    }
    let examples = match schema.get("examples") {
        None => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err("\"examples\" must be an array".into()),
    };
    let compiled = SchemaVersion {
        version,
        file: file.to_owned(),
        schema,
        validator,
        examples,
        counter_examples: Vec::new(),
    };
    for (i, example) in compiled.examples.iter().enumerate() {
        let errors = compiled.validate(example);
        if !errors.is_empty() {
            let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Err(format!(
                "example {} does not validate: {}",
                i + 1,
                listed.join("; ")
            ));
        }
    }
    Ok(compiled)
}

fn counter_examples(text: &str) -> Result<Vec<CounterExample>, String> {
    let file: CounterFile = serde_json::from_str(text).map_err(|e| {
        format!("not a counter-example file ({{\"cases\": [{{\"description\", \"data\", \"errors\"}}]}}): {e}")
    })?;
    file.cases
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            if c.errors.is_empty()
                || c.errors
                    .iter()
                    .any(|p| !p.is_empty() && !p.starts_with('/'))
            {
                return Err(format!(
                    "case {} ({}): \"errors\" must list the JSON pointers where it fails",
                    i + 1,
                    c.description
                ));
            }
            Ok(CounterExample {
                description: c.description,
                data: c.data,
                errors: c.errors,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut f: BTreeMap<String, String> = BTreeMap::from([
            (
                MANIFEST.to_owned(),
                r#"{"types": {"a.b": {"topic": "a", "partition_key": "id", "description": "d", "versions": [1]}}}"#.to_owned(),
            ),
            (
                "a.b/v1.json".to_owned(),
                format!(
                    r#"{{"$schema": "{DRAFT_2020_12}", "type": "object", "required": ["id"],
                        "properties": {{"id": {{"type": "string"}}}}, "examples": [{{"id": "x"}}]}}"#
                ),
            ),
        ]);
        for (k, v) in extra {
            f.insert((*k).to_owned(), (*v).to_owned());
        }
        f
    }

    fn error_of(f: BTreeMap<String, String>) -> String {
        load(f, "test").unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_catalogue_loads() {
        let c = load(files(&[]), "test").unwrap();
        assert_eq!(c.types().len(), 1);
        assert_eq!(c.get("a.b").unwrap().latest().examples().len(), 1);
    }

    #[test]
    fn every_inconsistency_names_its_file() {
        let schema_with = |body: &str| format!(r#"{{"$schema": "{DRAFT_2020_12}", {body}}}"#);
        // (files replaced, file named in the error, words in the error)
        type Case<'a> = (Vec<(&'a str, String)>, &'a str, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (vec![("manifest.json", "{".into())], "manifest.json", "not a valid manifest"),
            (
                vec![("manifest.json", r#"{"types": {"ab": {"topic": "ab", "partition_key": "id", "description": "d", "versions": [1]}}}"#.into())],
                "manifest.json",
                "topic.name",
            ),
            (
                vec![("manifest.json", r#"{"types": {"a.b": {"topic": "x", "partition_key": "id", "description": "d", "versions": [1]}}}"#.into())],
                "manifest.json",
                "prefix",
            ),
            (
                vec![("manifest.json", r#"{"types": {"a.b": {"topic": "a", "partition_key": "id", "description": "d", "versions": [2, 1]}}}"#.into())],
                "manifest.json",
                "ascending",
            ),
            (
                vec![("manifest.json", r#"{"types": {"a.b": {"topic": "a", "partition_key": "id", "description": "d", "versions": [1, 2]}}}"#.into())],
                "a.b/v2.json",
                "missing",
            ),
            (vec![("a.b/v1.json", "{nope".into())], "a.b/v1.json", "not valid JSON"),
            (vec![("a.b/v1.json", r#"{"type": "object"}"#.into())], "a.b/v1.json", "$schema"),
            (
                vec![("a.b/v1.json", schema_with(r#""type": "strng""#))],
                "a.b/v1.json",
                "not a valid JSON Schema",
            ),
            (
                vec![("a.b/v1.json", schema_with(r#""type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]"#))],
                "a.b/v1.json",
                "partition-key",
            ),
            (
                vec![("a.b/v1.json", schema_with(r#""type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"], "examples": [{}]"#))],
                "a.b/v1.json",
                "example 1 does not validate",
            ),
            (vec![("a.b/v1.invalid.json", r#"{"cases": [{"description": "x", "data": 1, "errors": []}]}"#.into())], "a.b/v1.invalid.json", "pointers"),
            (vec![("a.b/v3.json", "{}".into())], "a.b/v3.json", "not listed"),
        ];
        for (extra, file, needle) in cases {
            let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let message = error_of(files(&extra));
            assert!(message.contains(file), "{message}");
            assert!(message.contains(needle), "{needle:?} in {message}");
        }
        let mut no_manifest = files(&[]);
        no_manifest.remove(MANIFEST);
        assert!(error_of(no_manifest).contains("manifest.json: missing"));
    }
}
