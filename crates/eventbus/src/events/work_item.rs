//! `work_item.*` events (topic `work_item`, keyed by `work_item_id`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::impl_event;

/// `work_item.processing_started` v1: a worker started a work item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkItemProcessingStarted {
    /// The work item's id; the partition key.
    pub work_item_id: String,
    /// The work order it belongs to.
    pub work_order_id: String,
    /// What the item does, in snake_case, e.g. `match_payments`.
    pub kind: String,
    /// When processing started.
    pub started_at: DateTime<Utc>,
    /// The worker that picked it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The Temporal workflow id running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
}
impl_event!(
    WorkItemProcessingStarted,
    "work_item.processing_started",
    1,
    work_item_id
);

/// What a completed work item produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkItemResult {
    /// A summary of the result.
    pub summary: String,
    /// How many records it processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_processed: Option<u64>,
    /// Where the output is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_ref: Option<String>,
}

/// `work_item.processing_completed` v1: a work item finished successfully.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkItemProcessingCompleted {
    /// The work item's id; the partition key.
    pub work_item_id: String,
    /// The work order it belongs to.
    pub work_order_id: String,
    /// What the item does, in snake_case.
    pub kind: String,
    /// When processing started.
    pub started_at: DateTime<Utc>,
    /// When it completed.
    pub completed_at: DateTime<Utc>,
    /// Processing time, in milliseconds.
    pub duration_ms: u64,
    /// Activity attempts made (at least 1).
    pub attempts: u32,
    /// What it produced.
    pub result: WorkItemResult,
}
impl_event!(
    WorkItemProcessingCompleted,
    "work_item.processing_completed",
    1,
    work_item_id
);

/// Why a work item failed, in version 1 (no category).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkItemErrorV1 {
    /// Machine-readable code in SCREAMING_SNAKE_CASE, e.g. `RATE_LIMITED`.
    pub code: String,
    /// Human-readable description.
    pub message: String,
    /// Whether trying the work item again may succeed.
    pub retryable: bool,
}

/// `work_item.processing_failed` v1: a work item failed for good. Version 2
/// ([`WorkItemProcessingFailed`]) adds `error.category`; a router for v2
/// upcasts v1 events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkItemProcessingFailedV1 {
    /// The work item's id; the partition key.
    pub work_item_id: String,
    /// The work order it belongs to.
    pub work_order_id: String,
    /// What the item does, in snake_case.
    pub kind: String,
    /// When processing started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it failed.
    pub failed_at: DateTime<Utc>,
    /// Processing time until the failure, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Activity attempts made before giving up (at least 1).
    pub attempts: u32,
    /// Why it failed.
    pub error: WorkItemErrorV1,
}
impl_event!(
    WorkItemProcessingFailedV1,
    "work_item.processing_failed",
    1,
    work_item_id
);

/// Coarse class of a work item failure, for dashboards and routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCategory {
    /// The input was invalid.
    Validation,
    /// Something it needed does not exist.
    NotFound,
    /// Not allowed.
    Permission,
    /// Throttled by a dependency.
    RateLimited,
    /// A deadline passed.
    Timeout,
    /// A dependency failed.
    Upstream,
    /// Attempts are exhausted.
    Exhausted,
    /// A bug.
    Internal,
    /// None of the above.
    Unknown,
}

/// Why a work item failed (version 2: with a category).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkItemError {
    /// Machine-readable code in SCREAMING_SNAKE_CASE, e.g. `RATE_LIMITED`.
    pub code: String,
    /// Coarse class of the failure.
    pub category: ErrorCategory,
    /// Human-readable description.
    pub message: String,
    /// Whether trying the work item again may succeed.
    pub retryable: bool,
}

/// `work_item.processing_failed` v2 (the latest): a work item failed for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkItemProcessingFailed {
    /// The work item's id; the partition key.
    pub work_item_id: String,
    /// The work order it belongs to.
    pub work_order_id: String,
    /// What the item does, in snake_case.
    pub kind: String,
    /// When processing started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it failed.
    pub failed_at: DateTime<Utc>,
    /// Processing time until the failure, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Activity attempts made before giving up (at least 1).
    pub attempts: u32,
    /// Why it failed.
    pub error: WorkItemError,
}
impl_event!(
    WorkItemProcessingFailed,
    "work_item.processing_failed",
    2,
    work_item_id
);
