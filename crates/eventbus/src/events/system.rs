//! `system.*` events: operational signals of components (topic `system`,
//! keyed by `component`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::impl_event;

/// Overall health of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Everything works.
    Healthy,
    /// Working, with a problem.
    Degraded,
    /// Not working.
    Unhealthy,
}

/// The state of one dependency check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Answering.
    Up,
    /// Answering, over its latency budget.
    Slow,
    /// Not answering.
    Down,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckResult {
    /// Up, slow or down.
    pub status: CheckStatus,
    /// How long the check took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Detail, e.g. the error when down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `system.health_check` v1: a component reported its health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemHealthCheck {
    /// The component, in kebab-case; the partition key.
    pub component: String,
    /// Overall status.
    pub status: HealthStatus,
    /// Each dependency check by name.
    pub checks: BTreeMap<String, CheckResult>,
    /// The component's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Which instance of the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// When it was checked.
    pub checked_at: DateTime<Utc>,
}
impl_event!(SystemHealthCheck, "system.health_check", 1, component);

/// How serious a system error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Warning,
    /// Something failed.
    Error,
    /// Act now.
    Critical,
}

/// The error of a [`SystemError`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemErrorDetail {
    /// Machine-readable code in SCREAMING_SNAKE_CASE.
    pub code: String,
    /// Human-readable description.
    pub message: String,
    /// Free-form context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `system.error` v1: a component hit an error worth an operator's attention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemError {
    /// The component, in kebab-case; the partition key.
    pub component: String,
    /// How serious it is.
    pub severity: Severity,
    /// What went wrong.
    pub error: SystemErrorDetail,
    /// The request it happened in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Uuid>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}
impl_event!(SystemError, "system.error", 1, component);

/// Planned or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceKind {
    /// Planned ahead.
    Scheduled,
    /// Unplanned.
    Emergency,
}

/// When a maintenance happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// Start.
    pub starts_at: DateTime<Utc>,
    /// End.
    pub ends_at: DateTime<Utc>,
}

/// `system.maintenance` v1: maintenance of a component was announced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemMaintenance {
    /// The component, in kebab-case; the partition key.
    pub component: String,
    /// Scheduled or emergency.
    pub kind: MaintenanceKind,
    /// Its window.
    pub window: MaintenanceWindow,
    /// Why.
    pub reason: String,
    /// What users will notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_impact: Option<String>,
    /// Who announced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced_by: Option<String>,
}
impl_event!(SystemMaintenance, "system.maintenance", 1, component);
