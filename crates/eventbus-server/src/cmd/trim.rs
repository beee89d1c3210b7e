//! `eventbus trim`: ack-aware retention of every stream, now.

use eventbus::retention::{trim_all, TrimReport};

use crate::cli::TrimArgs;
use crate::config::Settings;
use crate::error::Result;
use crate::output;

/// Runs `eventbus trim`.
pub(crate) async fn run(args: TrimArgs, settings: &Settings) -> Result<()> {
    let topology = settings.topology()?;
    let conn = settings.connector()?.shared().await?;
    let reports = trim_all(&conn, &topology, &args.retention, args.dry_run).await?;
    if args.json {
        output::json_line(&serde_json::json!({
            "namespace": topology.namespace(),
            "dry_run": args.dry_run,
            "retention": if args.retention.acked_after.is_some() { "on" } else { "off" },
            "streams": reports,
        }))
    } else {
        output::write_stdout(table(&reports, args.dry_run).as_bytes())
    }
}

fn table(reports: &[TrimReport], dry_run: bool) -> String {
    if reports.is_empty() {
        return "no streams in this namespace yet\n".into();
    }
    let mut rows = vec![["STREAM", "LENGTH", "SAFE POINT", "TRIMMED", "HELD BY"]
        .map(String::from)
        .to_vec()];
    for r in reports {
        rows.push(vec![
            r.stream.clone(),
            r.length_before.to_string(),
            r.safe_point.clone().unwrap_or_else(|| "-".into()),
            if r.trimmed_at_least {
                format!("≥{}", r.trimmed)
            } else {
                r.trimmed.to_string()
            },
            match &r.held_by {
                Some(g) => g.clone(),
                None if r.groups.is_empty() => "(no group)".into(),
                None if r.trimmed == r.length_before => "-".into(),
                None => "(age)".into(),
            },
        ]);
    }
    let mut out = output::aligned(&rows);
    let total: u64 = reports.iter().map(|r| r.trimmed).sum();
    let verb = if dry_run { "would trim" } else { "trimmed" };
    out.push_str(&format!(
        "{verb} {total} entries in {} streams\n",
        reports.len()
    ));
    out
}
