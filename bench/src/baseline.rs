//! The physical limits, measured in the same run: `redis-benchmark` sending
//! `XADD` entries shaped like an encoded envelope, and `pgbench` running
//! custom scripts with the outbox and inbox row shapes.

use std::path::Path;
use std::process::Command;

use eventbus::pg::DbSchema;

use crate::measure::{Latency, Meter};
use crate::report::{Role, Row};
use crate::Ctx;

/// `redis-benchmark -P <pipeline> -c 50 XADD` with the fields of an encoded
/// envelope of the bench's payload, keys spread over the partitions.
pub(crate) async fn redis_xadd(ctx: &Ctx, pipeline: u32, events: u64) -> Row {
    let system = format!("redis-benchmark XADD -P {pipeline} -c 50");
    let url = match url::Url::parse(&ctx.target.redis_url) {
        Ok(u) => u,
        Err(e) => return Row::skipped(system, Role::Baseline, format!("bad Redis URL: {e}")),
    };
    let mut args: Vec<String> = vec![
        "-h".into(),
        url.host_str().unwrap_or("127.0.0.1").to_owned(),
        "-p".into(),
        url.port().unwrap_or(6379).to_string(),
        "-n".into(),
        events.to_string(),
        "-P".into(),
        pipeline.to_string(),
        "-c".into(),
        "50".into(),
        "--csv".into(),
        "-r".into(),
        ctx.target.partitions.to_string(),
    ];
    if let Some(pw) = url.password() {
        args.extend(["-a".into(), pw.to_owned(), "--no-auth-warning".into()]);
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() {
        args.extend(["--dbnum".into(), db.to_owned()]);
    }
    args.extend([
        "XADD".into(),
        format!("{}-base:{{baseline:__rand_int__}}", ctx.ns),
        "*".into(),
    ]);
    for (k, v) in crate::scenarios::envelope(0, ctx.params.payload).to_fields() {
        args.extend([k.to_owned(), v]);
    }
    let meter = Meter::start(&ctx.cpu_nodes).await;
    let out = Command::new("redis-benchmark").args(&args).output();
    let usage = meter.stop().await;
    ctx.cleanup(&format!("{}-base", ctx.ns)).await;
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            return Row::skipped(
                system,
                Role::Baseline,
                format!(
                    "redis-benchmark failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            )
        }
        Err(e) => {
            return Row::skipped(
                system,
                Role::Baseline,
                format!("redis-benchmark not run: {e}"),
            )
        }
    };
    // --csv: a header line, then
    // "XADD ...","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(values) = text.lines().rev().find_map(parse_csv_line) else {
        return Row::skipped(
            system,
            Role::Baseline,
            format!("unexpected redis-benchmark output: {}", text.trim()),
        );
    };
    let rps = values[0];
    let mut row = Row::ours(system, events, &usage);
    row.role = Role::Baseline;
    row.seconds = events as f64 / rps;
    row.events_per_sec = Some(rps);
    row.cpu_per_million = Some(usage.per_million(events, true));
    row.peak_rss_mib = None;
    row.latency = Some(Latency {
        p50_ms: values[3],
        p90_ms: values[4],
        p99_ms: values[5],
        max_ms: values[6],
    });
    row.with_note("its own count; latency p90 column is its p95")
}

/// The numbers of a `--csv` result line, if the line is one. The test
/// name (the command itself, with the JSON `data`) may contain commas and
/// quotes, so the seven numbers are taken from the end.
fn parse_csv_line(line: &str) -> Option<Vec<f64>> {
    let mut fields: Vec<f64> = line
        .rsplitn(8, ',')
        .take(7)
        .map(|f| f.trim().trim_matches('"').parse().ok())
        .collect::<Option<Vec<f64>>>()?;
    if fields.len() != 7 {
        return None;
    }
    fields.reverse();
    Some(fields)
}

/// Which pgbench script to run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PgScript {
    /// 100 outbox rows per transaction, as `Outbox::enqueue_batch` writes them.
    Insert100,
    /// The relay's claim: lock the partition, delete the oldest 1,000
    /// unpublished rows of one partition returning them, commit.
    Claim1000,
    /// One inbox row per transaction, as an inbox consumer commits per event.
    InboxRow,
    /// One outbox row per transaction, as a service writing one event with
    /// its data commits (the trigger runs; a relay is expected to run).
    OutboxRow,
    /// The same row into a plain table without trigger (`bench_plain`,
    /// created by the caller): what the commits cost without the outbox.
    PlainRow,
}

impl PgScript {
    fn name(self) -> &'static str {
        match self {
            PgScript::Insert100 => "pgbench: INSERT 100 outbox rows per tx (-c 4)",
            PgScript::Claim1000 => "pgbench: claim+DELETE 1,000 outbox rows per tx (-c 4)",
            PgScript::InboxRow => "pgbench: 1 inbox row per tx (-c 16)",
            PgScript::OutboxRow => "pgbench: 1 outbox row per tx (-c 8), a relay running",
            PgScript::PlainRow => "pgbench: 1 row per tx into a plain table (-c 8)",
        }
    }

    fn clients(self) -> u32 {
        match self {
            PgScript::InboxRow => 16,
            PgScript::OutboxRow | PgScript::PlainRow => 8,
            _ => 4,
        }
    }

    fn rows_per_tx(self) -> f64 {
        match self {
            PgScript::Insert100 => 100.0,
            PgScript::Claim1000 => 1000.0,
            PgScript::InboxRow | PgScript::OutboxRow | PgScript::PlainRow => 1.0,
        }
    }

    fn sql(self, schema: &DbSchema, payload: usize, partitions: u32) -> String {
        let s = schema.name();
        let pad = "x".repeat(payload.saturating_sub(40));
        match self {
            PgScript::Insert100 => format!(
                "INSERT INTO \"{s}\".eventbus_outbox (event_id, event_type, version, key, partition, source, headers, data) \
                 SELECT gen_random_uuid(), 'work_item.processing_completed', 1, 'wi-' || g, g % {partitions}, 'bench', '{{}}', \
                 '{{\"work_item_id\": \"wi-1\", \"seq\": 1, \"pad\": \"{pad}\"}}' FROM generate_series(1, 100) g;\n"
            ),
            PgScript::Claim1000 => format!(
                "\\set p random(0, {last})\n\
                 BEGIN;\n\
                 SELECT pg_try_advisory_xact_lock(7, :p);\n\
                 WITH batch AS (SELECT id FROM \"{s}\".eventbus_outbox WHERE partition = :p AND published_at IS NULL \
                 ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED) \
                 DELETE FROM \"{s}\".eventbus_outbox o USING batch WHERE o.id = batch.id \
                 RETURNING o.id, o.event_id, o.event_type, o.version, o.key, o.occurred_at, o.source, \
                 o.correlation_id, o.causation_id, o.traceparent, o.headers::text, o.data::text;\n\
                 COMMIT;\n",
                last = partitions.saturating_sub(1)
            ),
            PgScript::InboxRow => format!(
                "INSERT INTO \"{s}\".eventbus_inbox (group_name, event_id, event_type) \
                 VALUES ('bench', gen_random_uuid(), 'work_item.processing_completed') ON CONFLICT DO NOTHING;\n"
            ),
            PgScript::OutboxRow | PgScript::PlainRow => format!(
                "\\set k random(1, 1000000)\n\
                 INSERT INTO \"{s}\".{table} (event_id, event_type, version, key, partition, source, headers, data) \
                 VALUES (gen_random_uuid(), 'work_item.processing_completed', 1, 'wi-' || :k, :k % {partitions}, 'bench', '{{}}', \
                 '{{\"work_item_id\": \"wi-1\", \"seq\": 1, \"pad\": \"{pad}\"}}');\n",
                table = if matches!(self, PgScript::OutboxRow) { "eventbus_outbox" } else { "bench_plain" }
            ),
        }
    }
}

/// How a pgbench run is bounded.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PgLimit {
    /// `-T seconds`.
    Seconds(u64),
    /// `-t transactions` per client.
    Transactions(u64),
}

/// Runs `pgbench` with `script` against the bench schema. `rows` overrides
/// the rows-per-transaction figure (the claim measures what it deleted).
pub(crate) async fn pgbench(
    ctx: &Ctx,
    schema: &DbSchema,
    script: PgScript,
    limit: PgLimit,
    rows: Option<u64>,
) -> Row {
    let name = script.name();
    let dir = std::env::temp_dir().join(format!(
        "eventbus-pgbench-{}-{}",
        std::process::id(),
        ctx.ns
    ));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Row::skipped(name, Role::Baseline, format!("temp dir: {e}"));
    }
    let file = dir.join("script.sql");
    let sql = script.sql(schema, ctx.params.payload, ctx.target.partitions);
    if let Err(e) = std::fs::write(&file, sql) {
        return Row::skipped(name, Role::Baseline, format!("temp file: {e}"));
    }
    let meter = Meter::start(&ctx.cpu_nodes).await;
    let out = run_pgbench(&ctx.target.database_url, &file, script.clients(), limit);
    let usage = meter.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    let (tps, tx, latency_avg) = match out {
        Ok(v) => v,
        Err(e) => return Row::skipped(name, Role::Baseline, e),
    };
    let seconds = tx as f64 / tps;
    let total_rows = rows.unwrap_or((tx as f64 * script.rows_per_tx()) as u64);
    let mut row = Row::ours(name, total_rows, &usage);
    row.role = Role::Baseline;
    row.seconds = seconds;
    row.events_per_sec = Some(total_rows as f64 / seconds);
    row.cpu_per_million = Some(usage.per_million(total_rows, true));
    row.peak_rss_mib = None;
    row.with_note(format!(
        "rows/s; {tps:.0} tx/s, average tx latency {latency_avg:.2} ms"
    ))
}

/// `(tps, transactions, average latency ms)` of one pgbench run.
fn run_pgbench(
    url: &str,
    script: &Path,
    clients: u32,
    limit: PgLimit,
) -> Result<(f64, u64, f64), String> {
    let (flag, n) = match limit {
        PgLimit::Seconds(s) => ("-T", s),
        PgLimit::Transactions(t) => ("-t", t),
    };
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            flag,
            &n.to_string(),
            "-f",
        ])
        .arg(script)
        .arg(url)
        .output()
        .map_err(|e| format!("pgbench not run: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let find = |prefix: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            // `-t` prints "processed: 400/400"
            .and_then(|v| v.split('/').next()?.parse().ok())
    };
    let tps = find("tps = ");
    let tx = find("number of transactions actually processed: ");
    let latency = find("latency average = ").unwrap_or(0.0);
    match (tps, tx, out.status.success()) {
        (Some(tps), Some(tx), true) if tps > 0.0 => Ok((tps, tx as u64, latency)),
        _ => Err(format!(
            "pgbench failed: {} {}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_redis_benchmark_csv() {
        let line = r#""XADD k * data {"a":"b","c":1}","81234.57","0.512","0.104","0.479","0.871","1.223","5.111""#;
        let v = parse_csv_line(line).unwrap();
        assert_eq!(v.len(), 7);
        assert!((v[0] - 81234.57).abs() < 1e-6);
        assert!(parse_csv_line(r#""test","rps","avg_latency_ms""#).is_none());
        assert!(parse_csv_line("garbage").is_none());
    }
}
