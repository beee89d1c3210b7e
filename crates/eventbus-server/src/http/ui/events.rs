//! `GET /ui/events`: one partition page by page (`XRANGE`, older and
//! newer), a live tail (the page's script asks `GET /ui/events/tail` for
//! what came after the last entry shown), and finding an event by its
//! event id or its stream entry id.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use eventbus::admin::StreamEntry;
use uuid::Uuid;

use super::error::UiError;
use super::form::{Form, Query};
use super::html::{clip, count, enc, esc, esc_bytes, render, Nav};
use super::session::Viewer;
use crate::http::AppState;

/// Entries a find by event id reads at most, over all partitions.
const FIND_BUDGET: u64 = 200_000;
/// Entries of a tail answer at most.
const TAIL_BATCH: usize = 100;

/// The stream a query names: `topic` (a known one) and `partition`.
fn stream_of(
    app: &AppState,
    topics: &BTreeSet<String>,
    q: &Form,
) -> Result<Option<(String, u32, String)>, UiError> {
    let Some(topic) = q.get("topic") else {
        return Ok(None);
    };
    if !topics.contains(topic) {
        return Err(UiError::NotFound(format!(
            "No topic {:?} in this namespace.",
            clip(topic, 80)
        )));
    }
    let last = app.topology.partitions() - 1;
    let partition: u32 = q.number("partition", 0, 0..=last)?;
    Ok(Some((
        topic.to_owned(),
        partition,
        app.topology.stream_key(topic, partition),
    )))
}

/// An entry id from the query (`after`, `before`), checked.
fn entry_param<'a>(q: &'a Form, name: &str) -> Result<Option<&'a str>, UiError> {
    match q.get(name) {
        Some(id) if !eventbus::admin::is_entry_id(id) => Err(UiError::BadRequest(format!(
            "{name} must be a stream entry id (<ms>-<seq>), not {:?}",
            clip(id, 60)
        ))),
        other => Ok(other),
    }
}

/// `GET /ui/events`.
pub(crate) async fn page(
    State(app): State<Arc<AppState>>,
    viewer: Viewer,
    Query(q): Query,
) -> Result<Html<String>, UiError> {
    let topics = eventbus::admin::known_topics(&app.redis, &app.topology).await?;
    let chosen = stream_of(&app, &topics, &q)?;
    let count_per_page: usize = q.number("count", 50, 1..=500)?;
    let mut body = forms(&app, &topics, &q, chosen.as_ref());
    if let Some(text) = q.get("q") {
        find(&mut body, &app, &topics, text).await?;
    } else if let Some((topic, partition, stream)) = &chosen {
        let tail = q.get("tail").is_some();
        let before = entry_param(&q, "before")?;
        let after = entry_param(&q, "after")?;
        let entries =
            if tail || before.is_some() || (after.is_none() && q.get("from") == Some("end")) {
                let mut back =
                    eventbus::admin::read_range_back(&app.redis, stream, before, count_per_page)
                        .await?;
                back.reverse();
                back
            } else {
                eventbus::admin::read_range(&app.redis, stream, after, count_per_page).await?
            };
        let base = format!(
            "/ui/events?topic={}&amp;partition={partition}&amp;count={count_per_page}",
            enc(topic)
        );
        let _ = write!(
            body,
            r#"<h2>Partition {partition} of {} <small><code>{}</code></small></h2>"#,
            esc(topic),
            esc(stream)
        );
        let mut nav =
            format!(r#"<nav class="pages" aria-label="Pages"><a href="{base}">oldest</a> "#);
        if let Some(first) = entries.first() {
            let _ = write!(
                nav,
                r#"<a href="{base}&amp;before={}">← older</a> "#,
                enc(&first.entry_id)
            );
        }
        if let Some(last) = entries.last() {
            let _ = write!(
                nav,
                r#"<a href="{base}&amp;after={}">newer →</a> "#,
                enc(&last.entry_id)
            );
        }
        let _ = write!(
            nav,
            r#"<a href="{base}&amp;from=end">newest</a> <a href="{base}&amp;tail=1">live tail</a></nav>"#
        );
        body.push_str(&nav);
        if tail {
            let last = entries.last().map_or("0-0", |e| e.entry_id.as_str());
            let _ = write!(
                body,
                r#"<p class="hint" role="status">Live tail: new entries are added below as they arrive (checked every 2 s).</p>{}<tbody id="tail" data-tail="/ui/events/tail?topic={}&amp;partition={partition}" data-last="{}">"#,
                TABLE_HEAD,
                enc(topic),
                esc(last),
            );
        } else {
            let _ = write!(
                body,
                "<p>{}.</p>{TABLE_HEAD}<tbody>",
                count(entries.len() as u64, "entry", "entries")
            );
        }
        for e in &entries {
            body.push_str(&row(e));
        }
        body.push_str("</tbody></table></div>");
    } else if topics.is_empty() {
        body.push_str(r#"<p class="none">No topics in this namespace yet.</p>"#);
    }
    Ok(Html(render("Events", Some(&viewer), Nav::Events, &body)))
}

fn forms(
    app: &AppState,
    topics: &BTreeSet<String>,
    q: &Form,
    chosen: Option<&(String, u32, String)>,
) -> String {
    let options: String = topics
        .iter()
        .map(|t| {
            let selected = chosen.is_some_and(|(c, _, _)| c == t);
            format!(
                r#"<option value="{}"{}>{}</option>"#,
                esc(t),
                if selected { " selected" } else { "" },
                esc(t)
            )
        })
        .collect();
    format!(
        r#"<div class="forms"><form method="get" action="/ui/events" class="filters" aria-label="Browse a partition">
<div><label for="e-topic">Topic</label><select id="e-topic" name="topic" required>{options}</select></div>
<div><label for="e-part">Partition (0 to {})</label><input id="e-part" name="partition" type="number" min="0" max="{}" value="{}"></div>
<div><label for="e-after">After entry id</label><input id="e-after" name="after" placeholder="1732784400000-0" value="{}"></div>
<div><label for="e-count">Entries per page</label><input id="e-count" name="count" type="number" min="1" max="500" value="{}"></div>
<div class="actions"><button type="submit">Show</button></div></form>
<form method="get" action="/ui/events" class="filters find" role="search" aria-label="Find an event">
<div class="wide"><label for="e-q">Find by event id or stream entry id</label><input id="e-q" name="q" value="{}" placeholder="019374a2-… or 1732784400000-0"></div>
<div class="actions"><button type="submit">Find</button></div></form></div>"#,
        app.topology.partitions() - 1,
        app.topology.partitions() - 1,
        chosen.map_or(0, |(_, p, _)| *p),
        esc(q.get("after").unwrap_or_default()),
        q.get("count").map_or("50".into(), esc),
        esc(q.get("q").unwrap_or_default()),
    )
}

const TABLE_HEAD: &str = r#"<div class="scroll"><table class="events"><thead><tr><th scope="col">Entry</th><th scope="col">Stream</th><th scope="col">Type</th><th scope="col">Key</th><th scope="col">Event id</th><th scope="col">Occurred</th><th scope="col">Data</th></tr></thead>"#;

/// One entry as a row: its envelope, or (not one) why and its raw fields.
fn row(e: &StreamEntry) -> String {
    let head = format!(
        r#"<tr data-entry="{}"><th scope="row"><code>{}</code></th><td><code>{}</code></td>"#,
        esc(&e.entry_id),
        esc(&e.entry_id),
        esc(&e.stream)
    );
    match &e.envelope {
        Ok(env) => {
            let data = env.data.to_string();
            let pretty = serde_json::to_string_pretty(&env.data).unwrap_or_default();
            format!(
                r#"{head}<td>{} <small>v{}</small></td><td>{}</td><td><a href="/ui/events?q={}"><code data-event-id="{}">{}</code></a></td><td>{}</td><td><details><summary><code>{}</code></summary><pre class="json">{}</pre></details></td></tr>"#,
                esc(&env.event_type),
                env.version,
                esc(&env.key),
                env.id,
                env.id,
                env.id,
                esc(&env.occurred_at.to_rfc3339()),
                esc(&clip(&data, 120)),
                esc(&pretty),
            )
        }
        Err(why) => {
            let fields: String = e
                .fields
                .iter()
                .map(|(k, v)| {
                    format!(
                        "<dt>{}</dt><dd><code>{}</code></dd>",
                        esc_bytes(k),
                        esc_bytes(v)
                    )
                })
                .collect();
            format!(
                r#"{head}<td colspan="4" class="error-text">not an envelope: {}</td><td><details><summary>raw fields</summary><dl class="facts">{fields}</dl></details></td></tr>"#,
                esc(&why.to_string())
            )
        }
    }
}

async fn find(
    body: &mut String,
    app: &AppState,
    topics: &BTreeSet<String>,
    text: &str,
) -> Result<(), UiError> {
    let (found, note) = if eventbus::admin::is_entry_id(text) {
        let found = eventbus::admin::find_entry(&app.redis, &app.topology, topics, text).await?;
        (found, String::new())
    } else if let Ok(id) = text.parse::<Uuid>() {
        let f =
            eventbus::admin::find_event(&app.redis, &app.topology, topics, id, FIND_BUDGET).await?;
        let note = format!(
            "{} read{}.",
            count(f.scanned, "entry", "entries"),
            if f.exhausted {
                " (the search stopped at its limit: the event may be further on)"
            } else {
                ""
            }
        );
        (f.entries, note)
    } else {
        return Err(UiError::BadRequest(format!(
            "{:?} is neither an event id (a UUID) nor a stream entry id (<ms>-<seq>).",
            clip(text, 80)
        )));
    };
    let _ = write!(
        body,
        r#"<h2>Found</h2><p role="status" data-k="found">{} for <code>{}</code>. {}</p>"#,
        count(found.len() as u64, "entry", "entries"),
        esc(text),
        esc(&note)
    );
    if !found.is_empty() {
        body.push_str(TABLE_HEAD);
        body.push_str("<tbody>");
        for e in &found {
            body.push_str(&row(e));
        }
        body.push_str("</tbody></table></div>");
    }
    Ok(())
}

/// `GET /ui/events/tail?topic=…&partition=…&after=…`: the entries after
/// `after`, as table rows in a `<tbody data-last>` (for the live tail).
pub(crate) async fn tail(
    State(app): State<Arc<AppState>>,
    _viewer: Viewer,
    Query(q): Query,
) -> Result<Html<String>, UiError> {
    let topics = eventbus::admin::known_topics(&app.redis, &app.topology).await?;
    let Some((_, _, stream)) = stream_of(&app, &topics, &q)? else {
        return Err(UiError::BadRequest("topic is required".into()));
    };
    let after = entry_param(&q, "after")?;
    let entries = eventbus::admin::read_range(&app.redis, &stream, after, TAIL_BATCH).await?;
    let last = entries
        .last()
        .map(|e| e.entry_id.as_str())
        .or(after)
        .unwrap_or("0-0");
    let rows: String = entries.iter().map(row).collect();
    Ok(Html(format!(
        r#"<!doctype html><table><tbody id="tail" data-last="{}">{rows}</tbody></table>"#,
        esc(last)
    )))
}
