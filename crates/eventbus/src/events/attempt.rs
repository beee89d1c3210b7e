//! `attempt.*` events: activity attempts of a work item (topic `attempt`,
//! keyed by `work_item_id`, so a work item's attempts stay in order).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::impl_event;

/// `attempt.started` v1: an activity attempt started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptStarted {
    /// The attempt's id (one per activity execution).
    pub attempt_id: String,
    /// The work item the activity runs for; the partition key.
    pub work_item_id: String,
    /// The work order of the work item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_order_id: Option<String>,
    /// The Temporal activity name, e.g. `fetchInvoices`.
    pub activity: String,
    /// 1 for the first attempt, then 2, 3, ...
    pub attempt_number: u32,
    /// The Temporal task queue it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_queue: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
}
impl_event!(AttemptStarted, "attempt.started", 1, work_item_id);

/// The outcome of a completed attempt: always `succeeded`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompletedOutcome {
    /// The attempt succeeded (failures are [`AttemptFailed`]).
    #[default]
    Succeeded,
}

/// `attempt.completed` v1: an activity attempt succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptCompleted {
    /// The attempt's id.
    pub attempt_id: String,
    /// The work item the activity runs for; the partition key.
    pub work_item_id: String,
    /// The work order of the work item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_order_id: Option<String>,
    /// The Temporal activity name.
    pub activity: String,
    /// 1 for the first attempt, then 2, 3, ...
    pub attempt_number: u32,
    /// The Temporal task queue it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_queue: Option<String>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it completed.
    pub completed_at: DateTime<Utc>,
    /// How long it ran, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Always [`CompletedOutcome::Succeeded`].
    pub outcome: CompletedOutcome,
}
impl_event!(AttemptCompleted, "attempt.completed", 1, work_item_id);

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailedOutcome {
    /// The activity returned an error.
    Failed,
    /// A Temporal timeout fired.
    TimedOut,
    /// It was cancelled.
    Cancelled,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptError {
    /// Machine-readable code in SCREAMING_SNAKE_CASE, e.g. `RATE_LIMITED`.
    pub code: String,
    /// Human-readable description.
    pub message: String,
    /// Whether Temporal may retry the activity.
    pub retryable: bool,
}

/// `attempt.failed` v1: an activity attempt failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptFailed {
    /// The attempt's id.
    pub attempt_id: String,
    /// The work item the activity runs for; the partition key.
    pub work_item_id: String,
    /// The work order of the work item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_order_id: Option<String>,
    /// The Temporal activity name.
    pub activity: String,
    /// 1 for the first attempt, then 2, 3, ...
    pub attempt_number: u32,
    /// The Temporal task queue it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_queue: Option<String>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it failed.
    pub failed_at: DateTime<Utc>,
    /// How long it ran, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// How it failed.
    pub outcome: FailedOutcome,
    /// Why it failed.
    pub error: AttemptError,
}
impl_event!(AttemptFailed, "attempt.failed", 1, work_item_id);

/// `attempt.retried` v1: a failed attempt will be retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptRetried {
    /// The failed attempt's id.
    pub attempt_id: String,
    /// The work item the activity runs for; the partition key.
    pub work_item_id: String,
    /// The work order of the work item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_order_id: Option<String>,
    /// The Temporal activity name.
    pub activity: String,
    /// The failed attempt's number.
    pub attempt_number: u32,
    /// The Temporal task queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_queue: Option<String>,
    /// The number the next attempt will have (at least 2).
    pub next_attempt_number: u32,
    /// Delay before the next attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// When the next attempt is due.
    pub next_retry_at: DateTime<Utc>,
    /// Why it is retried: usually the failed attempt's error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
impl_event!(AttemptRetried, "attempt.retried", 1, work_item_id);
