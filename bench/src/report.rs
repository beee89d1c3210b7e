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
}

impl Section {
    /// A section comparing rates.
    pub(crate) fn new(name: impl Into<String>, what: impl Into<String>) -> Self {
        Section {
            name: name.into(),
            what: what.into(),
            rows: Vec::new(),
            compare_rates: true,
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
        let report = Report {
            date: "d".into(),
            machine: "m".into(),
            load_before: 0.5,
            load_after: 0.7,
            redis_version: "7".into(),
            params: serde_json::json!({}),
            sections: vec![s],
            comparison: Vec::new(),
        };
        let t = report.table();
        assert!(t.contains("omniqueue") && t.contains("no batch API"), "{t}");
        assert!(t.contains("300"), "{t}");
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
        let report = Report {
            date: "d".into(),
            machine: "m".into(),
            load_before: 0.0,
            load_after: 0.0,
            redis_version: "7".into(),
            params: serde_json::json!({}),
            sections: Vec::new(),
            comparison: vec![c, failed],
        };
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
