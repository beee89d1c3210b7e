//! `eventbus groups [GROUP]`: each consumer group's members, who holds which
//! partition (lease owner, fencing token, lease age), and pending and lag
//! per partition, as tables or JSON.

use eventbus::admin::GroupView;

use crate::cli::ordered::{GroupsAction, GroupsArgs};
use crate::config::Settings;
use crate::error::{CliError, Result};
use crate::output;

/// Runs `eventbus groups`.
pub(crate) async fn run(args: GroupsArgs, settings: &Settings) -> Result<()> {
    super::check_topics(&args.topics)?;
    if let Some(g) = &args.group {
        check_group(g)?;
    }
    if let Some(GroupsAction::Delete { group, yes }) = &args.action {
        return delete(group, *yes, settings).await;
    }
    let topology = settings.topology()?;
    let conn = settings.connector()?.shared().await?;
    let topics = super::topics_or_known(&conn, &topology, &args.topics).await?;
    let groups = eventbus::admin::groups(&conn, &topology, &topics, args.group.as_deref()).await?;
    if args.drained {
        let backlog = if settings.pg.has_database() {
            let pool = settings.pg.pool(1, "groups").await?;
            let status = eventbus::pg::outbox_status(&pool, &settings.pg.schema).await?;
            Some(status.iter().map(|p| p.backlog).sum::<i64>())
        } else {
            None
        };
        return drained(&groups, backlog, args.json);
    }
    if args.json {
        output::json_line(&serde_json::json!({
            "namespace": topology.namespace(),
            "groups": groups,
        }))
    } else if groups.is_empty() {
        output::write_stdout(
            format!(
                "no consumer groups in namespace {:?}\n",
                topology.namespace()
            )
            .as_bytes(),
        )
    } else {
        let text: Vec<String> = groups.iter().map(render).collect();
        output::write_stdout(text.join("\n").as_bytes())
    }
}

/// `groups --drained`: Ok when no group has lag or pending entries on any
/// partition and the outbox (when checked) is empty; else lists what is left
/// and fails.
fn drained(groups: &[GroupView], outbox_backlog: Option<i64>, json: bool) -> Result<()> {
    let in_flight: Vec<serde_json::Value> = groups
        .iter()
        .flat_map(|g| g.partitions.iter().map(move |p| (g, p)))
        .filter(|(_, p)| p.pending > 0 || p.lag != Some(0))
        .map(|(g, p)| {
            serde_json::json!({
                "group": g.group, "topic": p.topic, "partition": p.partition,
                "pending": p.pending, "lag": p.lag,
            })
        })
        .collect();
    let outbox_busy = outbox_backlog.is_some_and(|b| b > 0);
    let ok = in_flight.is_empty() && !outbox_busy;
    let partitions: usize = groups.iter().map(|g| g.partitions.len()).sum();
    if json {
        output::json_line(&serde_json::json!({
            "drained": ok,
            "groups": groups.len(),
            "outbox_backlog": outbox_backlog,
            "in_flight": in_flight,
        }))?;
    } else {
        let mut text = String::new();
        for p in &in_flight {
            let lag = p["lag"]
                .as_u64()
                .map_or("unknown".to_owned(), |l| l.to_string());
            text.push_str(&format!(
                "group {} {}:{}: pending {}, lag {lag}\n",
                p["group"].as_str().unwrap_or_default(),
                p["topic"].as_str().unwrap_or_default(),
                p["partition"],
                p["pending"],
            ));
        }
        match outbox_backlog {
            Some(b) => text.push_str(&format!("outbox backlog: {b}\n")),
            None => text.push_str("outbox: not checked (no DATABASE_URL)\n"),
        }
        if ok {
            text.push_str(&format!(
                "drained: {} groups, {partitions} group partitions, nothing pending or unread\n",
                groups.len()
            ));
        }
        output::write_stdout(text.as_bytes())?;
    }
    if ok {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "not drained: {} group partitions with lag or pending entries{}",
            in_flight.len(),
            if outbox_busy {
                ", and an outbox backlog"
            } else {
                ""
            }
        )))
    }
}

/// One group as two tables: members, then partitions.
fn render(g: &GroupView) -> String {
    let owned = g.partitions.iter().filter(|p| p.owner.is_some()).count();
    let mut out = format!(
        "group {}: {} members, {owned} of {} partitions leased\n",
        g.group,
        g.members.len(),
        g.partitions.len()
    );
    if !g.members.is_empty() {
        let mut rows = vec![["MEMBER", "PARTITIONS", "COUNT", "EXPIRES IN"]
            .map(String::from)
            .to_vec()];
        for m in &g.members {
            rows.push(vec![
                m.id.clone(),
                if m.partitions.is_empty() {
                    "-".into()
                } else {
                    m.partitions.join(",")
                },
                m.partitions.len().to_string(),
                format!("{}ms", m.expires_in_ms),
            ]);
        }
        out.push_str(&output::aligned(&rows));
    }
    let mut rows = vec![[
        "TOPIC",
        "PARTITION",
        "OWNER",
        "TOKEN",
        "LEASE AGE",
        "PENDING",
        "LAG",
    ]
    .map(String::from)
    .to_vec()];
    for p in &g.partitions {
        let dash = || "-".to_owned();
        rows.push(vec![
            p.topic.clone(),
            p.partition.to_string(),
            p.owner.clone().unwrap_or_else(dash),
            p.token.map_or_else(dash, |t| t.to_string()),
            p.lease_age_ms
                .map_or_else(dash, |a| format!("{:.1}s", a as f64 / 1000.0)),
            p.pending.to_string(),
            p.lag.map_or_else(|| "?".to_owned(), |l| l.to_string()),
        ]);
    }
    out.push_str(&output::aligned(&rows));
    out
}

fn check_group(g: &str) -> Result<()> {
    if g.is_empty() || g.chars().any(|c| c.is_whitespace() || c == '{' || c == '}') {
        return Err(CliError::Input(format!(
            "{g:?} is not a group name (non-empty, without spaces or braces)"
        )));
    }
    Ok(())
}

/// `eventbus groups delete GROUP [--yes]`.
async fn delete(group: &str, yes: bool, settings: &Settings) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    check_group(group)?;
    let topology = settings.topology()?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Input(format!(
                "groups delete {group}: give --yes to delete without a question (stdin is not a terminal)"
            )));
        }
        eprint!(
            "Delete consumer group {group:?} in namespace {:?} (its position, pending entries, leases, park state and replays are lost)? [y/N] ",
            topology.namespace()
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(CliError::Input("not deleted".into()));
        }
    }
    let conn = settings.connector()?.shared().await?;
    let done = eventbus::admin::delete_group(&conn, &topology, group).await?;
    output::write_stdout(
        format!(
            "deleted group {group}: destroyed on {} streams, {} other keys removed\n",
            done.streams, done.keys
        )
        .as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use eventbus::admin::{MemberView, PartitionView};

    use super::*;

    #[test]
    fn renders_members_and_partitions() {
        let g = GroupView {
            group: "billing".into(),
            members: vec![MemberView {
                id: "m1".into(),
                topics: vec!["work_item".into()],
                expires_in_ms: 9500,
                heartbeat_age_ms: Some(500),
                partitions: vec!["work_item:0".into()],
            }],
            partitions: vec![
                PartitionView {
                    topic: "work_item".into(),
                    partition: 0,
                    stream: "ns:{work_item:0}".into(),
                    owner: Some("m1".into()),
                    token: Some(7),
                    lease_age_ms: Some(1500),
                    pending: 1,
                    lag: Some(4),
                },
                PartitionView {
                    topic: "work_item".into(),
                    partition: 1,
                    stream: "ns:{work_item:1}".into(),
                    owner: None,
                    token: None,
                    lease_age_ms: None,
                    pending: 0,
                    lag: None,
                },
            ],
        };
        let text = render(&g);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "group billing: 1 members, 1 of 2 partitions leased"
        );
        assert!(lines[2]
            .split_whitespace()
            .eq(["m1", "work_item:0", "1", "9500ms"]));
        assert!(lines[4]
            .split_whitespace()
            .eq(["work_item", "0", "m1", "7", "1.5s", "1", "4"]));
        assert!(lines[5]
            .split_whitespace()
            .eq(["work_item", "1", "-", "-", "-", "0", "?"]));
    }
}
