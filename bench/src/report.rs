//! The results: sections of rows (ours, baselines, peers), printed as a
//! table or as JSON.

use serde::Serialize;

use crate::measure::{CpuPerMillion, Latency, Usage};

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
        };
        let t = report.table();
        assert!(t.contains("omniqueue") && t.contains("no batch API"), "{t}");
        assert!(t.contains("300"), "{t}");
    }
}
