//! The peers, run as child processes on the same Redis with the same
//! payload: `omniqueue` (Redis Streams backend) and `apalis-redis` from the
//! separate cargo workspace `bench/peers/rust`, and BullMQ on Node.js from
//! `bench/peers/node`. Each prints one JSON object on stdout:
//! `{"events", "seconds", "latency_us": {"p50","p90","p99","max"} | null,
//!   "cpu_seconds", "peak_rss_kib"}` or `{"unsupported": "why"}`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use crate::measure::{CpuPerMillion, Latency, Meter};
use crate::report::{Role, Row};
use crate::Ctx;

/// What the peer programs can be asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerScenario {
    /// Publish in batches (the peer's bulk API).
    Batched,
    /// Publish one per call, many calls at once.
    Single,
    /// Publish while workers consume and acknowledge; timed to the last ack.
    ConsumeAck,
}

impl PeerScenario {
    fn arg(self) -> &'static str {
        match self {
            PeerScenario::Batched => "publish-batch",
            PeerScenario::Single => "publish-single",
            PeerScenario::ConsumeAck => "publish-consume-ack",
        }
    }
}

#[derive(Debug, Deserialize)]
struct PeerLatency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Deserialize)]
struct PeerOutput {
    events: Option<u64>,
    seconds: Option<f64>,
    latency_us: Option<PeerLatency>,
    cpu_seconds: Option<f64>,
    peak_rss_kib: Option<f64>,
    unsupported: Option<String>,
    note: Option<String>,
}

/// Where the peers are, or why they are not.
#[derive(Debug, Clone, Default)]
pub struct PeerSetup {
    /// The `eventbus-peers` binary (omniqueue and apalis).
    pub rust_bin: Option<PathBuf>,
    /// Why the Rust peers are not available.
    pub rust_missing: Option<String>,
    /// `bench/peers/node` with `node_modules` installed.
    pub node_dir: Option<PathBuf>,
    /// Why the Node.js peer is not available.
    pub node_missing: Option<String>,
}

/// The peer rows of one scenario: omniqueue, apalis, BullMQ.
pub(crate) async fn rows(ctx: &Ctx, scenario: PeerScenario) -> Vec<Row> {
    let setup = &ctx.params.peer_setup();
    let mut out = Vec::new();
    for peer in ["omniqueue", "apalis"] {
        let system = peer_name(peer);
        out.push(match &setup.rust_bin {
            Some(bin) => {
                let mut cmd = Command::new(bin);
                cmd.arg(peer).arg(scenario.arg());
                run(ctx, system, cmd, scenario).await
            }
            None => Row::skipped(
                system,
                Role::Peer,
                setup
                    .rust_missing
                    .clone()
                    .unwrap_or_else(|| "not built (bench/run builds bench/peers/rust)".to_owned()),
            ),
        });
    }
    let system = peer_name("bullmq");
    out.push(match &setup.node_dir {
        Some(dir) => {
            let mut cmd = Command::new("node");
            cmd.arg(dir.join("bench.mjs")).arg(scenario.arg());
            run(ctx, system, cmd, scenario).await
        }
        None => Row::skipped(
            system,
            Role::Peer,
            setup.node_missing.clone().unwrap_or_else(|| {
                "not installed (bench/run installs bench/peers/node from npm)".to_owned()
            }),
        ),
    });
    out
}

fn peer_name(peer: &str) -> &'static str {
    match peer {
        "omniqueue" => "omniqueue 0.3 (Redis Streams)",
        "apalis" => "apalis 1.0 + apalis-redis",
        _ => "BullMQ 6 (Node.js)",
    }
}

async fn run(ctx: &Ctx, system: &str, mut cmd: Command, scenario: PeerScenario) -> Row {
    let p = &ctx.params;
    let ns = format!("{}-peer-{}", ctx.ns, ctx.next_id());
    let events = match scenario {
        PeerScenario::Single => p.peer_events.min(p.events),
        _ => p.peer_events,
    };
    cmd.args(["--redis-url", &ctx.target.redis_url])
        .args(["--prefix", &ns])
        .args(["--events", &events.to_string()])
        .args(["--payload", &p.payload.to_string()])
        .args(["--batch", &p.batch.to_string()])
        .args(["--concurrency", &p.peer_concurrency.to_string()])
        .args(["--publishers", &p.publishers.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("eventbus-bench: {system}: {}", scenario.arg());
    let meter = Meter::start(&ctx.cpu_nodes).await;
    let timeout = Duration::from_secs(p.timeout_secs);
    let result = tokio::task::spawn_blocking(move || {
        let child = cmd.spawn()?;
        let id = child.id();
        // A watchdog kills a peer that hangs.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if rx.recv_timeout(timeout).is_err() {
                let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
            }
        });
        let out = child.wait_with_output();
        let _ = tx.send(());
        let _ = watchdog.join();
        out
    })
    .await;
    let usage = meter.stop().await;
    ctx.cleanup(&ns).await;
    let out = match result {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Row::skipped(system, Role::Peer, format!("could not start: {e}")),
        Err(e) => return Row::skipped(system, Role::Peer, format!("could not run: {e}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parsed = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<PeerOutput>(l).ok());
    let Some(o) = parsed else {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Row::skipped(
            system,
            Role::Peer,
            format!("failed ({}): {}", out.status, last.trim()),
        );
    };
    if let Some(why) = o.unsupported {
        return Row::skipped(system, Role::Peer, format!("cannot: {why}"));
    }
    let (Some(events), Some(seconds)) = (o.events, o.seconds) else {
        return Row::skipped(system, Role::Peer, "printed no figures");
    };
    let scale = 1_000_000.0 / events.max(1) as f64;
    let cpu = usage.per_million(events, true);
    Row {
        system: system.to_owned(),
        role: Role::Peer,
        events,
        seconds,
        events_per_sec: Some(events as f64 / seconds.max(1e-9)),
        latency: o.latency_us.map(|l| Latency {
            p50_ms: l.p50 / 1000.0,
            p90_ms: l.p90 / 1000.0,
            p99_ms: l.p99 / 1000.0,
            max_ms: l.max / 1000.0,
        }),
        cpu_per_million: Some(CpuPerMillion {
            // The peer's own count covers only its timed part; the
            // child-process total also includes its start-up and set-up.
            client: o.cpu_seconds.map_or(cpu.client, |c| c * scale),
            ..cpu
        }),
        peak_rss_mib: o.peak_rss_kib.map(|k| k / 1024.0),
        redis_nodes: usage.redis_nodes.clone(),
        eventbus_ratio: None,
        note: o.note,
    }
}
