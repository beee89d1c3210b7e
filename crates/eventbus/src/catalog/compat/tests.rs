//! Each rule in both directions, with a failing and a passing pair.

use serde_json::{json, Value};

use super::*;

/// An object schema with the given properties, required names and closedness.
fn object(properties: Value, required: &[&str], closed: bool) -> Value {
    let mut s = json!({"type": "object", "properties": properties, "required": required});
    if closed {
        s["additionalProperties"] = json!(false);
    }
    s
}

/// A closed object whose field `x` has the given schema.
fn field(x: Value) -> Value {
    object(json!({"x": x}), &["x"], true)
}

fn ab(b_required: bool, closed: bool) -> Value {
    let required: &[&str] = if b_required { &["a", "b"] } else { &["a"] };
    object(
        json!({"a": {"type": "string"}, "b": {"type": "string"}}),
        required,
        closed,
    )
}

fn a_only(closed: bool) -> Value {
    object(json!({"a": {"type": "string"}}), &["a"], closed)
}

struct Case {
    rule: Rule,
    mode: CompatMode,
    failing: (Value, Value),
    passing: (Value, Value),
}

fn cases() -> Vec<Case> {
    let string = json!({"type": "string"});
    vec![
        Case {
            rule: Rule::RequiredAdded,
            mode: CompatMode::Backward,
            failing: (a_only(true), ab(true, true)),
            passing: (a_only(true), ab(false, true)),
        },
        Case {
            rule: Rule::RequiredRemoved,
            mode: CompatMode::Forward,
            failing: (ab(true, true), ab(false, true)),
            passing: (ab(false, true), ab(true, true)),
        },
        Case {
            rule: Rule::PropertyAdded,
            mode: CompatMode::Backward,
            failing: (a_only(false), ab(false, false)),
            passing: (a_only(true), ab(false, true)),
        },
        Case {
            rule: Rule::PropertyAdded,
            mode: CompatMode::Forward,
            failing: (a_only(true), ab(false, true)),
            passing: (a_only(false), ab(false, false)),
        },
        Case {
            rule: Rule::PropertyRemoved,
            mode: CompatMode::Backward,
            failing: (ab(false, true), a_only(true)),
            passing: (ab(false, true), a_only(false)),
        },
        Case {
            rule: Rule::PropertyRemoved,
            mode: CompatMode::Forward,
            failing: (ab(false, false), a_only(false)),
            passing: (ab(false, true), a_only(true)),
        },
        Case {
            rule: Rule::AdditionalPropertiesTightened,
            mode: CompatMode::Backward,
            failing: (a_only(false), a_only(true)),
            passing: (a_only(true), a_only(false)),
        },
        Case {
            rule: Rule::AdditionalPropertiesLoosened,
            mode: CompatMode::Forward,
            failing: (a_only(true), a_only(false)),
            passing: (a_only(false), a_only(true)),
        },
        Case {
            rule: Rule::TypeNarrowed,
            mode: CompatMode::Backward,
            failing: (
                field(json!({"type": ["string", "integer"]})),
                field(string.clone()),
            ),
            passing: (
                field(json!({"type": "integer"})),
                field(json!({"type": "number"})),
            ),
        },
        Case {
            rule: Rule::TypeWidened,
            mode: CompatMode::Forward,
            failing: (
                field(json!({"type": "integer"})),
                field(json!({"type": "number"})),
            ),
            passing: (
                field(json!({"type": ["string", "integer"]})),
                field(string.clone()),
            ),
        },
        Case {
            rule: Rule::EnumValueRemoved,
            mode: CompatMode::Backward,
            failing: (
                field(json!({"enum": ["a", "b"]})),
                field(json!({"enum": ["a"]})),
            ),
            passing: (
                field(json!({"enum": ["a"]})),
                field(json!({"enum": ["a", "b"]})),
            ),
        },
        Case {
            rule: Rule::EnumValueAdded,
            mode: CompatMode::Forward,
            failing: (
                field(json!({"const": "a"})),
                field(json!({"enum": ["a", "b"]})),
            ),
            passing: (
                field(json!({"enum": ["a", "b"]})),
                field(json!({"const": "a"})),
            ),
        },
        Case {
            rule: Rule::ConstraintTightened,
            mode: CompatMode::Backward,
            failing: (
                field(json!({"type": "string", "maxLength": 100})),
                field(json!({"type": "string", "maxLength": 50, "pattern": "^a"})),
            ),
            passing: (
                field(json!({"type": "string", "maxLength": 50, "minLength": 2})),
                field(json!({"type": "string", "maxLength": 100, "minLength": 1})),
            ),
        },
        Case {
            rule: Rule::ConstraintLoosened,
            mode: CompatMode::Forward,
            failing: (
                field(json!({"type": "integer", "minimum": 1})),
                field(json!({"type": "integer", "minimum": 0})),
            ),
            passing: (
                field(json!({"type": "integer", "minimum": 0})),
                field(json!({"type": "integer", "minimum": 1})),
            ),
        },
        Case {
            rule: Rule::Uncomparable,
            mode: CompatMode::Backward,
            failing: (
                field(json!({"oneOf": [{"type": "string"}, {"type": "null"}]})),
                field(json!({"oneOf": [{"type": "string"}]})),
            ),
            passing: (
                field(json!({"oneOf": [{"type": "string"}]})),
                field(json!({"oneOf": [{"type": "string"}], "description": "reworded"})),
            ),
        },
        Case {
            rule: Rule::Uncomparable,
            mode: CompatMode::Forward,
            failing: (
                field(json!({"not": {"const": "x"}})),
                field(json!({"not": {"const": "y"}})),
            ),
            passing: (
                field(json!({"not": {"const": "x"}})),
                field(json!({"not": {"const": "x"}})),
            ),
        },
    ]
}

#[test]
fn each_rule_fails_and_passes_in_its_direction() {
    for case in cases() {
        let name = format!("{:?} in {} mode", case.rule, case.mode);
        let found = compare(&case.failing.0, &case.failing.1, case.mode);
        assert!(!found.is_empty(), "{name}: the failing pair passed");
        assert!(
            found.iter().all(|f| f.rule == case.rule),
            "{name}: expected only {:?}, got {found:#?}",
            case.rule
        );
        let found = compare(&case.passing.0, &case.passing.1, case.mode);
        assert!(
            found.is_empty(),
            "{name}: the passing pair broke: {found:#?}"
        );
        // Full mode catches every break of either direction.
        assert!(!compare(&case.failing.0, &case.failing.1, CompatMode::Full).is_empty());
    }
}

#[test]
fn every_rule_is_exercised() {
    let covered: std::collections::HashSet<Rule> = cases().iter().map(|c| c.rule).collect();
    for rule in [
        Rule::RequiredAdded,
        Rule::RequiredRemoved,
        Rule::PropertyAdded,
        Rule::PropertyRemoved,
        Rule::AdditionalPropertiesTightened,
        Rule::AdditionalPropertiesLoosened,
        Rule::TypeNarrowed,
        Rule::TypeWidened,
        Rule::EnumValueRemoved,
        Rule::EnumValueAdded,
        Rule::ConstraintTightened,
        Rule::ConstraintLoosened,
        Rule::Uncomparable,
    ] {
        assert!(covered.contains(&rule), "{rule:?} has no case");
    }
}

#[test]
fn findings_name_the_path_in_words() {
    let old = json!({"type": "object", "properties": {"error": ab(false, true)}});
    let new = json!({"type": "object", "properties": {"error": ab(true, true)}});
    let found = compare(&old, &new, CompatMode::Backward);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "/error/b");
    assert_eq!(found[0].breaks, Direction::Backward);
    assert_eq!(
        found[0].to_string(),
        "/error/b: field became required: old events may lack it [required_added]"
    );
}

#[test]
fn array_items_and_local_refs_are_followed() {
    let old = json!({"type": "array", "items": {"$ref": "#/$defs/item"},
                     "$defs": {"item": {"type": "string", "enum": ["a", "b"]}}});
    let new = json!({"type": "array", "items": {"type": "string", "enum": ["a"]}});
    let found = compare(&old, &new, CompatMode::Backward);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].rule, Rule::EnumValueRemoved);
    assert_eq!(found[0].path, "/[]");
    let dangling = json!({"$ref": "#/$defs/nope"});
    let found = compare(&dangling, &json!({"type": "string"}), CompatMode::Forward);
    assert_eq!(found[0].rule, Rule::Uncomparable);
}

#[test]
fn open_maps_compare_their_value_schemas() {
    let map = |status: Value| json!({"type": "object", "additionalProperties": {"type": "object", "properties": {"status": status}}});
    let found = compare(
        &map(json!({"enum": ["up", "down"]})),
        &map(json!({"enum": ["up"]})),
        CompatMode::Backward,
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "/*/status");
}

#[test]
fn the_shipped_catalogue() {
    let catalog = crate::Catalog::embedded().unwrap();
    let report = catalog.check_compatibility(CompatMode::Backward);
    assert!(report.is_compatible(), "{report:#?}");
    let pair = report
        .pairs
        .iter()
        .find(|p| p.event_type == "work_item.processing_failed")
        .expect("v1 → v2");
    assert!(pair.upcaster.is_some());
    assert_eq!(pair.covered_by_upcaster.len(), 1, "{pair:#?}");
    assert_eq!(pair.covered_by_upcaster[0].rule, Rule::RequiredAdded);
    assert_eq!(pair.covered_by_upcaster[0].path, "/error/category");

    // Old readers refuse v2 events: `error` is closed in v1.
    let report = catalog.check_compatibility(CompatMode::Forward);
    assert!(!report.is_compatible());
    let pair = &report.pairs[0];
    assert_eq!(pair.breaking.len(), 1, "{pair:#?}");
    assert_eq!(pair.breaking[0].rule, Rule::PropertyAdded);
    assert!(!catalog
        .check_compatibility(CompatMode::Full)
        .is_compatible());
}

#[test]
fn without_its_upcaster_the_change_breaks_and_a_bad_upcaster_is_reported() {
    let files: Vec<(String, String)> = crate::catalog::registry::embedded_files()
        .into_iter()
        .collect();
    let bare = crate::Catalog::from_files(files.clone(), "test").unwrap();
    let report = bare.check_compatibility(CompatMode::Backward);
    assert!(!report.is_compatible());
    assert_eq!(report.pairs[0].breaking[0].rule, Rule::RequiredAdded);

    let broken = crate::Catalog::from_files(files, "test")
        .unwrap()
        .with_upcaster(crate::catalog::Upcaster::new(
            "work_item.processing_failed",
            1,
            "forgets the category",
            Ok,
        ))
        .unwrap();
    let report = broken.check_compatibility(CompatMode::Backward);
    let rules: Vec<Rule> = report.pairs[0].breaking.iter().map(|f| f.rule).collect();
    assert!(rules.contains(&Rule::UpcasterFailed), "{report:#?}");
    assert!(rules.contains(&Rule::RequiredAdded), "{report:#?}");
}
