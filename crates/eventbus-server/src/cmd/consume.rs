//! `eventbus consume`: a consumer-group member that prints each event or
//! runs a command per event (the exec protocol of DESIGN.md).
//!
//! Exec protocol: `sh -c CMD` with the envelope JSON on stdin; exit 0 acks,
//! exit 65 is a permanent failure, anything else (or a timeout, after which
//! the command's process group is killed) is retryable. Failures go through
//! the retry policy (`--max-attempts`, `--backoff`) and end in dead letters
//! (`eventbus dlq`). Validation, `--inbox` and `--max-events` are the
//! library's handler layers (`eventbus::layer`) around the action.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus::layer::{InboxLayer, MaxEventsLayer, ValidateLayer};
use eventbus::{
    unique_consumer_name, Consumer, ConsumerConfig, ConsumerStats, Delivery, Handler, HandlerError,
};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::cli::ConsumeArgs;
use crate::config::Settings;
use crate::error::{CliError, Result};
use crate::output;
use crate::sink::http::HttpSink;

/// Exit status of an `--exec` command that reports a permanent failure (`EX_DATAERR`).
const EXIT_PERMANENT: i32 = 65;

/// Runs `eventbus consume`.
pub(crate) async fn run(mut args: ConsumeArgs, settings: &Settings) -> Result<()> {
    // On the command line: secret headers only from a file or the environment.
    args.http.from_command_line = true;
    args.http.env_headers = settings.http_headers.clone();
    let shutdown = super::shutdown_on_signal();
    // The client's mistakes first, whether or not Redis answers.
    group_of(&args, settings)?;
    args.http.headers()?;
    let _metrics = match args.metrics_addr.or(settings.telemetry.metrics_addr) {
        Some(addr) => Some(
            crate::http::metrics::serve_alone(
                addr,
                crate::http::metrics::Gauges::Groups {
                    redis: settings.connector()?.shared().await?,
                    topology: settings.topology()?,
                },
                crate::http::metrics::GAUGE_INTERVAL,
                shutdown.clone(),
            )
            .await?,
        ),
        None => None,
    };
    run_with(args, settings, shutdown, true).await
}

/// The consumer group: `--group`, else `EVENT_BUS_CONSUMER_GROUP`.
fn group_of(args: &ConsumeArgs, settings: &Settings) -> Result<String> {
    args.group
        .clone()
        .or_else(|| settings.consumer_group.clone())
        .ok_or_else(|| {
            CliError::Input(
                "no consumer group: pass --group or set EVENT_BUS_CONSUMER_GROUP".into(),
            )
        })
}

/// Runs one consumer until `shutdown` (which `--max-events` may cancel:
/// pass a child token when others share it); `alerts`: also run the
/// dead-letter alerter (`eventbus serve` runs one for all its consumers).
pub(crate) async fn run_with(
    args: ConsumeArgs,
    settings: &Settings,
    shutdown: CancellationToken,
    alerts: bool,
) -> Result<()> {
    let group = group_of(&args, settings)?;
    // Bad input is reported as such even when Redis is down.
    let http_headers = args.http.headers()?;
    let connector = settings.connector()?;
    let topology = settings.topology()?;
    super::check_topics(&args.topics)?;
    let conn = connector.shared().await?;
    let topics = super::topics_or_default(&conn, settings, &args.topics).await?;
    drop(conn);

    let mut config = ConsumerConfig::new(group.clone(), topics.iter().cloned());
    config.consumer_name = Some(args.consumer.clone().unwrap_or_else(unique_consumer_name));
    config.concurrency = usize::try_from(args.concurrency).unwrap_or(16);
    config.read_count = config.concurrency.max(1);
    config.block = args.block;
    config.claim_idle = args.claim_idle;
    config.claim_interval =
        (args.claim_idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    args.membership.apply(&settings.membership, &mut config)?;
    config.retry = args
        .retry
        .policy(settings.retry_attempts, args.exec.is_some())?;
    config.scheduled_retry_after = args.retry.scheduled_retry_after.0;
    if args.exec.is_some() {
        // Let a running command finish (or time out) before shutdown gives up on it.
        config.shutdown_timeout = args.exec_timeout + Duration::from_secs(5);
        if args.claim_idle < args.exec_timeout {
            tracing::warn!(
                claim_idle = ?args.claim_idle, exec_timeout = ?args.exec_timeout,
                "--claim-idle is shorter than --exec-timeout: a slow command's event may be claimed and run twice at once"
            );
        }
    }

    if let Some(statement) = &args.sql {
        return super::consume_sql::run(
            statement.clone(),
            eventbus::pg::InboxConfig {
                batch: args.inbox_batch as usize,
                savepoints: args.inbox_savepoints.into(),
                ..eventbus::pg::InboxConfig::default()
            },
            connector,
            topology,
            config,
            settings,
            shutdown,
        )
        .await;
    }
    let action = match (&args.exec, &args.http.http) {
        (Some(command), _) => Action::Exec {
            command: command.clone(),
            timeout: args.exec_timeout,
        },
        (None, Some(url)) => Action::Http(HttpSink::new(
            url.clone(),
            args.http.http_timeout,
            &http_headers,
        )?),
        (None, None) => Action::Print,
    };
    let inbox = if args.inbox {
        let pool = settings.pg.pool(settings.pg.pool_size, "consume").await?;
        if !eventbus::pg::is_migrated(
            &mut *pool.acquire().await.map_err(eventbus::Error::from)?,
            &settings.pg.schema,
        )
        .await?
        {
            return Err(eventbus::Error::NotMigrated {
                schema: settings.pg.schema.name().to_owned(),
            }
            .into());
        }
        tokio::spawn(clean_inbox(
            pool.clone(),
            settings.pg.schema.clone(),
            settings.pg.inbox_retention,
            shutdown.clone(),
        ));
        Some(InboxLayer::with_batch(
            eventbus::pg::PoolGate::new(pool),
            settings.pg.schema.clone(),
            args.inbox_batch as usize,
        ))
    } else {
        None
    };
    // Validated against the catalogue (and optionally upcast to each type's
    // latest version) unless --no-validate.
    let validate = if args.no_validate {
        None
    } else {
        let layer = ValidateLayer::new(super::schemas::load_catalog(settings)?);
        Some(if args.upcast {
            layer.upcast_to_latest()
        } else {
            layer
        })
    };
    let handler = Arc::new(CliHandler {
        action,
        shutdown: shutdown.clone(),
        output_error: Mutex::new(None),
    });
    if let Some(alert) = settings
        .alert
        .config(&settings.namespace)
        .filter(|_| alerts)
    {
        // Watches the dead-letter queue while this consumer runs.
        let redis = settings.connector()?.shared().await?;
        let store = super::dead_letters(settings, redis, settings.pg.pool_size, "consume").await?;
        let alerter = eventbus::alert::Alerter::new(alert, store)?;
        tokio::spawn(alerter.run(shutdown.clone()));
    }
    // The layers: validation, the inbox and --max-events, in the library's
    // one order (eventbus::layer).
    let mut builder = Consumer::builder(connector, topology, config)
        .validate(validate)
        .inbox(inbox.clone())
        .max_events(
            args.max_events
                .map(|n| MaxEventsLayer::new(n, shutdown.clone())),
        );
    // With PostgreSQL configured, dead letters are kept there; without it,
    // in Redis beside `<namespace>:dead`. `eventbus dlq` works on either.
    if settings.pg.has_database() {
        let pool = settings.pg.pool(settings.pg.pool_size, "consume").await?;
        builder = builder.dead_letter_store(pool, settings.pg.schema.clone());
    }
    let consumer = builder.handler(handler.clone())?;
    let stats = consumer.stats();
    tracing::info!(group = %group, consumer = consumer.name(), topics = ?topics, "consuming");
    let result = consumer.run(shutdown).await;
    log_stats(&stats);
    if let Some(inbox) = &inbox {
        tracing::info!(
            duplicates_skipped = ConsumerStats::get(&inbox.stats().duplicates),
            "inbox"
        );
    }
    if let Some(e) = handler.output_error.lock().expect("poisoned").take() {
        return Err(CliError::Output(e));
    }
    Ok(result?)
}

fn log_stats(stats: &ConsumerStats) {
    tracing::info!(
        delivered = ConsumerStats::get(&stats.delivered),
        handled = ConsumerStats::get(&stats.handled),
        failed = ConsumerStats::get(&stats.failed),
        invalid = ConsumerStats::get(&stats.invalid),
        rejected = ConsumerStats::get(&stats.rejected),
        claimed = ConsumerStats::get(&stats.claimed),
        acked = ConsumerStats::get(&stats.acked),
        "consumer finished"
    );
}

/// What to do with each event.
enum Action {
    /// Write the envelope as a JSON line to stdout.
    Print,
    /// Run a shell command with the envelope on stdin.
    Exec { command: String, timeout: Duration },
    /// POST the envelope to a URL.
    Http(HttpSink),
}

/// Deletes inbox rows past the retention at start, then hourly.
async fn clean_inbox(
    pool: sqlx::PgPool,
    schema: eventbus::pg::DbSchema,
    retention: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match eventbus::pg::cleanup_inbox(&pool, &schema, retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, ?retention, "inbox retention cleanup"),
            Err(e) => tracing::warn!(error = %e, "inbox retention cleanup failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// The handler behind `consume`: the action (the inbox and `--max-events`
/// are layers around it).
struct CliHandler {
    action: Action,
    shutdown: CancellationToken,
    /// The first stdout error; the consumer is stopped when it happens.
    output_error: Mutex<Option<std::io::Error>>,
}

impl Handler for CliHandler {
    async fn handle(&self, delivery: Delivery) -> std::result::Result<(), HandlerError> {
        match &self.action {
            Action::Print => self.print(&delivery),
            Action::Exec { command, timeout } => run_exec(command, *timeout, &delivery).await,
            Action::Http(sink) => sink.deliver(&delivery).await,
        }
    }
}

impl CliHandler {
    fn print(&self, delivery: &Delivery) -> std::result::Result<(), HandlerError> {
        match output::json_line(&delivery.envelope) {
            Ok(()) => Ok(()),
            Err(CliError::Output(e)) => {
                let message = format!("cannot write to stdout: {e}");
                self.output_error.lock().expect("poisoned").get_or_insert(e);
                self.shutdown.cancel();
                Err(HandlerError::retryable(message))
            }
            Err(e) => Err(HandlerError::retryable(e.to_string())),
        }
    }
}

/// Runs the `--exec` command for one delivery and classifies its outcome.
async fn run_exec(
    command: &str,
    timeout: Duration,
    d: &Delivery,
) -> std::result::Result<(), HandlerError> {
    let mut input = serde_json::to_vec(&d.envelope).expect("an envelope always serializes");
    input.push(b'\n');
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env("EVENTBUS_EVENT_ID", d.envelope.id.to_string())
        .env("EVENTBUS_EVENT_TYPE", &d.envelope.event_type)
        .env("EVENTBUS_EVENT_KEY", &d.envelope.key)
        .env("EVENTBUS_GROUP", &d.group)
        .env("EVENTBUS_STREAM", &d.stream)
        .env("EVENTBUS_ENTRY_ID", &d.entry_id)
        .env("EVENTBUS_REDELIVERED", d.redelivered.to_string())
        // Least privilege: the bus's Redis credentials are not the handler's.
        .env_remove("REDIS_URL")
        .env_remove("REDIS_PASSWORD")
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    // The trace context as environment variables (the attempt's span's with
    // tracing on, else the event's), for a command that continues the trace.
    if let Some(cx) = eventbus::telemetry::context_for(&d.envelope) {
        cmd.env("TRACEPARENT", cx.traceparent);
        if let Some(v) = cx.tracestate {
            cmd.env("TRACESTATE", v);
        }
        if let Some(v) = cx.baggage {
            cmd.env("BAGGAGE", v);
        }
    }
    // Its own process group: a terminal's Ctrl-C reaches only us (so running
    // commands can finish during shutdown), and a timeout kills the whole group.
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| HandlerError::retryable(format!("cannot start `sh -c {command}`: {e}")))?;
    let pid = child.id();
    // Feed stdin concurrently: a command that does not read it must not block us.
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        });
    }
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            return Err(HandlerError::retryable(format!(
                "waiting for the command failed: {e}"
            )))
        }
        Err(_) => {
            kill_group(pid).await;
            let _ = child.kill().await;
            return Err(HandlerError::retryable(format!(
                "command timed out after {timeout:?} and was killed"
            )));
        }
    };
    match status.code() {
        Some(0) => Ok(()),
        Some(EXIT_PERMANENT) => Err(HandlerError::permanent(format!(
            "command exited with {EXIT_PERMANENT} (permanent failure)"
        ))),
        Some(code) => Err(HandlerError::retryable(format!(
            "command exited with {code}"
        ))),
        None => Err(HandlerError::retryable("command was killed by a signal")),
    }
}

/// Kills the process group led by `pid` (the command and anything it started).
async fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid {
        let _ = tokio::process::Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{pid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
    #[cfg(not(unix))]
    let _ = pid;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery() -> Delivery {
        Delivery {
            envelope: eventbus::Envelope::new("a.b", "k", serde_json::json!({"x": 1})),
            stream: "ns:{a:0}".into(),
            topic: "a".into(),
            partition: 0,
            entry_id: "1-0".into(),
            group: "g".into(),
            consumer: "c".into(),
            redelivered: false,
        }
    }

    #[tokio::test]
    async fn exec_outcomes_are_classified() {
        let d = delivery();
        let t = Duration::from_secs(10);
        assert!(run_exec("exit 0", t, &d).await.is_ok());
        let e = run_exec("exit 65", t, &d).await.unwrap_err();
        assert_eq!(e.class, eventbus::ErrorClass::Permanent);
        let e = run_exec("exit 3", t, &d).await.unwrap_err();
        assert_eq!(e.class, eventbus::ErrorClass::Retryable);
        let e = run_exec("sleep 30", Duration::from_millis(200), &d)
            .await
            .unwrap_err();
        assert!(e.message.contains("timed out"), "{}", e.message);
    }

    #[tokio::test]
    async fn exec_gets_the_envelope_and_env() {
        let d = delivery();
        let check = format!(
            r#"test "$EVENTBUS_EVENT_ID" = {} && test "$EVENTBUS_GROUP" = g && grep -q '"type":"a.b"'"#,
            d.envelope.id
        );
        run_exec(&check, Duration::from_secs(10), &d).await.unwrap();
    }
}
