//! Replays started from the console: `POST /ui/dlq/replay` starts one in
//! the background and answers with its page, `GET /ui/dlq/replays/{id}`,
//! which shows its progress live and, once done, whether the group has
//! handled what was replayed.
//!
//! A replay publishes one dead letter at a time through the store (as
//! `POST /v1/dlq/replay` does, so the audit trail and the replay streams
//! are the same), paced to the chosen rate; it runs past the request (the
//! request timeout would cut a slow one). When `serve` stops, a running
//! replay ends where it is: the dead letters not yet replayed stay `new`
//! (one being replayed at that moment may be published and left `new`, to
//! be replayed again: at least once, as with the API).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Extension;
use eventbus::deadletter::{DeadLetterFilter, DeadLetterStatus, DeadLetterStore, ReplayOptions};
use uuid::Uuid;

use super::dlq::{ids, ACTOR};
use super::error::UiError;
use super::form::Form;
use super::html::{clip, count, enc, entries, esc, ms, render, Nav};
use super::session::Viewer;
use super::Console;
use crate::http::error::HttpError;
use crate::http::{dlq_store, AppState};

/// Replays remembered (the oldest finished one is forgotten past it).
const KEPT: usize = 20;
/// Replays running at once at most.
const MAX_RUNNING: usize = 4;
/// Messages of refused dead letters kept per replay.
const MAX_REFUSALS: usize = 5;

/// How far a replay got.
#[derive(Debug, Default)]
struct Progress {
    replayed: u64,
    /// No longer in the status the preview chose (replayed or discarded
    /// meanwhile, or gone).
    skipped: u64,
    refused: Vec<String>,
    refused_count: u64,
    failed: Option<String>,
    finished: Option<Duration>,
}

/// One replay.
pub(crate) struct Replay {
    id: Uuid,
    /// The dead letters, in order, with the group each goes to.
    items: Vec<(Uuid, String)>,
    rate: Option<f64>,
    started: Instant,
    progress: Mutex<Progress>,
}

impl Replay {
    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn running(&self) -> bool {
        self.progress().finished.is_none()
    }
}

/// The replays of this process.
#[derive(Default)]
pub(crate) struct Replays {
    all: Mutex<VecDeque<Arc<Replay>>>,
}

impl Replays {
    fn get(&self, id: Uuid) -> Option<Arc<Replay>> {
        let all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().find(|r| r.id == id).cloned()
    }

    /// Adds `replay`, unless [`MAX_RUNNING`] are running.
    fn add(&self, replay: Arc<Replay>) -> Result<(), UiError> {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        if all.iter().filter(|r| r.running()).count() >= MAX_RUNNING {
            return Err(UiError::BadRequest(format!(
                "{MAX_RUNNING} replays are running already: wait for one to finish."
            )));
        }
        all.push_front(replay);
        while all.len() > KEPT {
            match all.iter().rposition(|r| !r.running()) {
                Some(i) => {
                    all.remove(i);
                }
                None => break,
            }
        }
        Ok(())
    }

    /// The replays of this process as a list of links (empty without any).
    pub(super) fn summary(&self) -> String {
        let all: Vec<Arc<Replay>> = self
            .all
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        if all.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            r#"<section aria-labelledby="h-replays" data-live="replays"><h2 id="h-replays">Replays from this console</h2><ul>"#,
        );
        for r in all {
            let p = r.progress();
            let state = if p.finished.is_some() {
                "finished"
            } else {
                "running"
            };
            let _ = write!(
                out,
                r#"<li><a href="/ui/dlq/replays/{}">replay of {}</a>: <span data-k="replay:{}">{state}, {} replayed</span></li>"#,
                r.id,
                count(r.items.len() as u64, "dead letter", "dead letters"),
                r.id,
                num_of(p.replayed, r.items.len()),
            );
        }
        out.push_str("</ul></section>");
        out
    }
}

fn num_of(done: u64, total: usize) -> String {
    format!("{done} of {total}")
}

/// `POST /ui/dlq/replay` (form: `csrf`, `id`…, `rate` in events per
/// second, `status` the selection was made in): starts a replay and
/// answers 303 to its page. Admin sessions only.
pub(crate) async fn start(
    State(app): State<Arc<AppState>>,
    Extension(console): Extension<Arc<Console>>,
    viewer: Viewer,
    form: Form,
) -> Result<Response, UiError> {
    viewer.may_act(&form)?;
    let ids = ids(&form)?;
    let rate = match form.get("rate") {
        None => None,
        Some(text) => match text.parse::<f64>() {
            Ok(r) if r.is_finite() && (0.01..=10_000.0).contains(&r) => Some(r),
            _ => {
                return Err(UiError::BadRequest(format!(
                    "rate {:?} is not a number of events per second from 0.01 to 10000",
                    clip(text, 40)
                )))
            }
        },
    };
    let status = match form.get("status").unwrap_or("new") {
        s @ ("new" | "replayed") => DeadLetterStatus::parse(s).expect("a status"),
        other => {
            return Err(UiError::BadRequest(format!(
                "status must be new or replayed, not {:?}",
                clip(other, 40)
            )))
        }
    };
    let store = dlq_store(&app);
    let rows = store
        .list(&DeadLetterFilter {
            ids: ids.clone(),
            limit: Some(super::dlq::MAX_SELECTED as i64),
            ..Default::default()
        })
        .await?;
    let group_of: BTreeMap<Uuid, String> = rows.into_iter().map(|d| (d.id, d.group)).collect();
    let items: Vec<(Uuid, String)> = ids
        .iter()
        .map(|id| (*id, group_of.get(id).cloned().unwrap_or_default()))
        .collect();
    let replay = Arc::new(Replay {
        id: Uuid::new_v4(),
        items,
        rate,
        started: Instant::now(),
        progress: Mutex::default(),
    });
    console.replays.add(replay.clone())?;
    tokio::spawn(run(store, replay.clone(), status));
    Ok(Redirect::to(&format!("/ui/dlq/replays/{}", replay.id)).into_response())
}

/// Replays each dead letter of `replay` in turn, at its rate.
async fn run(store: DeadLetterStore, replay: Arc<Replay>, status: DeadLetterStatus) {
    let options = ReplayOptions {
        actor: ACTOR.into(),
        ..Default::default()
    };
    for (i, (id, _)) in replay.items.iter().enumerate() {
        if let Some(rate) = replay.rate {
            let due = replay.started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let filter = DeadLetterFilter {
            ids: vec![*id],
            status: Some(status),
            ..Default::default()
        };
        let result = store.replay(&filter, &options).await;
        let mut p = replay.progress();
        match result {
            Ok(r) if r.replayed > 0 => p.replayed += 1,
            Ok(_) => p.skipped += 1,
            // Not replayable (an outbox row): said why, the others go on.
            Err(eventbus::Error::InvalidEvent(m)) => {
                p.refused_count += 1;
                if p.refused.len() < MAX_REFUSALS {
                    p.refused.push(m);
                }
            }
            Err(e) => {
                p.failed = Some(HttpError::from(e).to_string());
                break;
            }
        }
    }
    replay.progress().finished = Some(replay.started.elapsed());
}

/// `GET /ui/dlq/replays/{id}`.
pub(crate) async fn show(
    State(app): State<Arc<AppState>>,
    Extension(console): Extension<Arc<Console>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Html<String>, UiError> {
    let replay = id
        .parse::<Uuid>()
        .ok()
        .and_then(|id| console.replays.get(id))
        .ok_or_else(|| {
            UiError::NotFound(
                "No such replay in this process (replays are remembered until serve restarts)."
                    .into(),
            )
        })?;
    let total = replay.items.len();
    let (replayed, skipped, refused, refused_count, failed, finished) = {
        let p = replay.progress();
        (
            p.replayed,
            p.skipped,
            p.refused.clone(),
            p.refused_count,
            p.failed.clone(),
            p.finished,
        )
    };
    let done = replayed + skipped + refused_count;
    let elapsed = finished.unwrap_or_else(|| replay.started.elapsed());
    let state = match (&failed, finished) {
        (Some(_), _) => "stopped by an error",
        (None, Some(_)) => "finished",
        (None, None) => "running",
    };
    let mut body = format!(
        r#"<div data-live="replay"><p role="status"><span class="state" data-k="state">{state}</span>: <span class="n" data-k="progress">{} of {total}</span> replayed, <span class="n" data-k="skipped">{}</span>, <span class="n" data-k="refused">{}</span> in <span class="n" data-k="elapsed">{}</span> at {}.</p>
<progress max="{total}" value="{done}" data-k="bar" aria-label="dead letters done">{done} of {total}</progress>"#,
        replayed,
        count(
            skipped,
            "skipped (no longer waiting)",
            "skipped (no longer waiting)"
        ),
        count(refused_count, "refused", "refused"),
        ms(elapsed.as_millis() as u64),
        replay.rate.map_or("full speed".into(), |r| format!(
            "at most {r} events per second"
        )),
    );
    if let Some(f) = &failed {
        let _ = write!(body, r#"<p class="error" role="alert">{}</p>"#, esc(f));
    }
    for m in &refused {
        let _ = write!(body, r#"<p class="error">{}</p>"#, esc(&clip(m, 400)));
    }
    if finished.is_some() && replayed > 0 {
        handled(&mut body, &app, &replay).await?;
    }
    body.push_str(r#"</div><p><a href="/ui/dlq?status=replayed">The replayed dead letters</a> · <a href="/ui/dlq">All waiting</a></p>"#);
    Ok(Html(render(
        "Replay",
        Some(&viewer),
        Nav::DeadLetters,
        &body,
    )))
}

/// Whether each group has handled what was replayed to it: its replay
/// stream is read to the end and acknowledged (lag and pending 0), and
/// none of the dead letters is back (`new`: it failed again).
async fn handled(body: &mut String, app: &AppState, replay: &Replay) -> Result<(), UiError> {
    let ids: Vec<Uuid> = replay.items.iter().map(|(id, _)| *id).collect();
    let now = dlq_store(app)
        .list(&DeadLetterFilter {
            ids,
            limit: Some(super::dlq::MAX_SELECTED as i64),
            ..Default::default()
        })
        .await?;
    let again = now.iter().filter(|d| d.status == "new").count() as u64;
    let mut groups: Vec<&str> = replay.items.iter().map(|(_, g)| g.as_str()).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut all_read = true;
    body.push_str(r#"<h2>Handled?</h2><ul class="plain">"#);
    for g in groups.iter().filter(|g| !g.is_empty()) {
        let stream = app.topology.replay_stream(g);
        let stats = eventbus::admin::stream_groups(&app.redis, &stream).await?;
        let text = match stats.iter().find(|s| s.name == *g) {
            None => {
                all_read = false;
                "no consumer of the group has read its replay stream yet".to_owned()
            }
            Some(s) => {
                all_read &= s.pending == 0 && s.lag == Some(0);
                format!(
                    "lag {}, pending {}",
                    s.lag.map_or("unknown".into(), entries),
                    entries(s.pending)
                )
            }
        };
        let _ = write!(
            body,
            r#"<li><a href="/ui/groups/{}">{}</a>, replay stream <code>{}</code>: <span class="n" data-k="rs:{}">{}</span></li>"#,
            enc(g),
            esc(g),
            esc(&stream),
            esc(g),
            esc(&text),
        );
    }
    body.push_str("</ul>");
    let (class, verdict) = if again > 0 {
        (
            "bad",
            format!(
                "{} failed again and {} back in the dead letters.",
                count(again, "event", "events"),
                if again == 1 { "is" } else { "are" }
            ),
        )
    } else if all_read {
        (
            "ok",
            format!(
                "Handled: the {} replayed were delivered to their group and acknowledged; none failed again.",
                count(replay_count(replay), "event", "events")
            ),
        )
    } else {
        ("", "Waiting for the group to handle them.".to_owned())
    };
    let _ = write!(
        body,
        r#"<p class="verdict {class}" data-k="verdict">{}</p>"#,
        esc(&verdict)
    );
    Ok(())
}

fn replay_count(replay: &Replay) -> u64 {
    replay.progress().replayed
}
