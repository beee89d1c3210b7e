//! `GET /ui/groups` and `GET /ui/groups/{group}`: members and their
//! heartbeat deadlines, partition leases (owner, fencing token, age), lag
//! and pending per partition, recent rebalances, the consumers Redis knows
//! with their pending entries, and what the group holds back.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Html;
use eventbus::admin::{GroupConsumers, GroupView};

use super::error::UiError;
use super::html::{cell, count, enc, entries, esc, ms, render, Nav};
use super::session::Viewer;
use crate::http::AppState;

/// A lease taken more recently than this is a recent rebalance.
const RECENT_MS: u64 = 10 * 60 * 1000;
/// Pending entries listed on a group's page at most.
const MAX_PENDING_SHOWN: usize = 50;

/// A group in one line: its mode and health, lag and pending in all.
pub(super) struct GroupSummary {
    pub(super) healthy: bool,
    pub(super) health: String,
    /// `None` when Redis cannot tell the lag of some partition.
    lag: Option<u64>,
    pending: u64,
    ordered: bool,
}

impl GroupSummary {
    pub(super) fn lag_text(&self) -> String {
        self.lag.map_or("unknown".into(), entries)
    }
}

/// Ordered groups are healthy when a live member holds every partition;
/// unordered ones when some consumer is registered.
pub(super) fn summary(g: &GroupView) -> GroupSummary {
    let ordered = !g.members.is_empty() || g.partitions.iter().any(|p| p.owner.is_some());
    let live = g.members.iter().filter(|m| m.expires_in_ms > 0).count() as u64;
    let unowned = g.partitions.iter().filter(|p| p.owner.is_none()).count() as u64;
    let (healthy, health) = if ordered {
        match (live, unowned) {
            (0, _) => (false, "ordered: no live member".to_owned()),
            (_, 0) => (
                true,
                format!("ordered: {}", count(live, "live member", "live members")),
            ),
            (_, n) => (
                false,
                format!(
                    "ordered: {}, {} without owner",
                    count(live, "live member", "live members"),
                    count(n, "partition", "partitions")
                ),
            ),
        }
    } else {
        (true, "unordered".to_owned())
    };
    GroupSummary {
        healthy,
        health,
        lag: g.partitions.iter().map(|p| p.lag).sum(),
        pending: g.partitions.iter().map(|p| p.pending).sum(),
        ordered,
    }
}

/// `GET /ui/groups`.
pub(crate) async fn list(
    State(app): State<Arc<AppState>>,
    viewer: Viewer,
) -> Result<Html<String>, UiError> {
    let topics = eventbus::admin::known_topics(&app.redis, &app.topology).await?;
    let groups = eventbus::admin::groups(&app.redis, &app.topology, &topics, None).await?;
    let held = eventbus::admin::retention_holders(&app.redis, &app.topology).await?;
    let mut body = String::from(r#"<div data-live="groups">"#);
    if groups.is_empty() {
        body.push_str(r#"<p data-k="none">No consumer group reads this namespace yet.</p>"#);
    } else {
        body.push_str(r#"<div class="scroll"><table><thead><tr><th scope="col">Group</th><th scope="col">Mode and health</th><th scope="col">Members</th><th scope="col">Partitions read</th><th scope="col">Lag</th><th scope="col">Pending</th><th scope="col">Holds retention back on</th></tr></thead><tbody>"#);
        for g in &groups {
            let s = summary(g);
            let holds = held.iter().filter(|h| h.group == g.group).count() as u64;
            let n = esc(&g.group);
            let _ = write!(
                body,
                r#"<tr data-group="{n}"><th scope="row"><a href="/ui/groups/{}">{n}</a></th><td data-k="health:{n}"><span class="state {}">{}</span></td>{}{}{}{}{}</tr>"#,
                enc(&g.group),
                if s.healthy { "ok" } else { "bad" },
                esc(&s.health),
                cell(
                    &format!("members:{}", g.group),
                    &count(g.members.len() as u64, "member", "members")
                ),
                cell(
                    &format!("partitions:{}", g.group),
                    &count(g.partitions.len() as u64, "partition", "partitions")
                ),
                cell(&format!("lag:{}", g.group), &s.lag_text()),
                cell(&format!("pending:{}", g.group), &entries(s.pending)),
                cell(
                    &format!("holds:{}", g.group),
                    &count(holds, "stream", "streams")
                ),
            );
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("</div>");
    Ok(Html(render(
        "Consumer groups",
        Some(&viewer),
        Nav::Groups,
        &body,
    )))
}

/// `GET /ui/groups/{group}`.
pub(crate) async fn show(
    State(app): State<Arc<AppState>>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Result<Html<String>, UiError> {
    let topics = eventbus::admin::known_topics(&app.redis, &app.topology).await?;
    let found = eventbus::admin::groups(&app.redis, &app.topology, &topics, Some(&name))
        .await?
        .pop()
        .filter(|g| !g.members.is_empty() || !g.partitions.is_empty());
    let Some(g) = found else {
        return Err(UiError::NotFound(format!(
            "No consumer group {name:?} reads this namespace."
        )));
    };
    let mut streams: Vec<String> = g.partitions.iter().map(|p| p.stream.clone()).collect();
    let replay = app.topology.replay_stream(&g.group);
    let replay_groups = eventbus::admin::stream_groups(&app.redis, &replay).await?;
    if replay_groups.iter().any(|r| r.name == g.group) {
        streams.push(replay.clone());
    }
    let consumers =
        eventbus::admin::group_consumers(&app.redis, &streams, &g.group, MAX_PENDING_SHOWN).await?;
    let held: Vec<_> = eventbus::admin::retention_holders(&app.redis, &app.topology)
        .await?
        .into_iter()
        .filter(|h| h.group == g.group)
        .collect();

    let s = summary(&g);
    let mut body = format!(
        r#"<div data-live="group"><p><span class="state {}" data-k="health">{}</span> · lag <span class="n" data-k="lag">{}</span> · pending <span class="n" data-k="pending">{}</span> · <a href="/ui/dlq?group={}">its dead letters</a></p>"#,
        if s.healthy { "ok" } else { "bad" },
        esc(&s.health),
        esc(&s.lag_text()),
        esc(&entries(s.pending)),
        enc(&g.group),
    );
    body.push_str(r#"<h2>Holds retention back</h2>"#);
    super::overview::held_table(&mut body, &held);
    if s.ordered {
        members(&mut body, &g);
    }
    partitions(&mut body, &g);
    if s.ordered {
        rebalances(&mut body, &g);
    }
    consumers_and_pending(&mut body, &consumers);
    body.push_str("</div>");
    Ok(Html(render(
        &format!("Group {}", g.group),
        Some(&viewer),
        Nav::Groups,
        &body,
    )))
}

fn members(body: &mut String, g: &GroupView) {
    body.push_str(r#"<h2>Members</h2><p class="hint">A member heartbeats within its session timeout or is declared dead, and its partitions move.</p>"#);
    if g.members.is_empty() {
        body.push_str(r#"<p data-k="members-none">No registered member.</p>"#);
        return;
    }
    body.push_str(r#"<div class="scroll"><table><thead><tr><th scope="col">Member</th><th scope="col">Topics</th><th scope="col">Partitions held</th><th scope="col">Heartbeat</th></tr></thead><tbody>"#);
    for m in &g.members {
        let heartbeat = if m.expires_in_ms > 0 {
            match m.heartbeat_age_ms {
                Some(age) => format!(
                    "alive: last heartbeat {} ago, session expires in {}",
                    ms(age.max(0) as u64),
                    ms(m.expires_in_ms as u64)
                ),
                None => format!("alive: session expires in {}", ms(m.expires_in_ms as u64)),
            }
        } else {
            format!(
                "dead: session expired {} ago",
                ms(m.expires_in_ms.unsigned_abs())
            )
        };
        let _ = write!(
            body,
            r#"<tr><th scope="row"><code>{}</code></th><td>{}</td>{}<td class="n" data-k="hb:{}">{}</td></tr>"#,
            esc(&m.id),
            esc(&m.topics.join(", ")),
            cell(
                &format!("held:{}", m.id),
                &count(m.partitions.len() as u64, "partition", "partitions")
            ),
            esc(&m.id),
            esc(&heartbeat),
        );
    }
    body.push_str("</tbody></table></div>");
}

fn partitions(body: &mut String, g: &GroupView) {
    body.push_str(r#"<h2>Partitions</h2><div class="scroll"><table><thead><tr><th scope="col">Topic</th><th scope="col">Partition</th><th scope="col">Lease owner</th><th scope="col">Fencing token</th><th scope="col">Lease age</th><th scope="col">Pending</th><th scope="col">Lag</th></tr></thead><tbody>"#);
    for p in &g.partitions {
        let k = esc(&p.stream);
        let _ = write!(
            body,
            r#"<tr data-stream="{k}"><th scope="row"><a href="/ui/events?topic={}&amp;partition={}">{}</a></th><td class="n">partition {}</td><td data-k="owner:{k}">{}</td>{}{}{}{}</tr>"#,
            enc(&p.topic),
            p.partition,
            esc(&p.topic),
            p.partition,
            p.owner.as_deref().map_or("none".into(), esc),
            cell(
                &format!("token:{}", p.stream),
                &p.token.map_or("none".into(), |t| format!("token {t}"))
            ),
            cell(
                &format!("age:{}", p.stream),
                &p.lease_age_ms.map_or("none".into(), ms)
            ),
            cell(&format!("pending:{}", p.stream), &entries(p.pending)),
            cell(
                &format!("lag:{}", p.stream),
                &p.lag.map_or("unknown".into(), entries)
            ),
        );
    }
    body.push_str("</tbody></table></div>");
}

/// Leases taken in the last [`RECENT_MS`]: each is a handover (its
/// fencing token counts the owners the partition has had).
fn rebalances(body: &mut String, g: &GroupView) {
    let mut recent: Vec<_> = g
        .partitions
        .iter()
        .filter(|p| p.lease_age_ms.is_some_and(|a| a < RECENT_MS))
        .collect();
    recent.sort_by_key(|p| p.lease_age_ms);
    let _ = write!(
        body,
        r#"<h2>Recent rebalances</h2><p class="hint">Partitions whose lease changed hands in the last {}, newest first.</p>"#,
        ms(RECENT_MS)
    );
    if recent.is_empty() {
        body.push_str(r#"<p data-k="rebalances-none">None.</p>"#);
        return;
    }
    body.push_str("<ul>");
    for p in recent {
        let _ = write!(
            body,
            r#"<li>{}:{} → <code>{}</code> (token {}), <span class="n">{} ago</span></li>"#,
            esc(&p.topic),
            p.partition,
            p.owner.as_deref().map_or("none".into(), esc),
            p.token.unwrap_or(0),
            ms(p.lease_age_ms.unwrap_or(0)),
        );
    }
    body.push_str("</ul>");
}

fn consumers_and_pending(body: &mut String, c: &GroupConsumers) {
    body.push_str(r#"<h2>Consumers</h2><p class="hint">As Redis knows them, per stream (unordered consumers compete for every partition).</p>"#);
    if c.consumers.is_empty() {
        body.push_str(r#"<p data-k="consumers-none">No consumer has read yet.</p>"#);
    } else {
        body.push_str(r#"<div class="scroll"><table><thead><tr><th scope="col">Consumer</th><th scope="col">Stream</th><th scope="col">Pending</th><th scope="col">Idle</th></tr></thead><tbody>"#);
        for x in &c.consumers {
            let k = format!("{}|{}", x.stream, x.name);
            let _ = write!(
                body,
                r#"<tr><th scope="row"><code>{}</code></th><td><code>{}</code></td>{}{}</tr>"#,
                esc(&x.name),
                esc(&x.stream),
                cell(&format!("cpending:{k}"), &entries(x.pending)),
                cell(&format!("idle:{k}"), &ms(x.idle_ms)),
            );
        }
        body.push_str("</tbody></table></div>");
    }
    let _ = write!(
        body,
        r#"<h2>Pending entries</h2><p class="hint">Delivered and not acknowledged (the first {} at most).</p>"#,
        MAX_PENDING_SHOWN
    );
    if c.pending.is_empty() {
        body.push_str(r#"<p data-k="pending-none">None.</p>"#);
        return;
    }
    body.push_str(r#"<div class="scroll"><table><thead><tr><th scope="col">Entry</th><th scope="col">Stream</th><th scope="col">Consumer</th><th scope="col">Since delivery</th><th scope="col">Deliveries</th></tr></thead><tbody>"#);
    for p in &c.pending {
        let k = format!("{}|{}", p.stream, p.entry_id);
        let _ = write!(
            body,
            r#"<tr><th scope="row"><a href="/ui/events?q={}"><code>{}</code></a></th><td><code>{}</code></td><td><code>{}</code></td>{}{}</tr>"#,
            enc(&p.entry_id),
            esc(&p.entry_id),
            esc(&p.stream),
            esc(&p.consumer),
            cell(&format!("pidle:{k}"), &ms(p.idle_ms)),
            cell(
                &format!("deliveries:{k}"),
                &count(p.deliveries, "delivery", "deliveries")
            ),
        );
    }
    body.push_str("</tbody></table></div>");
}
