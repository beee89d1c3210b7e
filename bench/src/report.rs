//! The results: sections of rows (ours, baselines, peers), printed as a
//! table or as JSON.

use serde::Serialize;

use crate::measure::{CpuPerMillion, Latency, NodeCpu, Usage};

/// Who a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// eventbus itself.
    Eventbus,
    /// A raw Redis or PostgreSQL tool: the physical limit.
    Baseline,
    /// Another queue library doing the same job.
    Peer,
}

/// One measured (or skipped) figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What ran: `eventbus`, `redis-benchmark XADD -P 16`, `omniqueue`, ...
    pub system: String,
    /// Ours, a baseline or a peer.
    pub role: Role,
    /// Events (or rows) processed; 0 when skipped.
    pub events: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Events per second (for fixed-rate rows: the rate achieved).
    pub events_per_sec: Option<f64>,
    /// Latency percentiles, where measured.
    pub latency: Option<Latency>,
    /// CPU seconds per million events.
    pub cpu_per_million: Option<CpuPerMillion>,
    /// Peak RSS of the process doing the work, MiB.
    pub peak_rss_mib: Option<f64>,
    /// CPU of each Redis node, where more than one was metered (the
    /// single-vs-cluster comparison).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redis_nodes: Vec<NodeCpu>,
    /// The first eventbus row's rate divided by this row's rate.
    pub eventbus_ratio: Option<f64>,
    /// Why a row has no figure (not supported, not installed, failed), or a remark.
    pub note: Option<String>,
}

impl Row {
    /// A measured row of ours: rate and CPU from `usage`.
    pub(crate) fn ours(system: impl Into<String>, events: u64, usage: &Usage) -> Self {
        Row {
            system: system.into(),
            role: Role::Eventbus,
            events,
            seconds: usage.seconds,
            events_per_sec: Some(events as f64 / usage.seconds.max(1e-9)),
            latency: None,
            cpu_per_million: Some(usage.per_million(events, false)),
            peak_rss_mib: usage.peak_rss_mib,
            redis_nodes: usage.redis_nodes.clone(),
            eventbus_ratio: None,
            note: None,
        }
    }

    /// A row with no figure, only a reason.
    pub(crate) fn skipped(system: impl Into<String>, role: Role, why: impl Into<String>) -> Self {
        Row {
            system: system.into(),
            role,
            events: 0,
            seconds: 0.0,
            events_per_sec: None,
            latency: None,
            cpu_per_million: None,
            peak_rss_mib: None,
            redis_nodes: Vec::new(),
            eventbus_ratio: None,
            note: Some(why.into()),
        }
    }

    /// Sets the latency.
    pub(crate) fn with_latency(mut self, latency: Option<Latency>) -> Self {
        self.latency = latency;
        self
    }

    /// Sets a remark.
    pub(crate) fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// One scenario with everything measured beside it.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// Short name, e.g. `publish batched`.
    pub name: String,
    /// What exactly is timed.
    pub what: String,
    /// Ours first, then baselines, then peers.
    pub rows: Vec<Row>,
    /// Whether ratios compare rates (false for fixed-rate latency scenarios).
    pub compare_rates: bool,
    /// Redis memory over time, where sampled (the retention soak).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub memory: Vec<MemorySeries>,
    /// Figures held against a target (the retention soak's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
}

impl Section {
    /// A section comparing rates.
    pub(crate) fn new(name: impl Into<String>, what: impl Into<String>) -> Self {
        Section {
            name: name.into(),
            what: what.into(),
            rows: Vec::new(),
            compare_rates: true,
            memory: Vec::new(),
            checks: Vec::new(),
        }
    }

    /// Fills in `eventbus_ratio` on every row: our first row's rate over the row's.
    pub(crate) fn compute_ratios(&mut self) {
        if !self.compare_rates {
            return;
        }
        let ours = self
            .rows
            .iter()
            .find(|r| r.role == Role::Eventbus)
            .and_then(|r| r.events_per_sec);
        for r in &mut self.rows {
            r.eventbus_ratio = match (ours, r.events_per_sec) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
        }
    }
}

/// One reading of a private Redis during a soak.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MemorySample {
    /// Seconds since publishing started.
    pub secs: f64,
    /// `used_memory` (`INFO memory`), bytes.
    pub used_memory: u64,
    /// Entries in the topic's partition streams (`XLEN`, summed).
    pub stream_entries: u64,
    /// Per group, events published and not yet acknowledged by it.
    pub behind: [u64; 2],
}

/// The samples of one window ("minute") of a [`MemorySeries`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MemoryWindow {
    /// The window's end, in seconds since publishing started.
    pub end_secs: u64,
    /// Its last sample.
    pub last: MemorySample,
    /// The largest `used_memory` in it, bytes.
    pub peak_used_memory: u64,
    /// Per group, the most it was behind in it.
    pub max_behind: [u64; 2],
}

/// Redis `used_memory` over one run of a soak: a sample at the start, one
/// a second, the last at the end, and per window of `window_secs` its last
/// sample and its peak.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemorySeries {
    /// What ran, e.g. `retention on`.
    pub label: String,
    /// The two groups [`MemorySample::behind`] is about, in order.
    pub groups: [String; 2],
    /// Seconds per window (60: the minute).
    pub window_secs: u64,
    /// Every sample, the start (0 s) first.
    pub samples: Vec<MemorySample>,
    /// Window by window; the start sample is in none.
    pub windows: Vec<MemoryWindow>,
    /// The last window's peak `used_memory` ÷ the first window's.
    pub last_over_first: Option<f64>,
}

impl MemorySeries {
    /// The series of `samples` (the start first), cut into windows of
    /// `window_secs` by each sample's time rounded to the second.
    pub(crate) fn new(
        label: impl Into<String>,
        groups: [String; 2],
        window_secs: u64,
        samples: Vec<MemorySample>,
    ) -> Self {
        let window_secs = window_secs.max(1);
        let mut windows: Vec<MemoryWindow> = Vec::new();
        for s in samples.iter().skip(1) {
            let second = s.secs.round().max(1.0) as u64;
            let end_secs = second.div_ceil(window_secs) * window_secs;
            match windows.last_mut() {
                Some(w) if w.end_secs == end_secs => {
                    w.last = *s;
                    w.peak_used_memory = w.peak_used_memory.max(s.used_memory);
                    for (m, b) in w.max_behind.iter_mut().zip(s.behind) {
                        *m = (*m).max(b);
                    }
                }
                _ => windows.push(MemoryWindow {
                    end_secs,
                    last: *s,
                    peak_used_memory: s.used_memory,
                    max_behind: s.behind,
                }),
            }
        }
        let last_over_first = match (windows.first(), windows.last()) {
            (Some(a), Some(b)) if windows.len() > 1 && a.peak_used_memory > 0 => {
                Some(b.peak_used_memory as f64 / a.peak_used_memory as f64)
            }
            _ => None,
        };
        MemorySeries {
            label: label.into(),
            groups,
            window_secs,
            samples,
            windows,
            last_over_first,
        }
    }
}

/// A measured figure held against its target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// What is compared.
    pub what: String,
    /// The figure.
    pub value: f64,
    /// The target in words (`≤ 1.20`); `None` for a figure shown for contrast.
    pub target: Option<String>,
    /// Whether the figure meets the target (`None` without a target).
    pub met: Option<bool>,
}

impl Check {
    /// `value` should be at most `limit`.
    pub(crate) fn at_most(what: impl Into<String>, value: f64, limit: f64) -> Self {
        Check {
            what: what.into(),
            value,
            target: Some(format!("≤ {limit:.2}")),
            met: Some(value <= limit),
        }
    }

    /// `value` should be at least `limit`.
    pub(crate) fn at_least(what: impl Into<String>, value: f64, limit: f64) -> Self {
        Check {
            what: what.into(),
            value,
            target: Some(format!("≥ {limit:.2}")),
            met: Some(value >= limit),
        }
    }

    /// A figure with no target of its own.
    pub(crate) fn contrast(what: impl Into<String>, value: f64) -> Self {
        Check {
            what: what.into(),
            value,
            target: None,
            met: None,
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The table of a memory series: the start, then a line per window.
fn memory_table(out: &mut String, m: &MemorySeries) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "\n{}: Redis used_memory, sampled every second; per {}-s window its last sample and peak",
        m.label, m.window_secs
    );
    let _ = writeln!(
        out,
        "{:>8} {:>10} {:>10} {:>14} {:>16} {:>16}",
        "t s",
        "used MiB",
        "peak MiB",
        "stream entries",
        format!("{} behind ≤", m.groups[0]),
        format!("{} behind ≤", m.groups[1]),
    );
    if let Some(s) = m.samples.first() {
        let _ = writeln!(
            out,
            "{:>8} {:>10.1} {:>10} {:>14} {:>16} {:>16}",
            "start",
            mib(s.used_memory),
            "-",
            s.stream_entries,
            s.behind[0],
            s.behind[1]
        );
    }
    for w in &m.windows {
        let _ = writeln!(
            out,
            "{:>8} {:>10.1} {:>10.1} {:>14} {:>16} {:>16}",
            w.end_secs,
            mib(w.last.used_memory),
            mib(w.peak_used_memory),
            w.last.stream_entries,
            w.max_behind[0],
            w.max_behind[1]
        );
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the run started (UTC, RFC 3339).
    pub date: String,
    /// Cores and CPU model.
    pub machine: String,
    /// `/proc/loadavg`'s 1-minute load before and after the run.
    pub load_before: f64,
    /// See `load_before`.
    pub load_after: f64,
    /// Redis server version.
    pub redis_version: String,
    /// The parameters, as given.
    pub params: serde_json::Value,
    /// The scenarios.
    pub sections: Vec<Section>,
    /// The single-vs-cluster comparison (`eventbus-bench --cluster`), one
    /// row per scenario; empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comparison: Vec<Comparison>,
}

/// One scenario measured on one Redis and on a Redis Cluster in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The scenario, e.g. `publish batched`.
    pub scenario: String,
    /// Events/s on the one Redis (`None` if it failed).
    pub single_events_per_sec: Option<f64>,
    /// Events/s on the cluster.
    pub cluster_events_per_sec: Option<f64>,
    /// Cluster ÷ single.
    pub cluster_over_single: Option<f64>,
    /// CPU of this (client) process as a share of one core, on the one Redis.
    pub single_client_core_percent: Option<f64>,
    /// The same on the cluster.
    pub cluster_client_core_percent: Option<f64>,
    /// Every Redis node's CPU on the one Redis (master, replica).
    pub single_nodes: Vec<NodeCpu>,
    /// Every node's CPU on the cluster (masters, then replicas).
    pub cluster_nodes: Vec<NodeCpu>,
}

impl Comparison {
    /// The comparison of two rows of the same scenario.
    pub(crate) fn of(scenario: impl Into<String>, single: &Row, cluster: &Row) -> Self {
        let ratio = match (single.events_per_sec, cluster.events_per_sec) {
            (Some(a), Some(b)) if a > 0.0 => Some(b / a),
            _ => None,
        };
        Comparison {
            scenario: scenario.into(),
            single_events_per_sec: single.events_per_sec,
            cluster_events_per_sec: cluster.events_per_sec,
            cluster_over_single: ratio,
            single_client_core_percent: single.client_core_percent(),
            cluster_client_core_percent: cluster.client_core_percent(),
            single_nodes: single.redis_nodes.clone(),
            cluster_nodes: cluster.redis_nodes.clone(),
        }
    }
}

impl Row {
    /// CPU of the client process over the timed part as a share of one core.
    fn client_core_percent(&self) -> Option<f64> {
        let c = self.cpu_per_million.as_ref()?;
        (self.seconds > 0.0).then(|| 100.0 * c.client * self.events as f64 / 1e6 / self.seconds)
    }
}

/// `85` or `41/39/44` (percent of a core) of the masters or replicas in `nodes`.
fn node_percents(nodes: &[NodeCpu], master: bool) -> String {
    let v: Vec<String> = nodes
        .iter()
        .filter(|n| n.master == master)
        .map(|n| format!("{:.0}", n.core_percent))
        .collect();
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.join("/")
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn fmt_rate(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.0}", v))
}

impl Report {
    /// The report as a plain-text table, one block per section.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} · {} · Redis {} · load {:.2} → {:.2}",
            self.date, self.machine, self.redis_version, self.load_before, self.load_after
        );
        let _ = writeln!(out, "parameters: {}", self.params);
        let _ = writeln!(
            out,
            "CPU s/M = CPU seconds per million events of the client process · Redis · PostgreSQL; \
             ratio = eventbus's rate ÷ the row's rate"
        );
        for s in &self.sections {
            let _ = writeln!(out, "\n## {} — {}", s.name, s.what);
            let _ = writeln!(
                out,
                "{:<40} {:>11} {:>8} {:>8} {:>8} {:>9} {:>20} {:>8} {:>7}",
                "system",
                "events/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "CPU s/M cli·rds·pg",
                "RSS MiB",
                "ratio"
            );
            for r in &s.rows {
                if r.events_per_sec.is_none() && r.latency.is_none() {
                    let _ = writeln!(out, "{:<40} {}", r.system, r.note.as_deref().unwrap_or("-"));
                    continue;
                }
                let l = r.latency;
                let cpu = r.cpu_per_million.as_ref().map_or_else(
                    || "-".to_owned(),
                    |c| {
                        format!(
                            "{:.1}·{}·{}",
                            c.client,
                            fmt_opt(c.redis, 1),
                            fmt_opt(c.postgres, 1)
                        )
                    },
                );
                let _ = writeln!(
                    out,
                    "{:<40} {:>11} {:>8} {:>8} {:>8} {:>9} {:>20} {:>8} {:>7}{}",
                    r.system,
                    fmt_rate(r.events_per_sec),
                    fmt_opt(l.map(|l| l.p50_ms), 2),
                    fmt_opt(l.map(|l| l.p90_ms), 2),
                    fmt_opt(l.map(|l| l.p99_ms), 2),
                    fmt_opt(l.map(|l| l.max_ms), 1),
                    cpu,
                    fmt_opt(r.peak_rss_mib, 0),
                    fmt_opt(r.eventbus_ratio, 2),
                    r.note
                        .as_deref()
                        .map_or_else(String::new, |n| format!("  ({n})")),
                );
            }
            for m in &s.memory {
                memory_table(&mut out, m);
            }
            for c in &s.checks {
                let verdict = match (&c.target, c.met) {
                    (Some(t), Some(true)) => format!("target {t}: met"),
                    (Some(t), _) => format!("target {t}: MISSED"),
                    (None, _) => "no target".to_owned(),
                };
                let _ = writeln!(out, "check: {} = {:.3} ({verdict})", c.what, c.value);
            }
        }
        if !self.comparison.is_empty() {
            let _ = writeln!(
                out,
                "\n## one Redis vs the cluster — events/s of each scenario on both, same run; \
                 CPU as % of one core over the timed part (masters each, replicas each; cli = this process)"
            );
            let _ = writeln!(
                out,
                "{:<40} {:>11} {:>11} {:>8}  {:<30} CPU % cluster: masters·replicas·cli",
                "scenario", "one Redis", "cluster", "c ÷ 1", "CPU % one: master·replica·cli",
            );
            for c in &self.comparison {
                let cpu = |nodes: &[NodeCpu], cli: Option<f64>| {
                    format!(
                        "{}·{}·{}",
                        node_percents(nodes, true),
                        node_percents(nodes, false),
                        fmt_opt(cli, 0)
                    )
                };
                let _ = writeln!(
                    out,
                    "{:<40} {:>11} {:>11} {:>8}  {:<30} {}",
                    c.scenario,
                    fmt_rate(c.single_events_per_sec),
                    fmt_rate(c.cluster_events_per_sec),
                    fmt_opt(c.cluster_over_single, 2),
                    cpu(&c.single_nodes, c.single_client_core_percent),
                    cpu(&c.cluster_nodes, c.cluster_client_core_percent),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rated(system: &str, role: Role, rate: f64) -> Row {
        let mut r = Row::skipped(system, role, "x");
        r.events_per_sec = Some(rate);
        r.note = None;
        r
    }

    fn report_of(sections: Vec<Section>, comparison: Vec<Comparison>) -> Report {
        Report {
            date: "d".into(),
            machine: "m".into(),
            load_before: 0.5,
            load_after: 0.7,
            redis_version: "7".into(),
            params: serde_json::json!({}),
            sections,
            comparison,
        }
    }

    #[test]
    fn ratios_are_ours_over_theirs() {
        let mut s = Section::new("publish", "test");
        s.rows.push(rated("eventbus", Role::Eventbus, 300.0));
        s.rows.push(rated("redis-benchmark", Role::Baseline, 600.0));
        s.rows.push(rated("peer", Role::Peer, 100.0));
        s.rows
            .push(Row::skipped("other", Role::Peer, "not supported"));
        s.compute_ratios();
        let ratios: Vec<_> = s.rows.iter().map(|r| r.eventbus_ratio).collect();
        assert_eq!(ratios, [Some(1.0), Some(0.5), Some(3.0), None]);
    }

    #[test]
    fn table_names_skipped_rows_with_their_reason() {
        let mut s = Section::new("publish", "test");
        s.rows.push(rated("eventbus", Role::Eventbus, 300.0));
        s.rows
            .push(Row::skipped("omniqueue", Role::Peer, "no batch API"));
        let report = report_of(vec![s], Vec::new());
        let t = report.table();
        assert!(t.contains("omniqueue") && t.contains("no batch API"), "{t}");
        assert!(t.contains("300"), "{t}");
    }

    fn at(secs: f64, mib: u64, behind: u64) -> MemorySample {
        MemorySample {
            secs,
            used_memory: mib << 20,
            stream_entries: 10 * mib,
            behind: [0, behind],
        }
    }

    #[test]
    fn memory_windows_take_the_peak_and_the_last_sample() {
        let samples = vec![
            at(0.0, 1, 0),
            at(1.002, 5, 10),
            at(2.01, 4, 30), // rounds to 2 s: still the first window
            at(3.0, 6, 20),
            at(4.0, 5, 5),
            at(4.7, 3, 0), // the end sample, late: a window of its own
        ];
        let m = MemorySeries::new("on", ["fast".into(), "lagging".into()], 2, samples);
        let ends: Vec<u64> = m.windows.iter().map(|w| w.end_secs).collect();
        assert_eq!(ends, [2, 4, 6]);
        assert_eq!(m.windows[0].peak_used_memory, 5 << 20);
        assert_eq!(m.windows[0].last.used_memory, 4 << 20);
        assert_eq!(m.windows[0].max_behind, [0, 30]);
        assert_eq!(m.windows[1].peak_used_memory, 6 << 20);
        assert_eq!(m.last_over_first, Some(3.0 / 5.0));
        let one = MemorySeries::new("x", ["a".into(), "b".into()], 60, vec![at(0.0, 1, 0)]);
        assert!(one.windows.is_empty() && one.last_over_first.is_none());
    }

    #[test]
    fn checks_print_their_verdict_and_memory_its_windows() {
        let mut s = Section::new("retention soak", "test");
        s.memory.push(MemorySeries::new(
            "retention on",
            ["fast".into(), "lagging".into()],
            2,
            vec![at(0.0, 1, 0), at(1.0, 5, 7), at(3.0, 5, 9)],
        ));
        s.checks.push(Check::at_most("memory", 1.0, 1.2));
        s.checks.push(Check::at_least("throughput", 0.9, 0.95));
        s.checks.push(Check::contrast("off", 6.0));
        let report = report_of(vec![s], Vec::new());
        let t = report.table();
        assert!(t.contains("memory = 1.000 (target ≤ 1.20: met)"), "{t}");
        assert!(
            t.contains("throughput = 0.900 (target ≥ 0.95: MISSED)"),
            "{t}"
        );
        assert!(t.contains("off = 6.000 (no target)"), "{t}");
        assert!(t.contains("lagging behind ≤"), "{t}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["sections"][0]["memory"][0]["windows"][1]["end_secs"],
            4
        );
        assert_eq!(json["sections"][0]["checks"][0]["met"], true);
    }

    #[test]
    fn comparison_is_cluster_over_single_with_each_nodes_cpu() {
        let node = |name: &str, master: bool, pct: f64| NodeCpu {
            name: name.into(),
            master,
            cpu_seconds: pct / 100.0,
            core_percent: pct,
        };
        let mut one = rated("one", Role::Eventbus, 200.0);
        one.redis_nodes = vec![
            node("master :1", true, 90.0),
            node("replica :2", false, 30.0),
        ];
        let mut many = rated("many", Role::Eventbus, 300.0);
        many.redis_nodes = vec![
            node("master :3", true, 41.0),
            node("master :4", true, 39.0),
            node("master :5", true, 44.0),
            node("replica :6", false, 12.0),
        ];
        let c = Comparison::of("publish", &one, &many);
        assert_eq!(c.cluster_over_single, Some(1.5));
        let failed = Comparison::of("x", &one, &Row::skipped("x", Role::Eventbus, "failed"));
        assert_eq!(failed.cluster_over_single, None);
        let report = report_of(Vec::new(), vec![c, failed]);
        let t = report.table();
        assert!(t.contains("1.50"), "{t}");
        assert!(t.contains("90·30·"), "{t}");
        assert!(t.contains("41/39/44·12·"), "{t}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["comparison"][0]["cluster_nodes"][2]["core_percent"],
            44.0
        );
    }
}
