//! `work_order.*` events (topic `work_order`, keyed by the work order's `id`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::impl_event;

/// The status of a work order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkOrderStatus {
    /// Not started.
    Pending,
    /// Being worked on.
    InProgress,
    /// Done.
    Completed,
    /// Failed for good.
    Failed,
    /// Withdrawn.
    Cancelled,
}

/// Scheduling priority of a work order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Low.
    Low,
    /// Normal.
    Normal,
    /// High.
    High,
    /// Urgent.
    Urgent,
}

/// `work_order.created` v1: a new work order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkOrderCreated {
    /// The work order's id; the partition key.
    pub id: String,
    /// What sort of work order, in snake_case, e.g. `invoice_reconciliation`.
    pub kind: String,
    /// Short human-readable title.
    pub title: String,
    /// The status it was created in (usually `pending`).
    pub status: WorkOrderStatus,
    /// Scheduling priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Who asked for it: an e-mail address, `slack:<user id>` or `api:<service>`.
    pub requested_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When the work should be done by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
}
impl_event!(WorkOrderCreated, "work_order.created", 1, id);

/// `work_order.status_changed` v1: a status transition of a work order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkOrderStatusChanged {
    /// The work order's id; the partition key.
    pub id: String,
    /// The status before.
    pub from: WorkOrderStatus,
    /// The status after.
    pub to: WorkOrderStatus,
    /// Why it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who or what changed it: a user, `temporal:<workflow>` or `api:<service>`.
    pub changed_by: String,
    /// When it changed.
    pub changed_at: DateTime<Utc>,
}
impl_event!(WorkOrderStatusChanged, "work_order.status_changed", 1, id);
