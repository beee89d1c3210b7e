//! The event catalogue: a JSON Schema (draft 2020-12) per event type and
//! version, validation at both ends, upcasting between versions,
//! compatibility checks and generated documentation.
//!
//! The catalogue is the directory `schemas/` of the repository
//! (`docs/schemas.md` describes it): `manifest.json` lists each type with its
//! topic, partition-key field, description and versions; `<type>/v<N>.json`
//! is the schema of version N, with valid `examples`; `<type>/v<N>.invalid.json`
//! holds counter-examples with the JSON pointers where they fail.
//!
//! - [`Catalog::embedded`] loads the copy compiled into this build (see
//!   `build.rs`), [`Catalog::from_dir`] a directory (the binary's
//!   `EVENT_BUS_SCHEMA_DIR`). Loading checks the whole catalogue and compiles
//!   every schema once; a [`Catalog`] is then shared behind an `Arc`.
//! - [`Catalog::validate`] checks an [`Envelope`]: known type and version,
//!   `data` valid against its schema, and `key` equal to the data's
//!   partition-key field. A failure is a [`SchemaErrors`]: every
//!   (JSON pointer, message) found, never just the first.
//! - [`Catalog::upcast`] turns an event into a later version of its type
//!   through the registered [`Upcaster`]s (v1→v2→…); [`Validating`] is the
//!   consumer-side wrapper that validates and upcasts before a handler runs.
//! - [`Catalog::check_compatibility`] compares each version with the one
//!   before under Confluent Schema Registry's backward/forward/full meanings.
//! - [`Catalog::markdown_docs`] renders the catalogue as Markdown pages.

mod compat;
mod docs;
mod registry;
mod upcast;
mod validating;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::envelope::Envelope;

pub use compat::{compare, CompatMode, CompatReport, Direction, Finding, PairReport, Rule};
pub use upcast::{UpcastError, Upcaster};
pub use validating::{ValidateLayer, Validating};

/// Longest message kept per error; a value quoted in a message can be large.
const MAX_MESSAGE: usize = 300;

/// The event types, their schemas and upcasters. Build it once and share it
/// (`Arc<Catalog>`): schemas are compiled when it is loaded.
pub struct Catalog {
    /// Where the schemas came from, for messages: `embedded` or a directory.
    origin: String,
    /// In manifest order.
    types: Vec<EventType>,
    index: HashMap<String, usize>,
    /// By (type, from version).
    upcasters: HashMap<(String, u32), Upcaster>,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog")
            .field("origin", &self.origin)
            .field("types", &self.index.len())
            .field("upcasters", &self.upcasters.len())
            .finish()
    }
}

/// One event type of the catalogue.
#[derive(Debug)]
pub struct EventType {
    name: String,
    topic: String,
    partition_key: String,
    description: String,
    /// Ascending by version.
    versions: Vec<SchemaVersion>,
}

impl EventType {
    /// The type, e.g. `work_item.processing_failed`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its topic (the type's prefix before the first dot).
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The top-level field of `data` whose value is the envelope's key.
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// What the event means.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> &[SchemaVersion] {
        &self.versions
    }

    /// One version.
    pub fn version(&self, version: u32) -> Option<&SchemaVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// The newest version.
    pub fn latest(&self) -> &SchemaVersion {
        self.versions
            .last()
            .expect("a type has at least one version")
    }

    fn version_list(&self) -> String {
        self.versions
            .iter()
            .map(|v| v.version.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One version of a type's schema, compiled.
pub struct SchemaVersion {
    version: u32,
    file: String,
    schema: Value,
    validator: jsonschema::Validator,
    examples: Vec<Value>,
    counter_examples: Vec<CounterExample>,
}

impl fmt::Debug for SchemaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaVersion")
            .field("version", &self.version)
            .field("file", &self.file)
            .field("examples", &self.examples.len())
            .field("counter_examples", &self.counter_examples.len())
            .finish()
    }
}

impl SchemaVersion {
    /// The version number.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The schema's file, relative to the catalogue root, e.g. `work_order.created/v1.json`.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The schema document.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// The schema's `examples`: data that must validate.
    pub fn examples(&self) -> &[Value] {
        &self.examples
    }

    /// Data that must not validate, with where it fails.
    pub fn counter_examples(&self) -> &[CounterExample] {
        &self.counter_examples
    }

    /// Validates `data`; the errors' pointers are into `data`.
    pub fn validate(&self, data: &Value) -> Vec<SchemaError> {
        if self.validator.is_valid(data) {
            return Vec::new();
        }
        self.validator
            .iter_errors(data)
            .map(|e| SchemaError::new(e.instance_path().as_str(), e.to_string()))
            .collect()
    }
}

/// A counter-example: data a schema version must refuse.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CounterExample {
    /// What is wrong with it.
    pub description: String,
    /// The data.
    pub data: Value,
    /// The JSON pointers (into `data`) where validation fails, each once.
    pub errors: Vec<String>,
}

/// One validation failure: where (a JSON pointer) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaError {
    /// RFC 6901 pointer to the offending value: into the envelope
    /// (`/data/error/code`, `/type`, `/version`, `/key`) from
    /// [`Catalog::validate`], into the data from [`Catalog::validate_data`]
    /// (`""` is the data itself).
    pub pointer: String,
    /// What is wrong, in words.
    pub message: String,
}

impl SchemaError {
    fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        SchemaError {
            pointer: pointer.into(),
            message,
        }
    }
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "(root)"
        } else {
            &self.pointer
        };
        write!(f, "{pointer}: {}", self.message)
    }
}

/// Why an event does not fit the catalogue: every error found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct SchemaErrors {
    /// The event's type.
    pub event_type: String,
    /// The event's schema version.
    pub version: u32,
    /// Each failure, in the order found; never empty.
    pub errors: Vec<SchemaError>,
}

impl fmt::Display for SchemaErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}: ", self.event_type, self.version)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Why a catalogue could not be loaded, or an upcaster registered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// A schema directory or file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The directory or file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file of the catalogue is wrong (not JSON, not a valid schema, an
    /// example that does not validate, a type missing from the manifest, ...).
    #[error("schemas ({origin}): {file}: {reason}")]
    Invalid {
        /// `embedded` or the directory.
        origin: String,
        /// The file, relative to the catalogue root.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// An upcaster does not fit the catalogue (unknown type or version).
    #[error("upcaster {event_type} v{from}: {reason}")]
    Upcaster {
        /// The type.
        event_type: String,
        /// The version it upcasts from.
        from: u32,
        /// What is wrong.
        reason: String,
    },
}

impl Catalog {
    /// The catalogue compiled into this build (the repository's `schemas/`),
    /// with the standard upcasters.
    pub fn embedded() -> Result<Self, CatalogError> {
        let files = registry::embedded_files();
        registry::load(files, "embedded")?.with_standard_upcasters()
    }

    /// The catalogue in a directory laid out like `schemas/`, with the
    /// standard upcasters whose type and versions it has.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, CatalogError> {
        let dir = dir.as_ref();
        let files = registry::read_dir(dir)?;
        registry::load(files, &dir.display().to_string())?.with_standard_upcasters()
    }

    /// A catalogue from in-memory files, given as (path relative to the
    /// catalogue root, contents), without upcasters. `origin` names the
    /// source in error messages.
    pub fn from_files<I, P, C>(files: I, origin: &str) -> Result<Self, CatalogError>
    where
        I: IntoIterator<Item = (P, C)>,
        P: Into<String>,
        C: Into<String>,
    {
        registry::load(
            files
                .into_iter()
                .map(|(p, c)| (p.into(), c.into()))
                .collect(),
            origin,
        )
    }

    /// Where the schemas came from: `embedded` or the directory.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Every type, in manifest order.
    pub fn types(&self) -> &[EventType] {
        &self.types
    }

    /// One type.
    pub fn get(&self, event_type: &str) -> Option<&EventType> {
        self.index.get(event_type).map(|&i| &self.types[i])
    }

    /// The schema of one version of a type.
    pub fn schema(&self, event_type: &str, version: u32) -> Option<&SchemaVersion> {
        self.get(event_type)?.version(version)
    }

    /// The partition key an event of this type with this data should carry:
    /// the value of its partition-key field, when it is a string.
    pub fn partition_key_of<'a>(&self, event_type: &str, data: &'a Value) -> Option<&'a str> {
        data.get(self.get(event_type)?.partition_key())?.as_str()
    }

    /// Checks an envelope: a known type and version, `data` valid against
    /// that version's schema, and `key` equal to the data's partition-key
    /// field (so the event lands in the partition of the entity it is
    /// about). Pointers are into the envelope: `/type`, `/version`, `/key`,
    /// `/data/...`. This is the one check every producer path calls (the
    /// publisher, the CLI, the outbox, the HTTP API) and consumers repeat.
    pub fn validate(&self, event: &Envelope) -> Result<(), SchemaErrors> {
        let errors = self.check(
            &event.event_type,
            event.version,
            Some(&event.key),
            &event.data,
        );
        self.result(&event.event_type, event.version, errors)
    }

    /// Checks only `data` against a type's version; pointers are into `data`.
    pub fn validate_data(
        &self,
        event_type: &str,
        version: u32,
        data: &Value,
    ) -> Result<(), SchemaErrors> {
        let errors = self
            .check(event_type, version, None, data)
            .into_iter()
            .map(|mut e| {
                e.pointer = match e.pointer.strip_prefix("/data") {
                    Some(rest) => rest.to_owned(),
                    None => e.pointer,
                };
                e
            })
            .collect();
        self.result(event_type, version, errors)
    }

    fn result(
        &self,
        event_type: &str,
        version: u32,
        errors: Vec<SchemaError>,
    ) -> Result<(), SchemaErrors> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SchemaErrors {
                event_type: event_type.to_owned(),
                version,
                errors,
            })
        }
    }

    /// Every error of an event, pointers into the envelope; `key` is
    /// checked when given.
    fn check(
        &self,
        event_type: &str,
        version: u32,
        key: Option<&str>,
        data: &Value,
    ) -> Vec<SchemaError> {
        let Some(ty) = self.get(event_type) else {
            return vec![SchemaError::new("/type", self.unknown_type(event_type))];
        };
        let Some(schema) = ty.version(version) else {
            return vec![SchemaError::new(
                "/version",
                format!(
                    "{event_type} has no version {version} (versions: {})",
                    ty.version_list()
                ),
            )];
        };
        let mut errors: Vec<SchemaError> = schema
            .validate(data)
            .into_iter()
            .map(|mut e| {
                e.pointer.insert_str(0, "/data");
                e
            })
            .collect();
        if let (Some(key), Some(expected)) =
            (key, data.get(ty.partition_key()).and_then(Value::as_str))
        {
            if key != expected {
                errors.push(SchemaError::new(
                    "/key",
                    format!(
                        "key {key:?} differs from the partition-key field /data/{} ({expected:?})",
                        ty.partition_key()
                    ),
                ));
            }
        }
        errors
    }

    /// Every counter-example that does not fail exactly at its listed
    /// pointers, in words (examples are checked when the catalogue loads).
    pub fn check_counter_examples(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for ty in &self.types {
            for v in &ty.versions {
                for case in &v.counter_examples {
                    let found: Vec<String> = v
                        .validate(&case.data)
                        .into_iter()
                        .map(|e| e.pointer)
                        .collect();
                    let mut found_set = found.clone();
                    found_set.sort();
                    found_set.dedup();
                    let mut expected = case.errors.clone();
                    expected.sort();
                    expected.dedup();
                    if found_set != expected {
                        problems.push(format!(
                            "{}: counter-example {:?} fails at {:?}, expected {:?}",
                            v.file, case.description, found_set, expected
                        ));
                    }
                }
            }
        }
        problems
    }

    /// A message for a type the catalogue lacks, with a "did you mean" hint.
    pub fn unknown_type(&self, event_type: &str) -> String {
        let closest = self
            .types
            .iter()
            .map(|t| (edit_distance(&t.name, event_type), &t.name))
            .min();
        match closest {
            Some((d, name)) if d <= 3 => {
                format!("unknown event type {event_type:?} (did you mean {name:?}?)")
            }
            _ => format!(
                "unknown event type {event_type:?} (the catalogue has {} types: see `eventbus schemas list`)",
                self.types.len()
            ),
        }
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb {
                previous
            } else {
                1 + previous.min(row[j]).min(row[j + 1])
            };
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog() -> Catalog {
        Catalog::embedded().expect("the embedded catalogue loads")
    }

    #[test]
    fn unknown_type_and_version_are_named() {
        let c = catalog();
        let e = Envelope::new("work_order.create", "wo-1", json!({}));
        let err = c.validate(&e).unwrap_err();
        assert_eq!(err.errors.len(), 1);
        assert_eq!(err.errors[0].pointer, "/type");
        assert!(
            err.errors[0]
                .message
                .contains("did you mean \"work_order.created\""),
            "{err}"
        );

        let e = Envelope::new("work_order.created", "wo-1", json!({})).with_version(7);
        let err = c.validate(&e).unwrap_err();
        assert_eq!(err.errors[0].pointer, "/version");
        assert!(
            err.to_string().contains("has no version 7 (versions: 1)"),
            "{err}"
        );
    }

    #[test]
    fn key_must_match_the_partition_key_field() {
        let c = catalog();
        let data = c.get("system.error").unwrap().latest().examples()[0].clone();
        let component = data["component"].as_str().unwrap().to_owned();
        assert!(c
            .validate(&Envelope::new("system.error", component, data.clone()))
            .is_ok());
        let err = c
            .validate(&Envelope::new("system.error", "other", data))
            .unwrap_err();
        assert_eq!(err.errors.len(), 1);
        assert_eq!(err.errors[0].pointer, "/key");
    }

    #[test]
    fn data_pointers_are_relative_in_validate_data() {
        let c = catalog();
        let err = c
            .validate_data("work_order.created", 1, &json!({"id": "wo-1"}))
            .unwrap_err();
        assert!(err.errors.iter().all(|e| e.pointer.is_empty()), "{err}");
        let err = c
            .validate(&Envelope::new(
                "work_order.created",
                "wo-1",
                json!({"id": "wo-1"}),
            ))
            .unwrap_err();
        assert!(err.errors.iter().all(|e| e.pointer == "/data"), "{err}");
        assert!(
            err.errors.len() >= 5,
            "every missing field is listed: {err}"
        );
    }

    #[test]
    fn long_messages_are_cut() {
        let e = SchemaError::new("/x", "é".repeat(400));
        assert!(e.message.chars().count() <= MAX_MESSAGE / 2 + 1);
        assert!(e.message.ends_with('…'));
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
