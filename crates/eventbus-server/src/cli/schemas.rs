//! Command-line definitions of `eventbus schemas list|show|validate|check|docs`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// `eventbus schemas`.
#[derive(Debug, Args)]
#[command(after_help = "\
The catalogue is the one compiled into this binary, or the directory in
EVENT_BUS_SCHEMA_DIR (laid out like the repository's schemas/: manifest.json,
<type>/v<N>.json, <type>/v<N>.invalid.json). See docs/schemas.md.")]
pub(crate) struct SchemasArgs {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: SchemasCommand,
}

/// The `schemas` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SchemasCommand {
    /// List the event types: topic, partition key, versions, description.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of a type (its latest version unless --version).
    Show {
        /// The event type, e.g. `work_item.processing_failed`.
        #[arg(value_name = "TYPE")]
        event_type: String,
        /// The schema version.
        #[arg(long, value_name = "N")]
        version: Option<u32>,
    },
    /// Validate events from a file: one envelope (JSON), or JSON lines.
    #[command(after_help = "\
Each event is a JSON object with \"type\" and \"data\", and optionally \"version\" (default 1)
and \"key\" (checked against the type's partition-key field when present): an envelope as
`consume --print` or `tail` prints it, or a line of a `publish --batch` file. A `tail`
line ({\"stream\", \"entry_id\", \"event\"}) is read through its \"event\".

Prints one line per event (`line N: ok` or `line N: invalid: ...`, or JSON with --json);
exits 2 if any event is invalid.")]
    Validate {
        /// The file (`-` for stdin).
        #[arg(value_name = "FILE")]
        file: String,
        /// Print one JSON object per event: {"line", "type", "version", "valid", "errors"}.
        #[arg(long)]
        json: bool,
    },
    /// Compare each schema version with the one before; exit 1 on a breaking change.
    #[command(after_help = "\
Modes have Confluent Schema Registry's meanings: backward (a reader of the new version
reads old events; the default), forward (a reader of the old version reads new events),
full (both). A backward break that the type's upcaster covers (it turns every example of
the old version into valid data of the new one) is reported but does not fail the check.
Also checks that every example validates and every counter-example fails where it says.")]
    Check {
        /// Compatibility mode.
        #[arg(long, value_enum, default_value_t = Mode::Backward)]
        mode: Mode,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the Markdown catalogue (an index and one page per type).
    Docs {
        /// The directory to write to (created if missing; stale pages are removed).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Do not write: exit 1 if the directory is not up to date.
        #[arg(long)]
        check: bool,
    },
}

/// `schemas check --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// New readers read old events.
    Backward,
    /// Old readers read new events.
    Forward,
    /// Both.
    Full,
}

impl From<Mode> for eventbus::catalog::CompatMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Backward => eventbus::catalog::CompatMode::Backward,
            Mode::Forward => eventbus::catalog::CompatMode::Forward,
            Mode::Full => eventbus::catalog::CompatMode::Full,
        }
    }
}
