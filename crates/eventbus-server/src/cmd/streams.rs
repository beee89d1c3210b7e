//! `eventbus streams`: length per partition, and consumers, pending and lag
//! per group, as a table or JSON.

use eventbus::admin::{partition_stats, PartitionStats};

use crate::cli::StreamsArgs;
use crate::config::Settings;
use crate::error::Result;
use crate::output;

/// Runs `eventbus streams`.
pub(crate) async fn run(args: StreamsArgs, settings: &Settings) -> Result<()> {
    super::check_topics(&args.topics)?;
    let topology = settings.topology()?;
    let conn = settings.connector()?.shared().await?;
    let topics = super::topics_or_known(&conn, &topology, &args.topics).await?;
    let stats = partition_stats(&conn, &topology, &topics).await?;
    if args.json {
        output::json_line(&serde_json::json!({
            "namespace": topology.namespace(),
            "partitions_per_topic": topology.partitions(),
            "streams": stats,
        }))
    } else if stats.is_empty() {
        output::write_stdout(
            format!(
                "no topics in namespace {:?} yet (publish or consume to create them)\n",
                topology.namespace()
            )
            .as_bytes(),
        )
    } else {
        output::write_stdout(table(&stats).as_bytes())
    }
}

/// One row per partition and group (a partition without groups gets one row).
fn table(stats: &[PartitionStats]) -> String {
    let mut rows = vec![[
        "TOPIC",
        "PARTITION",
        "LENGTH",
        "GROUP",
        "CONSUMERS",
        "PENDING",
        "LAG",
    ]
    .map(String::from)];
    for p in stats {
        let head = [
            p.topic.clone(),
            p.partition.to_string(),
            p.length.to_string(),
        ];
        if p.groups.is_empty() {
            let [a, b, c] = head.clone();
            rows.push([a, b, c, "-".into(), "-".into(), "-".into(), "-".into()]);
        }
        for g in &p.groups {
            let [a, b, c] = head.clone();
            rows.push([
                a,
                b,
                c,
                g.name.clone(),
                g.consumers.to_string(),
                g.pending.to_string(),
                g.lag.map_or_else(|| "?".to_owned(), |l| l.to_string()),
            ]);
        }
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let total: u64 = stats.iter().map(|p| p.length).sum();
    out.push_str(&format!(
        "{} partitions, {total} entries in all\n",
        stats.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventbus::admin::GroupStats;

    #[test]
    fn table_has_a_row_per_group() {
        let stats = vec![
            PartitionStats {
                topic: "work_order".into(),
                partition: 0,
                stream: "ns:{work_order:0}".into(),
                length: 12,
                groups: vec![GroupStats {
                    name: "billing".into(),
                    consumers: 2,
                    pending: 1,
                    lag: Some(3),
                    last_delivered_id: "1-0".into(),
                }],
            },
            PartitionStats {
                topic: "work_order".into(),
                partition: 1,
                stream: "ns:{work_order:1}".into(),
                length: 0,
                groups: vec![],
            },
        ];
        let t = table(&stats);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("TOPIC"));
        assert!(lines[1].split_whitespace().eq([
            "work_order",
            "0",
            "12",
            "billing",
            "2",
            "1",
            "3"
        ]));
        assert!(lines[3].contains("12 entries"));
    }
}
