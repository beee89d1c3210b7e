//! `eventbus dlq list|show|replay|discard|purge|sync`: on the PostgreSQL
//! store when `DATABASE_URL` is set, else on the records the consumers keep
//! in Redis beside `<namespace>:dead` (`sync` copies into PostgreSQL, so it
//! needs it).

use eventbus::deadletter::{DeadLetter, DeadLetterFilter, DeadLetterWriter, ReplayOptions};

use crate::cli::dlq::{DlqArgs, DlqCommand, DlqFilterArgs};
use crate::config::Settings;
use crate::error::{CliError, Result};
use crate::output;

fn filter(f: &DlqFilterArgs) -> DeadLetterFilter {
    DeadLetterFilter {
        group: f.group.clone(),
        event_type: f.event_type.clone(),
        key: f.key.clone(),
        error_class: f.error_class,
        since: f.since,
        ..Default::default()
    }
}

/// Ids, `--all` or filters: an action must say which dead letters.
fn selection(
    ids: Vec<uuid::Uuid>,
    all: bool,
    f: &DlqFilterArgs,
    verb: &str,
) -> Result<DeadLetterFilter> {
    let mut sel = filter(f);
    sel.ids = ids;
    if sel.is_empty() && !all {
        return Err(CliError::Input(format!(
            "dlq {verb}: say which dead letters: give ids, --all, or filters (--group, --type, --key, --error-class, --since)"
        )));
    }
    Ok(sel)
}

fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// Runs `eventbus dlq ...`.
pub(crate) async fn run(args: DlqArgs, settings: &Settings) -> Result<()> {
    let redis = settings.connector()?.shared().await?;
    let store = super::dead_letters(settings, redis.clone(), 2, "dlq").await?;
    match args.command {
        DlqCommand::List {
            filter: f,
            status,
            limit,
            offset,
            json,
        } => {
            let mut sel = filter(&f);
            sel.status = status;
            sel.limit = Some(limit);
            sel.offset = Some(offset);
            let rows = store.list(&sel).await?;
            if json {
                output::json_lines(rows.iter())?;
            } else {
                output::write_stdout(table(&rows).as_bytes())?;
            }
        }
        DlqCommand::Show { id, json } => {
            let Some((dl, audit)) = store.get(id).await? else {
                return Err(CliError::Input(format!("no dead letter with id {id}")));
            };
            if json {
                output::json_line(&serde_json::json!({"dead_letter": dl, "history": audit}))?;
            } else {
                let mut s = format!(
                    "dead letter {}\n  origin: {}\n  group: {}\n  event: {} {} (key {:?})\n  status: {} (replayed {} times)\n  \
                     error: {} after {} attempts: {}\n  source: {} entry {} (partition {}), consumer {}\n  \
                     failed: first {}, last {}\n  envelope: {}\n  history:\n",
                    dl.id, dl.origin, dl.group, dl.event_type, dl.event_id, dl.key, dl.status, dl.replay_count,
                    dl.error_class, dl.attempts, dl.error_message, dl.stream, dl.entry_id, dl.partition,
                    dl.consumer, dl.first_failed_at, dl.last_failed_at, dl.envelope
                );
                if let Some(raw) = &dl.raw_fields {
                    s.insert_str(
                        s.len() - "  history:\n".len(),
                        &format!(
                            "  raw fields: {} (the exact source bytes; --json shows them)\n",
                            raw.len()
                        ),
                    );
                }
                for a in &audit {
                    s.push_str(&format!("    {}  {:<14} {}\n", a.at, a.action, a.detail));
                }
                output::write_stdout(s.as_bytes())?;
            }
        }
        DlqCommand::Replay {
            ids,
            all,
            filter: f,
            dry_run,
            rate,
            to_group,
            json,
        } => {
            if let Some(r) = rate {
                if !(r.is_finite() && r > 0.0) {
                    return Err(CliError::Input(format!(
                        "--rate must be a positive number of events per second, got {r}"
                    )));
                }
            }
            if let Some(g) = &to_group {
                if g.is_empty() || g.chars().any(char::is_whitespace) {
                    return Err(CliError::Input(format!(
                        "--to-group {g:?} is not a group name"
                    )));
                }
            }
            let sel = selection(ids, all, &f, "replay")?;
            let report = store
                .replay(
                    &sel,
                    &ReplayOptions {
                        dry_run,
                        rate_per_sec: rate,
                        to_group,
                        actor: actor(),
                    },
                )
                .await?;
            if json {
                output::json_line(&report)?;
            } else {
                let verb = if dry_run { "would replay" } else { "replayed" };
                let n = if dry_run {
                    report.selected.len()
                } else {
                    report.replayed
                };
                let mut s = format!("{verb} {n} dead letters\n");
                for id in &report.selected {
                    s.push_str(&format!("  {id}\n"));
                }
                output::write_stdout(s.as_bytes())?;
            }
        }
        DlqCommand::Discard {
            ids,
            all,
            filter: f,
            dry_run,
        } => {
            let sel = selection(ids, all, &f, "discard")?;
            let done = store.discard(&sel, &actor(), dry_run).await?;
            let verb = if dry_run {
                "would discard"
            } else {
                "discarded"
            };
            output::write_stdout(format!("{verb} {} dead letters\n", done.len()).as_bytes())?;
        }
        DlqCommand::Sync { since } => {
            // Copies into PostgreSQL: without DATABASE_URL, refused in words.
            let pool = settings.pg.pool(2, "dlq sync").await?;
            sync(pool, redis, since, settings).await?;
        }
        DlqCommand::Purge {
            older_than,
            dry_run,
        } => {
            let n = store.purge(older_than, dry_run).await?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            output::write_stdout(
                format!("{verb} {n} dead letters last failed more than {older_than:?} ago\n")
                    .as_bytes(),
            )?;
        }
    }
    Ok(())
}

/// `dlq sync`: copies Redis-only dead letters since `since` into PostgreSQL.
async fn sync(
    pool: sqlx::PgPool,
    redis: eventbus::RedisConn,
    since: chrono::DateTime<chrono::Utc>,
    settings: &Settings,
) -> Result<()> {
    let topology = settings.topology()?;
    let writer = DeadLetterWriter::new(redis, &topology, Some((pool, settings.pg.schema.clone())));
    let n = writer.backfill(since.timestamp_millis()).await?;
    output::write_stdout(
        format!(
            "copied {n} dead letters from {} to PostgreSQL\n",
            topology.dead_stream()
        )
        .as_bytes(),
    )?;
    Ok(())
}

fn table(rows: &[DeadLetter]) -> String {
    if rows.is_empty() {
        return "no dead letters\n".into();
    }
    let mut s = format!(
        "{:<36}  {:<10}  {:<16}  {:<30}  {:<10}  {:<9}  {:>3}  {}\n",
        "id", "status", "group", "type", "class", "attempts", "rep", "last error"
    );
    for d in rows {
        let err: String = d.error_message.chars().take(60).collect();
        s.push_str(&format!(
            "{:<36}  {:<10}  {:<16}  {:<30}  {:<10}  {:<9}  {:>3}  {}\n",
            d.id, d.status, d.group, d.event_type, d.error_class, d.attempts, d.replay_count, err
        ));
    }
    s
}
