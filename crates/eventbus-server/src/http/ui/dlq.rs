//! Dead letters: `GET /ui/dlq` (filter by group, type, key, class, status
//! and time; select), `GET /ui/dlq/{id}` (envelope, error, attempts,
//! audit trail), `GET /ui/dlq/preview` (the dry run of a replay or a
//! discard: how many and which) and `POST /ui/dlq/discard`. Replays run in
//! [`super::replay`].

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Html;
use axum::Extension;
use chrono::{DateTime, NaiveDateTime, Utc};
use eventbus::deadletter::{DeadLetter, DeadLetterFilter, DeadLetterStatus, ReplayOptions};
use uuid::Uuid;

use super::error::UiError;
use super::form::{Form, Query};
use super::html::{clip, count, enc, esc, render, time, Nav};
use super::session::Viewer;
use crate::http::routes::DlqQuery;
use crate::http::{dlq_store, AppState};

/// Who the audit trail names for what the console does.
pub(super) const ACTOR: &str = "console";
/// Rows a preview lists (the count covers them all).
const PREVIEW_ROWS: usize = 200;
/// The most dead letters one action selects (the store's own cap).
pub(super) const MAX_SELECTED: usize = 10_000;

/// The filters of the list, as the operator typed them.
#[derive(Debug, Default, Clone)]
pub(super) struct Selection {
    group: Option<String>,
    event_type: Option<String>,
    key: Option<String>,
    class: Option<String>,
    status: String,
    since: Option<String>,
    limit: i64,
    offset: i64,
}

const FIELDS: [&str; 6] = ["group", "type", "key", "class", "status", "since"];

/// `2026-11-28T09:00`, `2026-11-28T09:00:00` (a `datetime-local` input,
/// read as UTC) or RFC 3339.
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .map(|t| t.and_utc())
}

impl Selection {
    /// Reads the filters of `form` and checks them as the API does.
    pub(super) fn read(form: &Form) -> Result<(Selection, DeadLetterFilter), UiError> {
        let own = |name: &str| form.get(name).map(str::to_owned);
        let status = form.get("status").unwrap_or("new").to_owned();
        let since = own("since");
        let since_time = match &since {
            Some(text) => Some(parse_time(text).ok_or_else(|| {
                UiError::BadRequest(format!(
                    "since {text:?} is not a time: use 2026-11-28T09:00 (UTC) or RFC 3339"
                ))
            })?),
            None => None,
        };
        let sel = Selection {
            group: own("group"),
            event_type: own("type"),
            key: own("key"),
            class: own("class"),
            status,
            since,
            limit: form.number("limit", 100, 1..=1000)?,
            offset: form.number("offset", 0, 0..=1_000_000)?,
        };
        let query = DlqQuery {
            group: sel.group.clone(),
            event_type: sel.event_type.clone(),
            key: sel.key.clone(),
            error_class: sel.class.clone(),
            since: since_time,
            status: (sel.status != "any").then(|| sel.status.clone()),
            limit: Some(sel.limit),
            offset: Some(sel.offset),
        };
        let filter = query.filter()?;
        filter.validate()?;
        Ok((sel, filter))
    }

    fn values(&self) -> [(&'static str, Option<&str>); 6] {
        fn s(o: &Option<String>) -> Option<&str> {
            o.as_deref()
        }
        let values = [
            s(&self.group),
            s(&self.event_type),
            s(&self.key),
            s(&self.class),
            Some(self.status.as_str()),
            s(&self.since),
        ];
        let mut out = [("", None); 6];
        for (i, (name, value)) in FIELDS.iter().zip(values).enumerate() {
            out[i] = (*name, value);
        }
        out
    }

    /// The filters as hidden inputs (carried into the preview).
    fn hidden(&self) -> String {
        let mut out = String::new();
        for (name, value) in self.values() {
            if let Some(v) = value {
                let _ = write!(
                    out,
                    r#"<input type="hidden" name="{name}" value="{}">"#,
                    esc(v)
                );
            }
        }
        out
    }

    /// The filters as a query string (for links), with `offset`.
    fn query(&self, offset: i64) -> String {
        let mut parts: Vec<String> = self
            .values()
            .iter()
            .filter_map(|(n, v)| Some(format!("{n}={}", enc((*v)?))))
            .collect();
        parts.push(format!("limit={}", self.limit));
        parts.push(format!("offset={offset}"));
        parts.join("&amp;")
    }

    fn form(&self) -> String {
        let v = |o: &Option<String>| o.as_deref().map(esc).unwrap_or_default();
        let option = |value: &str, label: &str, current: &str| {
            format!(
                r#"<option value="{value}"{}>{label}</option>"#,
                if value == current { " selected" } else { "" }
            )
        };
        let class = self.class.as_deref().unwrap_or("");
        let classes: String = [
            ("", "any class"),
            ("retryable", "retryable"),
            ("permanent", "permanent"),
            ("invalid", "invalid"),
            ("parked", "parked"),
        ]
        .iter()
        .map(|(value, label)| option(value, label, class))
        .collect();
        let statuses: String = [
            ("new", "new (waiting)"),
            ("replayed", "replayed"),
            ("discarded", "discarded"),
            ("any", "any status"),
        ]
        .iter()
        .map(|(value, label)| option(value, label, &self.status))
        .collect();
        format!(
            r#"<form method="get" action="/ui/dlq" class="filters" aria-label="Filter dead letters">
<div><label for="f-group">Group</label><input id="f-group" name="group" value="{}"></div>
<div><label for="f-type">Event type</label><input id="f-type" name="type" value="{}"></div>
<div><label for="f-key">Key</label><input id="f-key" name="key" value="{}"></div>
<div><label for="f-class">Error class</label><select id="f-class" name="class">{classes}</select></div>
<div><label for="f-status">Status</label><select id="f-status" name="status">{statuses}</select></div>
<div><label for="f-since">Failed since (UTC)</label><input id="f-since" name="since" type="datetime-local" step="1" value="{}"></div>
<div><label for="f-limit">Rows per page</label><input id="f-limit" name="limit" type="number" min="1" max="1000" value="{}"></div>
<div class="actions"><button type="submit">Filter</button> <a href="/ui/dlq">Clear</a></div>
</form>"#,
            v(&self.group),
            v(&self.event_type),
            v(&self.key),
            v(&self.since),
            self.limit,
        )
    }
}

/// One dead letter as a table row; with `pick`, a checkbox for the
/// selection form.
fn row(d: &DeadLetter, pick: bool) -> String {
    let id = d.id.to_string();
    let checkbox = if pick {
        format!(
            r#"<td><input type="checkbox" name="id" value="{id}" form="pick" id="pick-{id}" aria-label="select dead letter {id}"></td>"#
        )
    } else {
        String::new()
    };
    format!(
        r#"<tr data-dead-letter="{id}">{checkbox}<td><a href="/ui/dlq/{id}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td><span class="class">{}</span></td><td class="n">{}</td><td class="error-text">{}</td><td data-k="status:{id}"><span class="status {}">{}</span></td></tr>"#,
        esc(&time(d.last_failed_at)),
        esc(&d.group),
        esc(&d.event_type),
        esc(&d.key),
        esc(&d.error_class),
        count(d.attempts.max(0) as u64, "attempt", "attempts"),
        esc(&clip(&d.error_message, 160)),
        esc(&d.status),
        esc(&d.status),
    )
}

const HEAD: &str = r#"<th scope="col">Last failed</th><th scope="col">Group</th><th scope="col">Type</th><th scope="col">Key</th><th scope="col">Class</th><th scope="col">Attempts</th><th scope="col">Error</th><th scope="col">Status</th>"#;

/// `GET /ui/dlq`.
pub(crate) async fn list(
    State(app): State<Arc<AppState>>,
    Extension(console): Extension<Arc<super::Console>>,
    viewer: Viewer,
    Query(q): Query,
) -> Result<Html<String>, UiError> {
    let (sel, filter) = Selection::read(&q)?;
    let store = dlq_store(&app);
    let rows = store.list(&filter).await?;
    let depth = store.depth().await?;
    let mut body = format!(
        r#"<p data-live="dlq-depth"><span class="n" data-k="depth">{}</span> waiting in all, <span class="n" data-k="rate">{} per minute</span> in the last minute.</p>"#,
        count(depth.depth.max(0) as u64, "dead letter", "dead letters"),
        depth.last_minute.max(0),
    );
    body.push_str(&console.replays.summary());
    body.push_str(&sel.form());
    let _ = write!(
        body,
        r#"<form method="get" action="/ui/dlq/preview" id="pick" class="pick">{}
<fieldset><legend>Preview (a dry run: nothing changes yet)</legend>
<button type="submit" name="do" value="replay-selected">Preview replay of the selected</button>
<button type="submit" name="do" value="replay-filter">Preview replay of all matching the filter</button>
<button type="submit" name="do" value="discard-selected">Preview discard of the selected</button>
<button type="submit" name="do" value="discard-filter">Preview discard of all matching the filter</button>
</fieldset></form>"#,
        sel.hidden()
    );
    if rows.is_empty() {
        body.push_str(r#"<p class="none">No dead letter matches.</p>"#);
    } else {
        let _ = write!(
            body,
            r#"<p>{} shown (from {}).</p><div class="scroll"><table class="dlq"><thead><tr><th scope="col"><span class="sr">Select</span></th>{HEAD}</tr></thead><tbody>"#,
            count(rows.len() as u64, "dead letter", "dead letters"),
            sel.offset + 1,
        );
        for d in &rows {
            body.push_str(&row(d, true));
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str(r#"<nav class="pages" aria-label="Pages">"#);
    if sel.offset > 0 {
        let _ = write!(
            body,
            r#"<a href="/ui/dlq?{}">← newer</a> "#,
            sel.query((sel.offset - sel.limit).max(0))
        );
    }
    if rows.len() as i64 == sel.limit {
        let _ = write!(
            body,
            r#"<a href="/ui/dlq?{}">older →</a>"#,
            sel.query(sel.offset + sel.limit)
        );
    }
    body.push_str("</nav>");
    Ok(Html(render(
        "Dead letters",
        Some(&viewer),
        Nav::DeadLetters,
        &body,
    )))
}

/// The ids of the `id` fields (at least one, at most [`MAX_SELECTED`]).
pub(super) fn ids(form: &Form) -> Result<Vec<Uuid>, UiError> {
    let ids = form
        .all("id")
        .into_iter()
        .map(|id| {
            id.parse::<Uuid>().map_err(|_| {
                UiError::BadRequest(format!(
                    "{:?} is not a dead-letter id (a UUID)",
                    clip(id, 60)
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err(UiError::BadRequest(
            "Select at least one dead letter (or preview all matching the filter).".into(),
        ));
    }
    if ids.len() > MAX_SELECTED {
        return Err(UiError::BadRequest(format!(
            "At most {MAX_SELECTED} dead letters at once."
        )));
    }
    Ok(ids)
}

/// `GET /ui/dlq/preview?do=replay-selected|replay-filter|discard-…`: the
/// dry run, then the form that acts (admin sessions only).
pub(crate) async fn preview(
    State(app): State<Arc<AppState>>,
    viewer: Viewer,
    Query(q): Query,
) -> Result<Html<String>, UiError> {
    let (sel, mut filter) = Selection::read(&q)?;
    let action = q.get("do").unwrap_or("replay-filter");
    let (replay, selected) = match action {
        "replay-selected" | "replay-filter" => (true, action.ends_with("selected")),
        "discard-selected" | "discard-filter" => (false, action.ends_with("selected")),
        other => {
            return Err(UiError::BadRequest(format!(
                "do must be replay-selected, replay-filter, discard-selected or discard-filter, not {:?}",
                clip(other, 40)
            )))
        }
    };
    filter.limit = None;
    filter.offset = None;
    if selected {
        filter = DeadLetterFilter {
            ids: ids(&q)?,
            status: filter.status,
            ..Default::default()
        };
    }
    let store = dlq_store(&app);
    let chosen = if replay {
        store
            .replay(
                &filter,
                &ReplayOptions {
                    dry_run: true,
                    actor: ACTOR.into(),
                    ..Default::default()
                },
            )
            .await?
            .selected
    } else {
        store.discard(&filter, ACTOR, true).await?
    };
    let shown = if chosen.is_empty() {
        Vec::new()
    } else {
        store
            .list(&DeadLetterFilter {
                ids: chosen.iter().take(PREVIEW_ROWS).copied().collect(),
                limit: Some(PREVIEW_ROWS as i64),
                ..Default::default()
            })
            .await?
    };
    let verb = if replay { "replayed" } else { "discarded" };
    let mut body = format!(
        r#"<p class="summary" role="status">Dry run: <strong data-k="preview-count">{}</strong> would be {verb}{}.</p>"#,
        count(chosen.len() as u64, "dead letter", "dead letters"),
        if replay {
            ", each to the replay stream of the group that failed it"
        } else {
            ""
        },
    );
    if chosen.is_empty() {
        body.push_str(r#"<p><a href="/ui/dlq">Back to the dead letters</a></p>"#);
        return Ok(Html(render(
            "Preview",
            Some(&viewer),
            Nav::DeadLetters,
            &body,
        )));
    }
    let hidden_ids: String = chosen
        .iter()
        .map(|id| format!(r#"<input type="hidden" name="id" value="{id}">"#))
        .collect();
    let read_only = if viewer.is_admin() {
        ""
    } else {
        r#"<p class="hint" id="why-disabled">This is a read-only session: log in with the admin token to act.</p>"#
    };
    if replay {
        // Replaying what was previewed again (status replayed) needs that status.
        let status = filter
            .status
            .map_or("new", DeadLetterStatus::as_str)
            .to_owned();
        let _ = write!(
            body,
            r#"<form method="post" action="/ui/dlq/replay" class="act">{}{hidden_ids}<input type="hidden" name="status" value="{}">
<label for="rate">Rate (events per second)</label>
<input id="rate" name="rate" type="number" min="0.01" max="10000" step="any" value="10" required>
<button type="submit" class="primary"{}>Replay {}</button></form>{read_only}"#,
            viewer.csrf_field(),
            esc(&status),
            viewer.disabled(),
            count(chosen.len() as u64, "dead letter", "dead letters"),
        );
    } else {
        let _ = write!(
            body,
            r#"<form method="post" action="/ui/dlq/discard" class="act">{}{hidden_ids}
<button type="submit" class="danger"{}>Discard {}</button></form>{read_only}"#,
            viewer.csrf_field(),
            viewer.disabled(),
            count(chosen.len() as u64, "dead letter", "dead letters"),
        );
    }
    let _ = write!(
        body,
        r#"<p><a href="/ui/dlq?{}">Back to the list</a></p><div class="scroll"><table class="dlq"><thead><tr>{HEAD}</tr></thead><tbody>"#,
        sel.query(0)
    );
    for d in &shown {
        body.push_str(&row(d, false));
    }
    body.push_str("</tbody></table></div>");
    if chosen.len() > shown.len() {
        let _ = write!(
            body,
            "<p>and {} more.</p>",
            count(
                (chosen.len() - shown.len()) as u64,
                "dead letter",
                "dead letters"
            )
        );
    }
    Ok(Html(render(
        if replay {
            "Preview: replay"
        } else {
            "Preview: discard"
        },
        Some(&viewer),
        Nav::DeadLetters,
        &body,
    )))
}

/// `POST /ui/dlq/discard` (form: `csrf`, `id`…): admin sessions only.
pub(crate) async fn discard(
    State(app): State<Arc<AppState>>,
    viewer: Viewer,
    form: Form,
) -> Result<Html<String>, UiError> {
    viewer.may_act(&form)?;
    let ids = ids(&form)?;
    let filter = DeadLetterFilter {
        ids: ids.clone(),
        ..Default::default()
    };
    let done = dlq_store(&app).discard(&filter, ACTOR, false).await?;
    let body = format!(
        r#"<p role="status">Discarded <strong data-k="discarded">{}</strong> of the {} selected (the others were no longer waiting).</p><p><a href="/ui/dlq?status=discarded">See the discarded dead letters</a> · <a href="/ui/dlq">Back to the dead letters</a></p>"#,
        count(done.len() as u64, "dead letter", "dead letters"),
        count(ids.len() as u64, "dead letter", "dead letters"),
    );
    Ok(Html(render(
        "Discarded",
        Some(&viewer),
        Nav::DeadLetters,
        &body,
    )))
}

/// `GET /ui/dlq/{id}`.
pub(crate) async fn show(
    State(app): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Html<String>, UiError> {
    let uuid: Uuid = id.parse().map_err(|_| {
        UiError::BadRequest(format!(
            "{:?} is not a dead-letter id (a UUID)",
            clip(&id, 60)
        ))
    })?;
    let Some((d, history)) = dlq_store(&app).get(uuid).await? else {
        return Err(UiError::NotFound(format!("No dead letter with id {uuid}.")));
    };
    let mut body = String::new();
    let facts: [(&str, String); 13] = [
        ("Status", d.status.clone()),
        ("Group", d.group.clone()),
        ("Event type", d.event_type.clone()),
        ("Key", d.key.clone()),
        ("Event id", d.event_id.to_string()),
        ("Error class", d.error_class.clone()),
        (
            "Attempts",
            count(d.attempts.max(0) as u64, "attempt", "attempts"),
        ),
        ("First failed", time(d.first_failed_at)),
        ("Last failed", time(d.last_failed_at)),
        (
            "Replayed",
            count(d.replay_count.max(0) as u64, "time", "times"),
        ),
        ("Consumer", d.consumer.clone()),
        (
            "Stream and entry",
            format!("{} {} (partition {})", d.stream, d.entry_id, d.partition),
        ),
        ("Origin", d.origin.clone()),
    ];
    body.push_str(r#"<dl class="facts">"#);
    for (name, value) in facts {
        let _ = write!(body, "<dt>{name}</dt><dd>{}</dd>", esc(&value));
    }
    body.push_str("</dl>");
    let _ = write!(
        body,
        r#"<h2>Error</h2><pre class="error-text">{}</pre>"#,
        esc(&d.error_message)
    );
    if d.status != "discarded" {
        let _ = write!(
            body,
            r#"<div class="act-row"><form method="post" action="/ui/dlq/replay" class="inline">{}<input type="hidden" name="id" value="{}"><input type="hidden" name="status" value="{}"><button type="submit" class="primary"{}>Replay this dead letter</button></form>
<form method="post" action="/ui/dlq/discard" class="inline">{}<input type="hidden" name="id" value="{}"><button type="submit" class="danger"{}>Discard</button></form></div>"#,
            viewer.csrf_field(),
            d.id,
            esc(&d.status),
            viewer.disabled(),
            viewer.csrf_field(),
            d.id,
            viewer.disabled(),
        );
    }
    let envelope = serde_json::to_string_pretty(&d.envelope).unwrap_or_default();
    let _ = write!(
        body,
        r#"<h2>Envelope</h2><pre class="json">{}</pre>"#,
        esc(&envelope)
    );
    if let Some(raw) = &d.raw_fields {
        body.push_str(r#"<h2>Stream fields as stored</h2><p class="hint">The entry is not valid text or not an envelope: its exact fields (those that are not UTF-8 in base64).</p><dl class="facts">"#);
        for f in raw {
            let (name, value) = raw_field(f);
            let _ = write!(body, "<dt>{name}</dt><dd><code>{value}</code></dd>");
        }
        body.push_str("</dl>");
    }
    body.push_str(r#"<h2>Attempts and audit trail</h2><div class="scroll"><table><thead><tr><th scope="col">When</th><th scope="col">What</th><th scope="col">Detail</th></tr></thead><tbody>"#);
    for h in &history {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&time(h.at)),
            esc(&h.action),
            esc(&clip(&h.detail.to_string(), 600)),
        );
    }
    body.push_str("</tbody></table></div>");
    Ok(Html(render(
        &format!("Dead letter {}", d.id),
        Some(&viewer),
        Nav::DeadLetters,
        &body,
    )))
}

/// A raw field: its text, or (not UTF-8) its base64, marked so.
fn raw_field(f: &eventbus::deadletter::ShownField) -> (String, String) {
    let part = |text: &Option<String>, b64: &Option<String>| match (text, b64) {
        (Some(t), _) => esc(t),
        (None, Some(b)) => format!("base64: {}", esc(b)),
        (None, None) => String::new(),
    };
    (
        part(&f.name, &f.name_base64),
        part(&f.value, &f.value_base64),
    )
}
