//! The consumers `eventbus serve --consumers FILE` runs beside the API.
//!
//! The file is JSON: `{"consumers": [{"name": "...", "args": [...]}]}`, each
//! `args` being the flags of `eventbus consume` (so every sink, mode and
//! retry option works the same in both places). Every entry is checked
//! before anything starts.

use std::path::Path;

use clap::Parser;
use serde::Deserialize;

use crate::cli::{Cli, Command, ConsumeArgs};
use crate::error::{CliError, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumersFile {
    consumers: Vec<ConsumerEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumerEntry {
    name: String,
    args: Vec<String>,
}

/// The consumers of the file, by name, with their parsed flags.
pub(crate) fn load(path: &Path) -> Result<Vec<(String, ConsumeArgs)>> {
    let shown = path.display().to_string();
    let text = super::input::read_input("--consumers file", &shown, 1 << 20)?;
    parse(&text).map_err(|e| CliError::Input(format!("--consumers {shown}: {e}")))
}

fn parse(text: &str) -> std::result::Result<Vec<(String, ConsumeArgs)>, String> {
    let file: ConsumersFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for entry in file.consumers {
        if out.iter().any(|(n, _)| n == &entry.name) {
            return Err(format!("consumer {:?} is listed twice", entry.name));
        }
        let argv = ["eventbus", "consume"]
            .into_iter()
            .map(str::to_owned)
            .chain(entry.args);
        let cli = Cli::try_parse_from(argv).map_err(|e| {
            let first = e.to_string();
            let line = first.lines().next().unwrap_or("invalid flags").to_owned();
            format!(
                "consumer {:?}: {}",
                entry.name,
                line.trim_start_matches("error: ")
            )
        })?;
        let Command::Consume(args) = cli.command else {
            return Err(format!("consumer {:?}: not consume flags", entry.name));
        };
        if args.group.is_none() {
            return Err(format!("consumer {:?}: --group is required", entry.name));
        }
        if args.metrics_addr.is_some() {
            return Err(format!(
                "consumer {:?}: --metrics-addr is for a separate `eventbus consume`; serve's own /metrics has these consumers' series",
                entry.name
            ));
        }
        out.push((entry.name, args));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_consume_flags_and_refuses_bad_entries() {
        let ok = parse(
            r#"{"consumers": [
                {"name": "billing", "args": ["--group", "billing", "--exec", "true", "--unordered"]},
                {"name": "crm", "args": ["--group", "crm", "--http", "http://127.0.0.1:9/x", "--park"]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].1.group.as_deref(), Some("billing"));
        assert!(!ok[0].1.membership.park && ok[1].1.membership.park);
        for (bad, needle) in [
            (
                r#"{"consumers": [{"name": "a", "args": ["--nope"]}]}"#,
                "consumer \"a\"",
            ),
            (
                r#"{"consumers": [{"name": "a", "args": ["--exec", "true"]}]}"#,
                "--group",
            ),
            (
                r#"{"consumers": [{"name": "a", "args": ["--group", "g"]}, {"name": "a", "args": ["--group", "g"]}]}"#,
                "twice",
            ),
            (r#"{"consumers": [{"name": "a"}]}"#, "args"),
            (
                r#"{"consumers": [{"name": "a", "args": ["--group", "g", "--unordered", "--park"]}]}"#,
                "cannot be used with",
            ),
            (
                r#"{"consumers": [{"name": "a", "args": ["--group", "g", "--metrics-addr", "127.0.0.1:9464"]}]}"#,
                "serve's own /metrics",
            ),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
