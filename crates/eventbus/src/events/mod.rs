//! Typed events: a Rust type per catalogue type and version, the [`Event`]
//! trait that ties each to its type name, version and partition key, and a
//! typed [`Router`] for handlers.
//!
//! The types are written by hand from `schemas/` (`docs/typed-events.md`);
//! the test `tests/typed_events.rs` proves they match: every example of the
//! catalogue decodes into its type and re-encodes to data its schema
//! accepts, every counter-example is refused (by the schema always, by the
//! type wherever a Rust type can say it), and each type's name, version and
//! key field agree with `schemas/manifest.json`. A type is named after its
//! catalogue type; older versions carry a `V<N>` suffix
//! ([`WorkItemProcessingFailedV1`]).
//!
//! What a type cannot say (string patterns and lengths, integer minimums
//! above zero) the schema still says: validate with a
//! [`Catalog`](crate::Catalog) at publish and consume as before.

mod attempt;
mod router;
mod system;
mod work_item;
mod work_order;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::envelope::Envelope;
use crate::{Error, Result};

pub use attempt::{
    AttemptCompleted, AttemptError, AttemptFailed, AttemptRetried, AttemptStarted,
    CompletedOutcome, FailedOutcome,
};
pub use router::{Router, TypedHandler, UnknownTypes};
pub use system::{
    CheckResult, CheckStatus, HealthStatus, MaintenanceKind, MaintenanceWindow, Severity,
    SystemError, SystemErrorDetail, SystemHealthCheck, SystemMaintenance,
};
pub use work_item::{
    ErrorCategory, WorkItemError, WorkItemErrorV1, WorkItemProcessingCompleted,
    WorkItemProcessingFailed, WorkItemProcessingFailedV1, WorkItemProcessingStarted,
    WorkItemResult,
};
pub use work_order::{Priority, WorkOrderCreated, WorkOrderStatus, WorkOrderStatusChanged};

/// One version of one catalogue event type, as a Rust type.
///
/// `TYPE`, `VERSION` and `KEY_FIELD` come from `schemas/manifest.json`;
/// [`Event::key`] reads the field `KEY_FIELD` names, so a caller never
/// repeats the partition key. JSON (`serde_json`) stays the wire form of
/// `data`.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The catalogue type, e.g. `work_order.created`.
    const TYPE: &'static str;
    /// The schema version this type is.
    const VERSION: u32;
    /// The field of `data` holding the partition key (the manifest's `partition_key`).
    const KEY_FIELD: &'static str;

    /// The partition key: the value of the field `KEY_FIELD`.
    fn key(&self) -> String;

    /// The event as an [`Envelope`]: its type, version, key and `data`,
    /// with a fresh id and `occurred_at` now (see [`Envelope::new`]). Set
    /// the source, correlation id or headers on the result before
    /// publishing it when you need them.
    fn to_envelope(&self) -> Result<Envelope> {
        let data = serde_json::to_value(self).map_err(|e| {
            Error::InvalidEvent(format!(
                "{} v{} does not encode as JSON: {e}",
                Self::TYPE,
                Self::VERSION
            ))
        })?;
        Ok(Envelope::new(Self::TYPE, self.key(), data).with_version(Self::VERSION))
    }
}

/// Implements [`Event`] for a type from its catalogue name, version and the
/// struct field holding the partition key.
macro_rules! impl_event {
    ($ty:ty, $name:literal, $version:literal, $key:ident) => {
        impl $crate::events::Event for $ty {
            const TYPE: &'static str = $name;
            const VERSION: u32 = $version;
            const KEY_FIELD: &'static str = stringify!($key);

            fn key(&self) -> String {
                self.$key.clone()
            }
        }
    };
}
pub(crate) use impl_event;
