//! `eventbus publish`: one event from flags, or a batch from a JSON-lines
//! file. Every event is checked before anything is sent, so bad input
//! publishes nothing; a batch goes out in chunks, each one pipelined round trip.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use eventbus::topology::validate_event_type;
use eventbus::{Envelope, Published, Publisher, PublisherConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::input::{read_batch, read_input};
use crate::cli::PublishArgs;
use crate::config::Settings;
use crate::error::{CliError, Result};
use crate::output;

/// The source of events published by the CLI unless `--source` says otherwise.
const DEFAULT_SOURCE: &str = "eventbus-cli";

/// One line of a batch file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchLine {
    #[serde(rename = "type")]
    event_type: String,
    key: String,
    data: Value,
    version: Option<u32>,
    headers: Option<BTreeMap<String, String>>,
    source: Option<String>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    traceparent: Option<String>,
    deliver_at: Option<String>,
}

/// What is printed per published event.
#[derive(Debug, Serialize)]
struct PublishedLine<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    event_type: &'a str,
    key: &'a str,
    stream: &'a str,
    partition: u32,
    entry_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    deliver_at: Option<DateTime<Utc>>,
}

/// An event to publish: its batch line (`None` for flags), the event, and
/// when it is due (`None`: now).
type Planned = (Option<usize>, Envelope, Option<DateTime<Utc>>);

/// One event of a batch: its line number, the event, its `deliver_at`.
type BatchEvent = (usize, Envelope, Option<DateTime<Utc>>);

/// Runs `eventbus publish`.
pub(crate) async fn run(args: PublishArgs, settings: &Settings) -> Result<()> {
    // Input is read and checked before connecting: bad input is reported as
    // such even when Redis is down.
    let limit = settings.pg.max_event_bytes;
    let default_due = match (args.delay, args.deliver_at) {
        (Some(delay), _) => Some(
            eventbus::schedule::due_after(delay, settings.max_delay)
                .map_err(|m| CliError::Input(format!("--delay: {m}")))?,
        ),
        (None, at) => at,
    };
    let planned: Vec<Planned> = match &args.batch {
        Some(path) => parse_batch(&read_batch(path, limit)?, &args)?
            .into_iter()
            .map(|(line, e, at)| (Some(line), e, at.or(default_due)))
            .collect(),
        None => vec![(None, single_event(&args, limit)?, default_due)],
    };
    for (line, _, at) in &planned {
        if let Some(at) = at {
            eventbus::schedule::check_deliver_at(*at, settings.max_delay)
                .map_err(|m| CliError::Input(at_line(*line, &m)))?;
        }
    }
    let dues: Vec<Option<DateTime<Utc>>> = if planned.iter().any(|(_, _, at)| at.is_some()) {
        planned.iter().map(|(_, _, at)| *at).collect()
    } else {
        Vec::new()
    };
    let events: Vec<(Option<usize>, Envelope)> =
        planned.into_iter().map(|(line, e, _)| (line, e)).collect();
    if !args.no_validate {
        super::schemas::validate_events(settings, &events)?;
    }
    if args.via_outbox {
        return publish_via_outbox(&events, &dues, settings).await;
    }
    let max_len = match args.max_len {
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => settings.max_len,
    };
    let config = PublisherConfig {
        max_len,
        max_delay: settings.max_delay,
        ..PublisherConfig::default()
    };
    let publisher =
        Publisher::connect(&settings.connector()?, settings.topology()?, config).await?;
    for (line, event) in &events {
        publisher
            .check(event)
            .map_err(|e| CliError::Input(at_line(*line, &e.to_string())))?;
    }
    if events.is_empty() {
        tracing::info!("no events to publish");
        return Ok(());
    }
    let chunk_size = usize::try_from(args.chunk_size).unwrap_or(1000);
    let envelopes: Vec<Envelope> = events.into_iter().map(|(_, e)| e).collect();
    // The events are the job and the output only a receipt: if stdout goes
    // away (`| head`), keep publishing and report the output error at the end.
    let mut output_error = None;
    for (i, chunk) in envelopes.chunks(chunk_size).enumerate() {
        let published = if dues.is_empty() {
            publisher.publish_batch(chunk).await?
        } else {
            let at = &dues[i * chunk_size..i * chunk_size + chunk.len()];
            publisher.publish_batch_at(chunk, at).await?
        };
        if output_error.is_none() {
            output_error = print_published(chunk, &published).err();
        }
    }
    output_error.map_or(Ok(()), Err)
}

/// Writes every event to the outbox in one transaction: all or none. Prints
/// one JSON line per event with its partition (the stream entry comes later,
/// from the relay).
async fn publish_via_outbox(
    events: &[(Option<usize>, Envelope)],
    dues: &[Option<DateTime<Utc>>],
    settings: &Settings,
) -> Result<()> {
    let topology = settings.topology()?;
    let outbox = settings.pg.outbox(&topology)?;
    let pool = settings.pg.pool(2, "publish --via-outbox").await?;
    let envelopes: Vec<Envelope> = events.iter().map(|(_, e)| e.clone()).collect();
    let mut tx = pool.begin().await.map_err(eventbus::Error::from)?;
    for (i, chunk) in envelopes.chunks(1000).enumerate() {
        let written = if dues.is_empty() {
            outbox.enqueue_batch(&mut *tx, chunk).await
        } else {
            let at = &dues[i * 1000..i * 1000 + chunk.len()];
            outbox.enqueue_batch_at(&mut *tx, chunk, at).await
        };
        written.map_err(|e| match e {
            eventbus::Error::InvalidEvent(m) => CliError::Input(m),
            other => other.into(),
        })?;
    }
    tx.commit().await.map_err(eventbus::Error::from)?;
    for (i, e) in envelopes.iter().enumerate() {
        let mut line = serde_json::json!({
            "id": e.id,
            "type": e.event_type,
            "key": e.key,
            "partition": topology.partition_of(&e.key),
            "outbox": settings.pg.schema.name(),
        });
        if let Some(at) = dues.get(i).copied().flatten() {
            line["deliver_at"] = serde_json::json!(at);
        }
        output::json_line(&line)?;
    }
    Ok(())
}

fn at_line(line: Option<usize>, message: &str) -> String {
    match line {
        Some(n) => format!("line {n}: {message}"),
        None => message.to_owned(),
    }
}

fn print_published(events: &[Envelope], published: &[Published]) -> Result<()> {
    let lines: Vec<PublishedLine<'_>> = events
        .iter()
        .zip(published)
        .map(|(e, p)| PublishedLine {
            id: e.id,
            event_type: &e.event_type,
            key: &e.key,
            stream: &p.stream,
            partition: p.partition,
            entry_id: &p.entry_id,
            deliver_at: p.deliver_at,
        })
        .collect();
    output::json_lines(&lines)
}

/// The event given by `--type`, `--key` and `--data` (a `@FILE` read up to
/// `limit` bytes, the event size limit).
fn single_event(args: &PublishArgs, limit: usize) -> Result<Envelope> {
    let (Some(event_type), Some(key), Some(data)) = (&args.event_type, &args.key, &args.data)
    else {
        return Err(CliError::Input(
            "--type, --key and --data are required (or --batch FILE)".into(),
        ));
    };
    let data = match data.strip_prefix('@') {
        Some(path) => {
            let text = read_input("--data file", path, limit).map_err(|e| match e {
                CliError::Input(m) => CliError::Input(format!(
                    "{m}, the event size limit (EVENT_BUS_MAX_EVENT_BYTES)"
                )),
                other => other,
            })?;
            serde_json::from_str(&text)
                .map_err(|e| CliError::Input(format!("--data @{path}: not valid JSON: {e}")))?
        }
        None => serde_json::from_str(data)
            .map_err(|e| CliError::Input(format!("--data is not valid JSON: {e}")))?,
    };
    let mut envelope = Envelope::new(event_type.clone(), key.clone(), data);
    envelope.correlation_id = args.correlation_id.clone();
    envelope.causation_id = args.causation_id.clone();
    let envelope = with_defaults(envelope, None, None, args);
    check_event(&envelope).map_err(CliError::Input)?;
    Ok(envelope)
}

/// Applies `--version`, `--source` and `--header` where the event has no value of its own.
fn with_defaults(
    mut e: Envelope,
    version: Option<u32>,
    source: Option<String>,
    args: &PublishArgs,
) -> Envelope {
    e.version = version.or(args.version).unwrap_or(1);
    e.source = source
        .or_else(|| args.source.clone())
        .unwrap_or_else(|| DEFAULT_SOURCE.to_owned());
    for (name, value) in &args.headers {
        e.headers
            .entry(name.clone())
            .or_insert_with(|| value.clone());
    }
    e
}

/// The checks that need no connection: a `topic.name` type and a non-empty key.
fn check_event(e: &Envelope) -> std::result::Result<(), String> {
    validate_event_type(&e.event_type).map_err(|err| err.to_string())?;
    if e.key.is_empty() {
        return Err(format!(
            "invalid event: key of {} event is empty",
            e.event_type
        ));
    }
    Ok(())
}

/// Parses and checks every line of a batch; the first bad line is the error.
fn parse_batch(text: &str, args: &PublishArgs) -> Result<Vec<BatchEvent>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: BatchLine = serde_json::from_str(line)
            .map_err(|e| CliError::Input(format!("line {n}: {}", describe_json_error(&e))))?;
        let due = parsed
            .deliver_at
            .as_deref()
            .map(eventbus::schedule::parse_deliver_at)
            .transpose()
            .map_err(|m| CliError::Input(format!("line {n}: deliver_at: {m}")))?;
        let mut e = Envelope::new(parsed.event_type, parsed.key, parsed.data);
        e.headers = parsed.headers.unwrap_or_default();
        e.correlation_id = parsed.correlation_id;
        e.causation_id = parsed.causation_id;
        e.traceparent = parsed.traceparent;
        let e = with_defaults(e, parsed.version, parsed.source, args);
        check_event(&e).map_err(|m| CliError::Input(format!("line {n}: {m}")))?;
        out.push((n, e, due));
    }
    Ok(out)
}

/// A serde_json error without its "at line 1 column N" suffix (each batch
/// line is one document), with the column kept for syntax errors.
fn describe_json_error(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    match e.classify() {
        serde_json::error::Category::Data => format!("invalid event: {message}"),
        _ => format!("not valid JSON: {message} (column {})", e.column()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> PublishArgs {
        let mut argv = vec!["eventbus", "publish", "--batch", "-"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Publish(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn parses_a_batch_with_defaults() {
        let text = r#"{"type":"work_order.created","key":"wo-1","data":{"id":"wo-1"}}

{"type":"system.error","key":"api","data":null,"version":2,"headers":{"a":"1"},"source":"svc"}"#;
        let events = parse_batch(text, &args(&["--header", "a=x", "--header", "b=y"])).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].0, 1);
        assert_eq!(events[0].1.source, DEFAULT_SOURCE);
        assert_eq!(events[0].1.version, 1);
        assert_eq!(events[1].0, 3);
        assert_eq!(events[1].1.version, 2);
        assert_eq!(events[1].1.source, "svc");
        assert_eq!(events[1].1.headers["a"], "1");
        assert_eq!(events[1].1.headers["b"], "y");
    }

    #[test]
    fn inputs_are_read_up_to_their_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.json");
        std::fs::write(&file, "x".repeat(100)).unwrap();
        let path = file.to_str().unwrap();
        assert_eq!(read_input("--data file", path, 100).unwrap().len(), 100);
        let e = read_input("--data file", path, 99).unwrap_err();
        assert!(e.to_string().contains("larger than 99 bytes"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = read_input("--data file", "/dev/zero", 1000).unwrap_err();
        assert!(e.to_string().contains("larger than 1000 bytes"), "{e}");

        std::fs::write(&file, "ab\r\ncd\n\nefgh").unwrap();
        assert_eq!(read_batch(path, 4).unwrap(), "ab\r\ncd\n\nefgh");
        let e = read_batch(path, 3).unwrap_err().to_string();
        assert!(e.contains("line 4 is larger than 3 bytes"), "{e}");
        let e = read_batch("/dev/zero", 1000).unwrap_err().to_string();
        assert!(e.contains("line 1 is larger than 1000 bytes"), "{e}");
    }

    #[test]
    fn names_the_bad_line() {
        let good = r#"{"type":"a.b","key":"k","data":1}"#;
        for (bad, needle) in [
            ("{nope", "not valid JSON"),
            (r#"{"type":"a.b","data":1}"#, "missing field `key`"),
            (r#"{"type":"ab","key":"k","data":1}"#, "topic.name"),
            (r#"{"type":"a.b","key":"","data":1}"#, "key"),
            (
                r#"{"type":"a.b","key":"k","data":1,"extra":2}"#,
                "unknown field",
            ),
        ] {
            let text = format!("{good}\n{good}\n{bad}\n{good}\n");
            let err = parse_batch(&text, &args(&[])).unwrap_err().to_string();
            assert!(err.starts_with("line 3: "), "{err}");
            assert!(err.contains(needle), "{err}");
            assert!(!err.contains("line 1 column"), "{err}");
        }
    }
}
