//! Dead letters: events a group could not handle, kept for operators to
//! inspect, alert on, replay or discard.
//!
//! An event is dead-lettered when its handler fails permanently, when it is
//! invalid (does not decode, fails its schema), or when a retryable failure
//! used up the retry policy's attempts. The [`DeadLetterWriter`] records it
//! in the Redis stream `<namespace>:dead` and in a store of records with a
//! status and a history: `eventbus_dead_letters` when PostgreSQL is
//! configured, else Redis hashes beside the stream (`store_redis`, in the
//! stream's hash slot, written in the same script as the stream entry). The
//! consumer acknowledges the source entry only after the writes succeeded,
//! so a failure while dead-lettering leaves the entry pending and it is
//! dead-lettered again later (never lost).
//!
//! [`DeadLetterStore`] queries and changes the records of either backend
//! (list with filters, show, replay, discard, purge, depth): the actions are
//! written once in `store`, each backend (`store_pg`, `store_redis`)
//! only reads and writes records. A replay publishes the original envelope,
//! same event id, to the replay stream of the group that failed it
//! (`<namespace>:{_replay:<group>}`), which only that group's consumers read,
//! so other groups never see it again; inboxes deduplicate by event id.

pub(crate) mod park;
mod store;
mod store_pg;
mod store_redis;
mod writer;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::Envelope;
use crate::handler::ErrorClass;

pub use crate::lossless::DEAD_LETTER_ERROR_CAP;
pub use crate::lossless::{
    decode_raw_fields, encode_raw_fields, envelope_fields, nul_free, nul_free_json, restore,
    storable, RawField, ShownField,
};
pub use store::{DeadLetterFilter, DeadLetterStore, DlqDepth, ReplayOptions, ReplayReport};
pub use store_pg::dlq_depth;
pub use writer::DeadLetterWriter;

/// Where a dead letter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterStatus {
    /// Waiting for an operator.
    New,
    /// Published again to its group.
    Replayed,
    /// Dropped by an operator.
    Discarded,
}

impl DeadLetterStatus {
    /// `new`, `replayed` or `discarded`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterStatus::New => "new",
            DeadLetterStatus::Replayed => "replayed",
            DeadLetterStatus::Discarded => "discarded",
        }
    }

    /// Parses `new`, `replayed` or `discarded`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "new" => Some(DeadLetterStatus::New),
            "replayed" => Some(DeadLetterStatus::Replayed),
            "discarded" => Some(DeadLetterStatus::Discarded),
            _ => None,
        }
    }
}

/// Parses `retryable`, `permanent`, `invalid` or `parked`.
pub fn parse_error_class(s: &str) -> Option<ErrorClass> {
    match s {
        "retryable" => Some(ErrorClass::Retryable),
        "permanent" => Some(ErrorClass::Permanent),
        "invalid" => Some(ErrorClass::Invalid),
        "parked" => Some(ErrorClass::Parked),
        _ => None,
    }
}

/// What the consumer knows when it dead-letters an entry.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The event (for an entry that did not decode: a placeholder envelope
    /// carrying the raw fields in `data`).
    pub envelope: Envelope,
    /// The group that failed it.
    pub group: String,
    /// The consumer that gave up.
    pub consumer: String,
    /// The source stream.
    pub stream: String,
    /// The source partition.
    pub partition: u32,
    /// The source entry id.
    pub entry_id: String,
    /// Deliveries so far (the stream's delivery count).
    pub attempts: u64,
    /// Why.
    pub class: ErrorClass,
    /// The last error message.
    pub message: String,
    /// When the first delivery failed, if known (else: now).
    pub first_failed_at: Option<DateTime<Utc>>,
    /// The entry's exact fields when it is not an envelope (it did not
    /// decode): kept byte for byte in `raw_fields`.
    pub raw_fields: Option<Vec<RawField>>,
}

/// A dead letter as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    /// The dead letter's id (stable across failures of the same event in the same group).
    pub id: Uuid,
    /// The group that failed it.
    pub group: String,
    /// The event id.
    pub event_id: Uuid,
    /// The event type.
    pub event_type: String,
    /// The partition key.
    pub key: String,
    /// The original envelope, exact (rebuilt from `raw_fields` when the
    /// stored JSON had to replace a U+0000).
    pub envelope: serde_json::Value,
    /// The source entry's exact fields, when they are kept apart from the
    /// JSON (the entry held U+0000 or was not an envelope); text when
    /// UTF-8, else base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_fields: Option<Vec<ShownField>>,
    /// `consumer` (a group gave up on it) or `outbox` (the relay could not
    /// publish the outbox row; `envelope` is then the row as written).
    pub origin: String,
    /// The consumer that gave up last.
    pub consumer: String,
    /// The source stream.
    pub stream: String,
    /// The source partition.
    pub partition: i32,
    /// The source entry id.
    pub entry_id: String,
    /// Deliveries before it was dead-lettered (last time).
    pub attempts: i32,
    /// `retryable` (attempts exhausted), `permanent`, `invalid`, or
    /// `parked` (held behind an earlier dead letter of its key, park mode).
    pub error_class: String,
    /// The last error (capped at [`DEAD_LETTER_ERROR_CAP`] bytes).
    pub error_message: String,
    /// First failure.
    pub first_failed_at: DateTime<Utc>,
    /// Last failure.
    pub last_failed_at: DateTime<Utc>,
    /// `new`, `replayed` or `discarded`.
    pub status: String,
    /// Times it was replayed.
    pub replay_count: i32,
}

/// One action in a dead letter's history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    /// `dead_lettered`, `failed_again`, `replayed`, `discarded`.
    pub action: String,
    /// Details (error, target group, ...).
    pub detail: serde_json::Value,
    /// When.
    pub at: DateTime<Utc>,
}
