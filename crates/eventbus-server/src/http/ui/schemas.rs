//! `GET /ui/schemas` and `GET /ui/schemas/{type}`: the catalogue's event
//! types, their versions and fields, examples, and how each version
//! compares with the one before (backward and forward).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Html;
use eventbus::catalog::{CompatMode, PairReport};
use serde_json::Value;

use super::error::UiError;
use super::html::{clip, count, enc, esc, render, Nav};
use super::session::Viewer;
use crate::http::AppState;

/// `GET /ui/schemas`.
pub(crate) async fn list(
    State(app): State<Arc<AppState>>,
    viewer: Viewer,
) -> Result<Html<String>, UiError> {
    let report = app.catalog.check_compatibility(CompatMode::Full);
    let mut body = format!(
        r#"<p>{} from <code>{}</code>.</p><div class="scroll"><table><thead><tr><th scope="col">Type</th><th scope="col">Topic</th><th scope="col">Partition key</th><th scope="col">Versions</th><th scope="col">Compatibility (full)</th><th scope="col">Description</th></tr></thead><tbody>"#,
        count(
            app.catalog.types().len() as u64,
            "event type",
            "event types"
        ),
        esc(app.catalog.origin()),
    );
    for t in app.catalog.types() {
        let pairs: Vec<&PairReport> = report
            .pairs
            .iter()
            .filter(|p| p.event_type == t.name())
            .collect();
        let breaking: usize = pairs.iter().map(|p| p.breaking.len()).sum();
        let compat = if pairs.is_empty() {
            "one version".to_owned()
        } else if breaking == 0 {
            "compatible".to_owned()
        } else {
            count(breaking as u64, "breaking change", "breaking changes")
        };
        let versions: Vec<String> = t
            .versions()
            .iter()
            .map(|v| format!("v{}", v.version()))
            .collect();
        let _ = write!(
            body,
            r#"<tr><th scope="row"><a href="/ui/schemas/{}">{}</a></th><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            enc(t.name()),
            esc(t.name()),
            esc(t.topic()),
            esc(t.partition_key()),
            esc(&versions.join(", ")),
            esc(&compat),
            esc(&clip(t.description(), 200)),
        );
    }
    body.push_str("</tbody></table></div>");
    Ok(Html(render("Schemas", Some(&viewer), Nav::Schemas, &body)))
}

/// The top-level fields of a JSON Schema: name, type, required, description.
fn fields(schema: &Value) -> Vec<(String, String, bool, String)> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema["properties"].as_object() else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, p)| {
            let kind = match &p["type"] {
                Value::String(s) => s.clone(),
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" | "),
                _ if p.get("enum").is_some() => "enum".into(),
                _ if p.get("$ref").is_some() => "reference".into(),
                _ => "any".into(),
            };
            let mut about = p["description"].as_str().unwrap_or_default().to_owned();
            if let Some(e) = p["enum"].as_array() {
                let values: Vec<String> = e.iter().map(Value::to_string).collect();
                about = format!("{about} one of {}", values.join(", "))
                    .trim()
                    .to_owned();
            }
            (name.clone(), kind, required.contains(&name.as_str()), about)
        })
        .collect()
}

/// `GET /ui/schemas/{type}`.
pub(crate) async fn show(
    State(app): State<Arc<AppState>>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Result<Html<String>, UiError> {
    let t = app.catalog.get(&name).ok_or_else(|| {
        UiError::NotFound(format!(
            "No event type {:?} in the catalogue.",
            clip(&name, 80)
        ))
    })?;
    let report = app.catalog.check_compatibility(CompatMode::Full);
    let mut body = format!(
        r#"<p>{}</p><dl class="facts"><dt>Topic</dt><dd>{}</dd><dt>Partition key</dt><dd><code>{}</code></dd><dt>Latest version</dt><dd>v{}</dd></dl>"#,
        esc(t.description()),
        esc(t.topic()),
        esc(t.partition_key()),
        t.latest().version(),
    );
    for v in t.versions().iter().rev() {
        let _ = write!(
            body,
            r#"<section aria-labelledby="v{0}"><h2 id="v{0}">Version {0}</h2>"#,
            v.version()
        );
        if let Some(pair) = report
            .pairs
            .iter()
            .find(|p| p.event_type == t.name() && p.to == v.version())
        {
            compat(&mut body, pair);
        }
        body.push_str(r#"<div class="scroll"><table><thead><tr><th scope="col">Field</th><th scope="col">Type</th><th scope="col">Required</th><th scope="col">About</th></tr></thead><tbody>"#);
        for (field, kind, required, about) in fields(v.schema()) {
            let _ = write!(
                body,
                "<tr><th scope=\"row\"><code>{}</code></th><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&field),
                esc(&kind),
                if required { "required" } else { "optional" },
                esc(&about)
            );
        }
        body.push_str("</tbody></table></div>");
        for (i, example) in v.examples().iter().enumerate() {
            let _ = write!(
                body,
                r#"<details><summary>Example {}</summary><pre class="json">{}</pre></details>"#,
                i + 1,
                esc(&serde_json::to_string_pretty(example).unwrap_or_default())
            );
        }
        let _ = write!(
            body,
            r#"<details><summary>JSON Schema (<code>{}</code>)</summary><pre class="json">{}</pre></details></section>"#,
            esc(v.file()),
            esc(&serde_json::to_string_pretty(v.schema()).unwrap_or_default())
        );
    }
    Ok(Html(render(
        &format!("Schema {}", t.name()),
        Some(&viewer),
        Nav::Schemas,
        &body,
    )))
}

fn compat(body: &mut String, pair: &PairReport) {
    let _ = write!(
        body,
        "<p>Compared with v{}: {}{}.</p>",
        pair.from,
        if pair.is_compatible() {
            "compatible both ways".to_owned()
        } else {
            count(
                pair.breaking.len() as u64,
                "breaking change",
                "breaking changes",
            )
        },
        pair.upcaster
            .as_deref()
            .map_or(String::new(), |u| format!(", upcaster: {}", esc(u))),
    );
    let findings = pair.breaking.iter().map(|f| ("breaks", f)).chain(
        pair.covered_by_upcaster
            .iter()
            .map(|f| ("covered by the upcaster", f)),
    );
    let items: String = findings
        .map(|(what, f)| format!("<li>{what}: {}</li>", esc(&f.to_string())))
        .collect();
    if !items.is_empty() {
        let _ = write!(body, "<ul>{items}</ul>");
    }
}
