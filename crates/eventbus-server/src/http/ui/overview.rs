//! `GET /ui`: the overview. Health first (relay, consumers, dead letters,
//! Redis memory), then what holds retention back, then every partition
//! with its length and each group's lag and pending. Refreshed live.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use eventbus::admin::{GroupView, HeldStream, PartitionStats};

use super::error::UiError;
use super::groups::{summary, GroupSummary};
use super::html::{bytes, cell, count, enc, entries, esc, ms, num, render, secs, Nav};
use super::session::Viewer;
use crate::http::{dlq_store, AppState};

/// The relay is called behind when its oldest waiting row is older.
const RELAY_BEHIND_SECS: f64 = 30.0;

/// `GET /ui`.
pub(crate) async fn page(
    State(app): State<Arc<AppState>>,
    viewer: Viewer,
) -> Result<Html<String>, UiError> {
    let topics = eventbus::admin::known_topics(&app.redis, &app.topology).await?;
    let stats = eventbus::admin::partition_stats(&app.redis, &app.topology, &topics).await?;
    let groups = eventbus::admin::groups(&app.redis, &app.topology, &topics, None).await?;
    let held = eventbus::admin::retention_holders(&app.redis, &app.topology).await?;
    let depth = dlq_store(&app).depth().await?;
    let outbox = match &app.pg {
        Some(pg) => Some(eventbus::pg::outbox_status(&pg.pool, &pg.schema).await?),
        None => None,
    };
    // INFO may be denied to this Redis user: then memory is not shown.
    let memory = eventbus::retention::redis_memory(&app.redis).await.ok();

    let mut body = String::new();
    body.push_str(r#"<div data-live="health" class="tiles">"#);
    tile_relay(&mut body, outbox.as_deref());
    tile_consumers(&mut body, &groups);
    let _ = write!(
        body,
        r#"<section class="tile" aria-labelledby="t-dlq"><h2 id="t-dlq"><a href="/ui/dlq">Dead letters</a></h2>
<dl><dt>waiting (status new)</dt><dd class="n" data-k="dlq-depth">{}</dd>
<dt>rate</dt><dd class="n" data-k="dlq-rate">{} per minute</dd>
<dt>oldest waiting</dt><dd class="n" data-k="dlq-oldest">{}</dd></dl></section>"#,
        count(depth.depth.max(0) as u64, "dead letter", "dead letters"),
        num(depth.last_minute.max(0) as u64),
        depth.oldest_age_seconds.map_or("none".into(), secs),
    );
    tile_memory(&mut body, memory.as_deref());
    body.push_str("</div>");

    body.push_str(r#"<section aria-labelledby="h-held"><h2 id="h-held">What holds retention back</h2>
<p class="hint">Streams are trimmed up to the oldest entry some group has not acknowledged; the group owning that entry holds the rest back.</p>
<div data-live="held">"#);
    held_table(&mut body, &held);
    body.push_str("</div></section>");

    let _ = write!(
        body,
        r#"<section aria-labelledby="h-streams"><h2 id="h-streams">Streams</h2>
<p class="hint">Namespace <code>{}</code>, {} per topic. Lag: entries not yet delivered to the group; pending: delivered, not acknowledged.</p>
<div data-live="streams">"#,
        esc(app.topology.namespace()),
        count(
            u64::from(app.topology.partitions()),
            "partition",
            "partitions"
        ),
    );
    streams_table(&mut body, &stats);
    body.push_str("</div></section>");
    Ok(Html(render(
        "Overview",
        Some(&viewer),
        Nav::Overview,
        &body,
    )))
}

fn tile_relay(body: &mut String, outbox: Option<&[eventbus::pg::PartitionBacklog]>) {
    body.push_str(
        r#"<section class="tile" aria-labelledby="t-relay"><h2 id="t-relay">Outbox relay</h2>"#,
    );
    match outbox {
        None => body.push_str(r#"<p data-k="relay-state">No outbox: DATABASE_URL is not set.</p>"#),
        Some(parts) => {
            let backlog: i64 = parts.iter().map(|p| p.backlog).sum();
            let oldest = parts
                .iter()
                .filter_map(|p| p.oldest_age_seconds)
                .reduce(f64::max);
            let (state, class) = match oldest {
                None => ("healthy: nothing waiting", "ok"),
                Some(s) if s < RELAY_BEHIND_SECS => ("healthy: relaying", "ok"),
                Some(_) => ("behind: is a relay running?", "bad"),
            };
            let _ = write!(
                body,
                r#"<p><span class="state {class}" data-k="relay-state">{state}</span></p>
<dl><dt>backlog</dt><dd class="n" data-k="outbox-backlog">{}</dd>
<dt>oldest waiting</dt><dd class="n" data-k="outbox-oldest">{}</dd></dl>"#,
                count(backlog.max(0) as u64, "event", "events"),
                oldest.map_or("none".into(), secs),
            );
        }
    }
    body.push_str("</section>");
}

fn tile_consumers(body: &mut String, groups: &[GroupView]) {
    body.push_str(r#"<section class="tile" aria-labelledby="t-groups"><h2 id="t-groups"><a href="/ui/groups">Consumer groups</a></h2>"#);
    if groups.is_empty() {
        body.push_str(r#"<p data-k="groups-none">No consumer group yet.</p></section>"#);
        return;
    }
    body.push_str("<ul class=\"plain\">");
    for g in groups {
        let s: GroupSummary = summary(g);
        let _ = write!(
            body,
            r#"<li><a href="/ui/groups/{}">{}</a> <span class="state {}" data-k="health:{}">{}</span> <span class="n" data-k="glag:{}">lag {}</span></li>"#,
            enc(&g.group),
            esc(&g.group),
            if s.healthy { "ok" } else { "bad" },
            esc(&g.group),
            esc(&s.health),
            esc(&g.group),
            esc(&s.lag_text()),
        );
    }
    body.push_str("</ul></section>");
}

fn tile_memory(body: &mut String, memory: Option<&[eventbus::retention::NodeMemory]>) {
    body.push_str(
        r#"<section class="tile" aria-labelledby="t-mem"><h2 id="t-mem">Redis memory</h2>"#,
    );
    match memory {
        None | Some([]) => body.push_str(
            r#"<p data-k="mem-none">Not readable (INFO is denied to this Redis user).</p>"#,
        ),
        Some(nodes) => {
            body.push_str("<dl>");
            for n in nodes {
                let name = if n.node.is_empty() { "server" } else { &n.node };
                let of = if n.max == 0 {
                    "no maxmemory limit".to_owned()
                } else {
                    format!(
                        "{} of {} maxmemory ({:.1} %)",
                        bytes(n.used),
                        bytes(n.max),
                        n.used as f64 * 100.0 / n.max as f64
                    )
                };
                let used = if n.max == 0 {
                    format!("{} used, {of}", bytes(n.used))
                } else {
                    of
                };
                let _ = write!(
                    body,
                    r#"<dt>{}</dt><dd class="n" data-k="mem:{}">{}</dd>"#,
                    esc(name),
                    esc(name),
                    esc(&used)
                );
                if n.max > 0 {
                    let _ = write!(
                        body,
                        r#"<dd><meter min="0" max="{}" value="{}" high="{}" data-k="meter:{}" aria-label="memory used of maxmemory">{} %</meter></dd>"#,
                        n.max,
                        n.used,
                        n.max / 10 * 8,
                        esc(name),
                        n.used * 100 / n.max,
                    );
                }
            }
            body.push_str("</dl>");
        }
    }
    body.push_str("</section>");
}

/// The streams some group holds back (also on a group's page).
pub(super) fn held_table(body: &mut String, held: &[HeldStream]) {
    if held.is_empty() {
        body.push_str(r#"<p data-k="held-none">Nothing: every group has acknowledged everything it read.</p>"#);
        return;
    }
    body.push_str(
        r#"<div class="scroll"><table><thead><tr><th scope="col">Stream</th><th scope="col">Held back by</th><th scope="col">Oldest unacknowledged entry</th><th scope="col">Its age</th><th scope="col">Stream length</th><th scope="col">Other groups behind</th></tr></thead><tbody>"#,
    );
    for h in held {
        let s = esc(&h.stream);
        let _ = write!(
            body,
            r#"<tr data-held="{s}"><td><code>{s}</code></td><td data-k="holder:{s}"><a href="/ui/groups/{}">{}</a></td><td><code data-k="held-id:{s}">{}</code></td>{}{}<td data-k="held-others:{s}">{}</td></tr>"#,
            enc(&h.group),
            esc(&h.group),
            esc(&h.oldest_unacked),
            cell(&format!("held-age:{}", h.stream), &ms(h.age_ms)),
            cell(&format!("held-len:{}", h.stream), &entries(h.length)),
            if h.others.is_empty() {
                "none".to_owned()
            } else {
                esc(&h.others.join(", "))
            },
        );
    }
    body.push_str("</tbody></table></div>");
}

fn streams_table(body: &mut String, stats: &[PartitionStats]) {
    if stats.is_empty() {
        body.push_str(r#"<p data-k="streams-none">No topics in this namespace yet (publish or consume to create them).</p>"#);
        return;
    }
    body.push_str(
        r#"<div class="scroll"><table class="streams"><thead><tr><th scope="col">Topic</th><th scope="col">Partition</th><th scope="col">Length</th><th scope="col">Group</th><th scope="col">Consumers</th><th scope="col">Pending</th><th scope="col">Lag</th></tr></thead><tbody>"#,
    );
    for p in stats {
        let rows = p.groups.len().max(1);
        let s = &p.stream;
        let _ = write!(
            body,
            r#"<tr data-stream="{}"><th scope="row" rowspan="{rows}"><a href="/ui/events?topic={}&amp;partition={}">{}</a></th><td rowspan="{rows}" class="n">partition {}</td>{}"#,
            esc(s),
            enc(&p.topic),
            p.partition,
            esc(&p.topic),
            p.partition,
            cell_rowspan(&format!("len:{s}"), &entries(p.length), rows),
        );
        if p.groups.is_empty() {
            body.push_str(r#"<td colspan="4" class="none">no group</td></tr>"#);
            continue;
        }
        for (i, g) in p.groups.iter().enumerate() {
            if i > 0 {
                let _ = write!(body, r#"<tr data-stream="{}">"#, esc(s));
            }
            let key = format!("{s}|{}", g.name);
            let _ = write!(
                body,
                r#"<td><a href="/ui/groups/{}">{}</a></td>{}{}{}</tr>"#,
                enc(&g.name),
                esc(&g.name),
                cell(
                    &format!("consumers:{key}"),
                    &count(g.consumers, "consumer", "consumers")
                ),
                cell(&format!("pending:{key}"), &entries(g.pending)),
                cell(
                    &format!("lag:{key}"),
                    &g.lag.map_or("unknown".into(), entries)
                ),
            );
        }
    }
    body.push_str("</tbody></table></div>");
}

fn cell_rowspan(key: &str, text: &str, rows: usize) -> String {
    cell(key, text).replacen("<td ", &format!(r#"<td rowspan="{rows}" "#), 1)
}
