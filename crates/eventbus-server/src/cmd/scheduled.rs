//! `eventbus scheduled list|cancel|run`: the events waiting for their due
//! time, and the scheduler that `relay` and `serve` run too.

use eventbus::schedule::{self, Scheduler, SchedulerConfig};
use eventbus::{RedisConnector, Topology};

use crate::cli::scheduled::{ScheduledArgs, ScheduledCommand};
use crate::config::Settings;
use crate::error::{CliError, Result};
use crate::output;

/// The scheduler of this process's settings.
pub(crate) async fn scheduler(
    connector: &RedisConnector,
    topology: Topology,
    settings: &Settings,
) -> Result<Scheduler> {
    let config = SchedulerConfig {
        max_len: settings.max_len,
        ..SchedulerConfig::default()
    };
    Ok(Scheduler::connect(connector, topology, config).await?)
}

/// Runs `eventbus scheduled`.
pub(crate) async fn run(args: ScheduledArgs, settings: &Settings) -> Result<()> {
    let topology = settings.topology()?;
    let connector = settings.connector()?;
    match args.command {
        ScheduledCommand::List { json, limit } => {
            let conn = connector.shared().await?;
            let limit = usize::try_from(limit).unwrap_or(100);
            let events = schedule::list(&conn, &topology, limit).await?;
            if json {
                output::json_line(&serde_json::json!({
                    "namespace": topology.namespace(),
                    "scheduled": events,
                }))
            } else if events.is_empty() {
                output::write_stdout(b"no scheduled events\n")
            } else {
                output::write_stdout(table(&events).as_bytes())
            }
        }
        ScheduledCommand::Cancel { id, json } => {
            let conn = connector.shared().await?;
            match schedule::cancel(&conn, &topology, &id.to_string()).await? {
                Some(stream) if json => output::json_line(&serde_json::json!({
                    "id": id, "cancelled": true, "stream": stream,
                })),
                Some(stream) => {
                    output::write_stdout(format!("cancelled {id} (was due on {stream})\n").as_bytes())
                }
                None => Err(CliError::Failed(format!(
                    "no scheduled event {id}: it was never scheduled, was cancelled, or was delivered already"
                ))),
            }
        }
        ScheduledCommand::Run => {
            let shutdown = super::shutdown_on_signal();
            let scheduler = scheduler(&connector, topology, settings).await?;
            Ok(scheduler.run(shutdown).await?)
        }
    }
}

fn table(events: &[schedule::ScheduledEvent]) -> String {
    let mut rows = vec![["DELIVER_AT", "ID", "TYPE", "KEY", "STREAM"]
        .map(String::from)
        .to_vec()];
    for e in events {
        let (event_type, key) = match &e.envelope {
            Some(env) => (env.event_type.clone(), env.key.clone()),
            None => ("(unreadable)".into(), "-".into()),
        };
        rows.push(vec![
            e.deliver_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            e.id.clone(),
            event_type,
            key,
            e.stream.clone(),
        ]);
    }
    output::aligned(&rows)
}
