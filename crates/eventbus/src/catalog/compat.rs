//! Schema compatibility with Confluent Schema Registry's meanings:
//!
//! - **backward**: a reader using the new version reads events written with
//!   the old one (consumers upgrade first);
//! - **forward**: a reader using the old version reads events written with
//!   the new one (producers upgrade first);
//! - **full**: both.
//!
//! Both come down to one question asked in two directions: does the
//! *reader* schema accept every instance the *writer* schema accepts? The
//! check walks both schemas side by side and reports each place where the
//! writer may produce something the reader refuses, named from the old →
//! new point of view ([`Rule`]) and explained in words. Open and closed
//! content models are taken into account as Confluent does: adding a
//! property to an object that allowed any extra field breaks backward (old
//! events may carry that name with another shape), adding one to a closed
//! object (`additionalProperties: false`) breaks forward.
//!
//! The comparison understands `type`, `enum`/`const`, `properties`,
//! `required`, `additionalProperties`, `items`, the numeric, length, size,
//! `pattern` and `format` constraints, and local `$ref`s. Any other
//! assertion keyword (`oneOf`, `if`, `patternProperties`, ...) that differs
//! between the versions is reported as [`Rule::Uncomparable`] and counted as
//! breaking: the check never passes what it cannot prove.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use serde::Serialize;
use serde_json::{Map, Value};

use super::Catalog;

/// Which direction(s) to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CompatMode {
    /// New readers read old events (Confluent's default).
    #[default]
    Backward,
    /// Old readers read new events.
    Forward,
    /// Both.
    Full,
}

impl CompatMode {
    /// `backward`, `forward` or `full`.
    pub fn as_str(self) -> &'static str {
        match self {
            CompatMode::Backward => "backward",
            CompatMode::Forward => "forward",
            CompatMode::Full => "full",
        }
    }

    fn directions(self) -> &'static [Direction] {
        match self {
            CompatMode::Backward => &[Direction::Backward],
            CompatMode::Forward => &[Direction::Forward],
            CompatMode::Full => &[Direction::Backward, Direction::Forward],
        }
    }
}

impl FromStr for CompatMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "backward" => Ok(CompatMode::Backward),
            "forward" => Ok(CompatMode::Forward),
            "full" => Ok(CompatMode::Full),
            other => Err(format!(
                "unknown compatibility mode {other:?} (backward, forward or full)"
            )),
        }
    }
}

impl fmt::Display for CompatMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The direction a finding breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Reader = new version, writer = old version.
    Backward,
    /// Reader = old version, writer = new version.
    Forward,
}

/// A kind of breaking change, named from the old → new point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rule {
    /// A field became required (breaks backward: old events may lack it).
    RequiredAdded,
    /// A required field became optional or was removed (breaks forward).
    RequiredRemoved,
    /// A field was added: breaks backward when the old object was open,
    /// forward when the old object was closed.
    PropertyAdded,
    /// A field was removed: breaks backward when the new object is closed,
    /// forward when the new object is open.
    PropertyRemoved,
    /// Fewer extra fields are allowed (breaks backward).
    AdditionalPropertiesTightened,
    /// More extra fields are allowed (breaks forward).
    AdditionalPropertiesLoosened,
    /// A value's type allows less (breaks backward).
    TypeNarrowed,
    /// A value's type allows more (breaks forward).
    TypeWidened,
    /// Enum values were removed or an enum was added (breaks backward).
    EnumValueRemoved,
    /// Enum values were added or the enum dropped (breaks forward).
    EnumValueAdded,
    /// A constraint became stricter: a minimum raised, a maximum lowered, a
    /// pattern or format added or changed (breaks backward).
    ConstraintTightened,
    /// A constraint became looser (breaks forward).
    ConstraintLoosened,
    /// A keyword the check does not reason about changed (breaks both ways).
    Uncomparable,
    /// The upcaster between the versions fails on an example of the old one.
    UpcasterFailed,
}

impl Rule {
    /// The rule's stable name, e.g. `required_added`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::RequiredAdded => "required_added",
            Rule::RequiredRemoved => "required_removed",
            Rule::PropertyAdded => "property_added",
            Rule::PropertyRemoved => "property_removed",
            Rule::AdditionalPropertiesTightened => "additional_properties_tightened",
            Rule::AdditionalPropertiesLoosened => "additional_properties_loosened",
            Rule::TypeNarrowed => "type_narrowed",
            Rule::TypeWidened => "type_widened",
            Rule::EnumValueRemoved => "enum_value_removed",
            Rule::EnumValueAdded => "enum_value_added",
            Rule::ConstraintTightened => "constraint_tightened",
            Rule::ConstraintLoosened => "constraint_loosened",
            Rule::Uncomparable => "uncomparable",
            Rule::UpcasterFailed => "upcaster_failed",
        }
    }
}

/// One breaking change between two versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What kind of change.
    pub rule: Rule,
    /// Which direction it breaks.
    pub breaks: Direction,
    /// Where, as a path into the event data (`/error/category`; `/[]` is
    /// every array item, `/*` every extra property; `""` the data itself).
    pub path: String,
    /// The change and why it breaks, in words.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        };
        write!(f, "{path}: {} [{}]", self.message, self.rule.as_str())
    }
}

/// The comparison of one version of a type with the one before.
#[derive(Debug, Clone, Serialize)]
pub struct PairReport {
    /// The type.
    pub event_type: String,
    /// The older version.
    pub from: u32,
    /// The newer version.
    pub to: u32,
    /// Breaking changes not covered by an upcaster.
    pub breaking: Vec<Finding>,
    /// Backward breaks that the registered upcaster from `from` covers (it
    /// turns every example of `from` into valid `to` data, so a reader of
    /// `to` behind [`super::Validating`] still reads old events).
    pub covered_by_upcaster: Vec<Finding>,
    /// The upcaster between the two versions, if one is registered.
    pub upcaster: Option<String>,
}

impl PairReport {
    /// True when nothing breaks (covered changes do not).
    pub fn is_compatible(&self) -> bool {
        self.breaking.is_empty()
    }
}

/// The comparison of every consecutive pair of versions in a catalogue.
#[derive(Debug, Clone, Serialize)]
pub struct CompatReport {
    /// The mode checked.
    pub mode: CompatMode,
    /// One entry per (type, version, next version).
    pub pairs: Vec<PairReport>,
}

impl CompatReport {
    /// True when no pair breaks.
    pub fn is_compatible(&self) -> bool {
        self.pairs.iter().all(PairReport::is_compatible)
    }
}

impl Catalog {
    /// Compares each version of each type with the previous one in `mode`.
    ///
    /// Upcasters: when the versions have an upcaster, it is run on every
    /// example of the older version and the result validated against the
    /// newer one. If all pass, the backward breaks are reported as
    /// [`PairReport::covered_by_upcaster`] instead of breaking, because a
    /// consumer reading the new version gets old events upcast. Forward
    /// breaks are never covered (there are no downcasters). A failing
    /// upcaster is itself a break ([`Rule::UpcasterFailed`]).
    pub fn check_compatibility(&self, mode: CompatMode) -> CompatReport {
        let mut pairs = Vec::new();
        for ty in self.types() {
            for window in ty.versions().windows(2) {
                let (old, new) = (&window[0], &window[1]);
                let mut breaking = compare(old.schema(), new.schema(), mode);
                let mut covered = Vec::new();
                let upcaster = self
                    .upcaster(ty.name(), old.version())
                    .filter(|u| u.to() == new.version());
                if upcaster.is_some() {
                    let mut failures = Vec::new();
                    if old.examples().is_empty() {
                        failures.push(format!(
                            "v{} has no examples to run the upcaster on",
                            old.version()
                        ));
                    }
                    for (i, example) in old.examples().iter().enumerate() {
                        if let Err(e) = self.upcast_data(
                            ty.name(),
                            old.version(),
                            new.version(),
                            example.clone(),
                        ) {
                            failures.push(format!("example {} of v{}: {e}", i + 1, old.version()));
                        }
                    }
                    if failures.is_empty() {
                        let (b, rest): (Vec<_>, Vec<_>) = breaking
                            .into_iter()
                            .partition(|f| f.breaks == Direction::Backward);
                        covered = b;
                        breaking = rest;
                    } else {
                        breaking.extend(failures.into_iter().map(|message| Finding {
                            rule: Rule::UpcasterFailed,
                            breaks: Direction::Backward,
                            path: String::new(),
                            message: format!("the upcaster fails on {message}"),
                        }));
                    }
                }
                pairs.push(PairReport {
                    event_type: ty.name().to_owned(),
                    from: old.version(),
                    to: new.version(),
                    breaking,
                    covered_by_upcaster: covered,
                    upcaster: upcaster.map(|u| u.description().to_owned()),
                });
            }
        }
        CompatReport { mode, pairs }
    }
}

/// Every breaking change from `old` to `new` under `mode`.
pub fn compare(old: &Value, new: &Value, mode: CompatMode) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    for &direction in mode.directions() {
        let (reader, writer) = match direction {
            Direction::Backward => (new, old),
            Direction::Forward => (old, new),
        };
        let mut cx = Cx {
            reader_root: reader,
            writer_root: writer,
            direction,
            out: Vec::new(),
        };
        cx.check(reader, writer, "", 0);
        for f in cx.out {
            // An uncomparable change is found from both sides in full mode.
            let duplicate = f.rule == Rule::Uncomparable
                && out
                    .iter()
                    .any(|o| o.rule == f.rule && o.path == f.path && o.message == f.message);
            if !duplicate {
                out.push(f);
            }
        }
    }
    out
}

/// The schema that accepts everything.
static ANY: Value = Value::Bool(true);
/// An empty object schema.
static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);

/// Keywords the check does not reason about: a difference is uncomparable.
const UNCOMPARABLE: &[&str] = &[
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "dependentRequired",
    "patternProperties",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "prefixItems",
    "contains",
    "minContains",
    "maxContains",
    "$dynamicRef",
];

/// Keywords that carry no assertion.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "$anchor",
    "title",
    "description",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// A lower bound: the reader's must not be above the writer's.
const LOWER: &[(&str, Family)] = &[
    ("minLength", Family::String),
    ("minimum", Family::Number),
    ("exclusiveMinimum", Family::Number),
    ("minItems", Family::Array),
    ("minProperties", Family::Object),
];
/// An upper bound: the reader's must not be below the writer's.
const UPPER: &[(&str, Family)] = &[
    ("maxLength", Family::String),
    ("maximum", Family::Number),
    ("exclusiveMaximum", Family::Number),
    ("maxItems", Family::Array),
    ("maxProperties", Family::Object),
];
/// Constraints that cannot be ordered: the reader's must equal the writer's.
const EXACT: &[(&str, Family)] = &[
    ("pattern", Family::String),
    ("format", Family::String),
    ("contentEncoding", Family::String),
    ("contentMediaType", Family::String),
    ("multipleOf", Family::Number),
    ("uniqueItems", Family::Array),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    String,
    Number,
    Array,
    Object,
}

impl Family {
    fn types(self) -> &'static [&'static str] {
        match self {
            Family::String => &["string"],
            Family::Number => &["number", "integer"],
            Family::Array => &["array"],
            Family::Object => &["object"],
        }
    }
}

/// `additionalProperties` of an object schema.
enum Extra<'a> {
    Open,
    Closed,
    Schema(&'a Value),
}

fn extra(schema: &Map<String, Value>) -> Extra<'_> {
    match schema.get("additionalProperties") {
        None | Some(Value::Bool(true)) => Extra::Open,
        Some(Value::Bool(false)) => Extra::Closed,
        Some(s) if accepts_all(s) => Extra::Open,
        Some(s) => Extra::Schema(s),
    }
}

/// True for `true`, `{}` and schemas made only of annotations.
fn accepts_all(schema: &Value) -> bool {
    match schema {
        Value::Bool(b) => *b,
        Value::Object(m) => m.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
        _ => false,
    }
}

/// The `type` keyword as a list; `None` when absent (any type).
fn types(schema: &Map<String, Value>) -> Option<Vec<&str>> {
    match schema.get("type")? {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => Some(Vec::new()),
    }
}

/// `enum`, or `const` as a one-value enum.
fn allowed_values(schema: &Map<String, Value>) -> Option<Vec<&Value>> {
    if let Some(c) = schema.get("const") {
        return Some(vec![c]);
    }
    schema.get("enum")?.as_array().map(|v| v.iter().collect())
}

fn required(schema: &Map<String, Value>) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        return "any".to_owned();
    }
    items
        .iter()
        .map(|t| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "(none)".to_owned(), ToString::to_string)
}

struct Cx<'a> {
    reader_root: &'a Value,
    writer_root: &'a Value,
    direction: Direction,
    out: Vec<Finding>,
}

impl<'a> Cx<'a> {
    fn push(&mut self, rule: Rule, path: &str, message: String) {
        self.out.push(Finding {
            rule,
            breaks: self.direction,
            path: path.to_owned(),
            message,
        });
    }

    /// Picks the rule and words for a finding by direction: `backward` is
    /// used when the reader is the new version, `forward` when it is the old.
    fn report(&mut self, path: &str, backward: (Rule, String), forward: (Rule, String)) {
        let (rule, message) = match self.direction {
            Direction::Backward => backward,
            Direction::Forward => forward,
        };
        self.push(rule, path, message);
    }

    /// (old, new) from (reader, writer).
    fn old_new<T>(&self, reader: T, writer: T) -> (T, T) {
        match self.direction {
            Direction::Backward => (writer, reader),
            Direction::Forward => (reader, writer),
        }
    }

    /// Follows local `$ref`s (`#/...`) within the document.
    fn resolve(&mut self, node: &'a Value, reader: bool, path: &str) -> Option<&'a Value> {
        let root = if reader {
            self.reader_root
        } else {
            self.writer_root
        };
        let mut current = node;
        for _ in 0..16 {
            let Some(reference) = current.get("$ref").and_then(Value::as_str) else {
                return Some(current);
            };
            match reference.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(target) => current = target,
                None => {
                    self.push(
                        Rule::Uncomparable,
                        path,
                        format!(
                            "cannot follow $ref {reference:?} (only local references are compared)"
                        ),
                    );
                    return None;
                }
            }
        }
        self.push(Rule::Uncomparable, path, "$ref chain too long".to_owned());
        None
    }

    /// Reports where `writer` may produce an instance `reader` refuses.
    fn check(&mut self, reader: &'a Value, writer: &'a Value, path: &str, depth: usize) {
        if depth > 32 {
            return;
        }
        let (Some(reader), Some(writer)) = (
            self.resolve(reader, true, path),
            self.resolve(writer, false, path),
        ) else {
            return;
        };
        if writer == &Value::Bool(false) || accepts_all(reader) {
            return;
        }
        let w = match writer {
            Value::Object(m) => m,
            Value::Bool(true) => &*EMPTY,
            _ => return, // not a schema: the loader refuses such files
        };
        let Value::Object(r) = reader else {
            self.report(
                path,
                (Rule::TypeNarrowed, "now refuses every value".to_owned()),
                (
                    Rule::TypeWidened,
                    "was `false` (no value allowed), now allows values".to_owned(),
                ),
            );
            return;
        };
        self.check_keywords(r, w, path);
        let writer_types = self.check_types(r, w, path);
        let could_be = |t: &str| writer_types.as_ref().is_none_or(|ts| ts.contains(&t));
        self.check_enum(r, w, path);
        self.check_constraints(r, w, path, &writer_types);
        let reader_types = types(r);
        let reader_allows = |t: &str| reader_types.as_ref().is_none_or(|ts| ts.contains(&t));
        if could_be("object") && reader_allows("object") {
            self.check_object(r, w, path, depth);
        }
        if could_be("array") && reader_allows("array") {
            let ri = r.get("items").unwrap_or(&ANY);
            let wi = w.get("items").unwrap_or(&ANY);
            self.check(ri, wi, &format!("{path}/[]"), depth + 1);
        }
    }

    fn check_keywords(&mut self, r: &Map<String, Value>, w: &Map<String, Value>, path: &str) {
        for keyword in UNCOMPARABLE {
            if r.get(*keyword) != w.get(*keyword) {
                self.push(
                    Rule::Uncomparable,
                    path,
                    format!("`{keyword}` changed; the check cannot tell whether that is compatible, so it counts as breaking"),
                );
            }
        }
    }

    /// Checks `type`; returns the writer's types the reader accepts (`None`: any).
    fn check_types(
        &mut self,
        r: &Map<String, Value>,
        w: &Map<String, Value>,
        path: &str,
    ) -> Option<Vec<&'static str>> {
        let reader_types = types(r);
        let writer_types = types(w);
        let Some(rt) = reader_types else {
            return writer_types.map(|ts| ts.into_iter().map(leak_type).collect());
        };
        let accepted = |t: &str| rt.contains(&t) || (t == "integer" && rt.contains(&"number"));
        let refused: Vec<&str> = match &writer_types {
            None => vec!["any"],
            Some(wt) => wt.iter().copied().filter(|t| !accepted(t)).collect(),
        };
        if !refused.is_empty() {
            let wt_text = writer_types
                .as_deref()
                .map_or_else(|| "any".to_owned(), list);
            let rt_text = list(&rt);
            let (old, new) = self.old_new(rt_text, wt_text);
            self.report(
                path,
                (
                    Rule::TypeNarrowed,
                    format!("type narrowed from {old} to {new}: old events may hold a value of another type"),
                ),
                (
                    Rule::TypeWidened,
                    format!("type widened from {old} to {new}: old readers refuse new events holding the new type"),
                ),
            );
        }
        Some(match writer_types {
            None => rt.into_iter().map(leak_type).collect(),
            Some(wt) => wt
                .into_iter()
                .filter(|t| accepted(t))
                .map(leak_type)
                .collect(),
        })
    }

    fn check_enum(&mut self, r: &Map<String, Value>, w: &Map<String, Value>, path: &str) {
        let Some(allowed) = allowed_values(r) else {
            return;
        };
        match allowed_values(w) {
            None => self.report(
                path,
                (
                    Rule::EnumValueRemoved,
                    format!(
                        "values restricted to {}: old events may hold others",
                        Value::from(allowed.iter().map(|v| (*v).clone()).collect::<Vec<_>>())
                    ),
                ),
                (
                    Rule::EnumValueAdded,
                    format!(
                        "the restriction to {} was dropped: old readers refuse other values",
                        Value::from(allowed.iter().map(|v| (*v).clone()).collect::<Vec<_>>())
                    ),
                ),
            ),
            Some(written) => {
                let missing: Vec<Value> = written
                    .into_iter()
                    .filter(|v| !allowed.contains(v))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    let missing = Value::from(missing);
                    self.report(
                        path,
                        (
                            Rule::EnumValueRemoved,
                            format!("enum value(s) {missing} removed: old events may hold them"),
                        ),
                        (
                            Rule::EnumValueAdded,
                            format!("enum value(s) {missing} added: old readers refuse them"),
                        ),
                    );
                }
            }
        }
    }

    fn check_constraints(
        &mut self,
        r: &Map<String, Value>,
        w: &Map<String, Value>,
        path: &str,
        writer_types: &Option<Vec<&str>>,
    ) {
        let relevant = |family: Family| {
            writer_types
                .as_ref()
                .is_none_or(|ts| ts.iter().any(|t| family.types().contains(t)))
        };
        let mut stricter = Vec::new();
        for (keyword, family) in LOWER {
            if let Some(rv) = r.get(*keyword).and_then(Value::as_f64) {
                let wv = w.get(*keyword).and_then(Value::as_f64);
                if relevant(*family) && wv.is_none_or(|wv| rv > wv) {
                    stricter.push(*keyword);
                }
            }
        }
        for (keyword, family) in UPPER {
            if let Some(rv) = r.get(*keyword).and_then(Value::as_f64) {
                let wv = w.get(*keyword).and_then(Value::as_f64);
                if relevant(*family) && wv.is_none_or(|wv| rv < wv) {
                    stricter.push(*keyword);
                }
            }
        }
        for (keyword, family) in EXACT {
            if let Some(rv) = r.get(*keyword) {
                let trivially_true = *keyword == "uniqueItems" && rv == &Value::Bool(false);
                if relevant(*family) && !trivially_true && w.get(*keyword) != Some(rv) {
                    stricter.push(*keyword);
                }
            }
        }
        for keyword in stricter {
            let (old, new) = self.old_new(show(r.get(keyword)), show(w.get(keyword)));
            self.report(
                path,
                (
                    Rule::ConstraintTightened,
                    format!("`{keyword}` tightened from {old} to {new}: old events may not meet it"),
                ),
                (
                    Rule::ConstraintLoosened,
                    format!("`{keyword}` loosened from {old} to {new}: old readers refuse new events outside the old bound"),
                ),
            );
        }
    }

    fn check_object(
        &mut self,
        r: &'a Map<String, Value>,
        w: &'a Map<String, Value>,
        path: &str,
        depth: usize,
    ) {
        let rp = r
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&EMPTY);
        let wp = w
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&EMPTY);
        let (r_extra, w_extra) = (extra(r), extra(w));

        for (name, ws) in wp {
            let at = format!("{path}/{name}");
            match (rp.get(name), &r_extra) {
                (Some(rs), _) => self.check(rs, ws, &at, depth + 1),
                (None, Extra::Open) => {}
                (None, Extra::Closed) => self.report(
                    &at,
                    (
                        Rule::PropertyRemoved,
                        "field removed from an object the new version closes (additionalProperties: false): old events that carry it are refused".to_owned(),
                    ),
                    (
                        Rule::PropertyAdded,
                        "field added to an object the old version closes (additionalProperties: false): old readers refuse new events that carry it".to_owned(),
                    ),
                ),
                (None, Extra::Schema(s)) => self.check(s, ws, &at, depth + 1),
            }
        }
        for (name, rs) in rp {
            if wp.contains_key(name) {
                continue;
            }
            let at = format!("{path}/{name}");
            match &w_extra {
                Extra::Closed => {}
                Extra::Open if accepts_all(rs) => {}
                Extra::Open => self.report(
                    &at,
                    (
                        Rule::PropertyAdded,
                        "field added to an object the old version leaves open: old events may carry this name with another shape".to_owned(),
                    ),
                    (
                        Rule::PropertyRemoved,
                        "field removed while the new version leaves the object open: new events may carry this name in a shape old readers refuse".to_owned(),
                    ),
                ),
                Extra::Schema(s) => self.check(rs, s, &at, depth + 1),
            }
        }
        let writer_required = required(w);
        for name in required(r) {
            if writer_required.contains(&name) {
                continue;
            }
            let known = wp.contains_key(name);
            let at = format!("{path}/{name}");
            self.report(
                &at,
                (
                    Rule::RequiredAdded,
                    if known {
                        "field became required: old events may lack it".to_owned()
                    } else {
                        "required field added: old events lack it (a `default` does not make them valid)".to_owned()
                    },
                ),
                (
                    Rule::RequiredRemoved,
                    "field no longer required (or removed): new events may lack it, old readers require it".to_owned(),
                ),
            );
        }
        let at = format!("{path}/*");
        match (&r_extra, &w_extra) {
            (_, Extra::Closed) | (Extra::Open, _) => {}
            (Extra::Closed, _) | (Extra::Schema(_), Extra::Open) => self.report(
                &at,
                (
                    Rule::AdditionalPropertiesTightened,
                    "additionalProperties tightened: old events may carry extra fields the new version refuses".to_owned(),
                ),
                (
                    Rule::AdditionalPropertiesLoosened,
                    "additionalProperties loosened: new events may carry extra fields old readers refuse".to_owned(),
                ),
            ),
            (Extra::Schema(rs), Extra::Schema(ws)) => self.check(rs, ws, &at, depth + 1),
        }
    }
}

/// Type names are a closed set; map them to `'static` so they outlive the schema borrow.
fn leak_type(t: &str) -> &'static str {
    match t {
        "string" => "string",
        "number" => "number",
        "integer" => "integer",
        "boolean" => "boolean",
        "object" => "object",
        "array" => "array",
        "null" => "null",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests;
