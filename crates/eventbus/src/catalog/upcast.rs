//! Upcasters: functions turning the data of one version of a type into the
//! next listed version, chained so a handler sees the version it asks for.
//!
//! Upcasters are code, not schema files: each is registered on a
//! [`Catalog`] for a type and a `from` version, and goes to the next version
//! the manifest lists. The result of a chain is validated against the target
//! version, so a faulty upcaster is caught as an error, never handed on.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::{Catalog, CatalogError, SchemaErrors};
use crate::envelope::Envelope;

type UpcastFn = dyn Fn(Value) -> Result<Value, String> + Send + Sync;

/// Turns the data of version `from` of a type into its next version.
#[derive(Clone)]
pub struct Upcaster {
    event_type: String,
    from: u32,
    to: u32,
    description: String,
    f: Arc<UpcastFn>,
}

impl fmt::Debug for Upcaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Upcaster({} v{} → v{})",
            self.event_type, self.from, self.to
        )
    }
}

impl Upcaster {
    /// An upcaster of `event_type` from version `from` to the next version
    /// of the catalogue it is registered on. `description` says in words what
    /// it does (it appears in the generated docs); `f` returns the new data
    /// or why the old data cannot be converted.
    pub fn new(
        event_type: impl Into<String>,
        from: u32,
        description: impl Into<String>,
        f: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        Upcaster {
            event_type: event_type.into(),
            from,
            to: from + 1,
            description: description.into(),
            f: Arc::new(f),
        }
    }

    /// The type it applies to.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The version it reads.
    pub fn from(&self) -> u32 {
        self.from
    }

    /// The version it writes (the next version of the type).
    pub fn to(&self) -> u32 {
        self.to
    }

    /// What it does, in words.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Applies it to one event's data.
    pub fn apply(&self, data: Value) -> Result<Value, String> {
        (self.f)(data)
    }
}

/// Why an event could not be brought to the version asked for.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum UpcastError {
    /// The type is not in the catalogue.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// The target version is older than the event's, or not in the catalogue.
    #[error("cannot turn {event_type} v{from} into v{to}: upcasters only go to later versions the catalogue has")]
    NoPath {
        /// The type.
        event_type: String,
        /// The event's version.
        from: u32,
        /// The version asked for.
        to: u32,
    },
    /// A step of the chain has no upcaster.
    #[error("no upcaster registered for {event_type} v{from}")]
    Missing {
        /// The type.
        event_type: String,
        /// The version with no way up.
        from: u32,
    },
    /// An upcaster refused the data.
    #[error("upcasting {event_type} v{from} failed: {reason}")]
    Failed {
        /// The type.
        event_type: String,
        /// The version it started from.
        from: u32,
        /// What the upcaster said.
        reason: String,
    },
    /// The chain produced data that is not valid at the target version (a
    /// bug in an upcaster).
    #[error("upcast result is invalid: {0}")]
    Invalid(SchemaErrors),
}

impl Catalog {
    /// Registers an upcaster. Its type must be in the catalogue with its
    /// `from` version and a later one (the upcaster goes to the next listed).
    pub fn with_upcaster(mut self, mut upcaster: Upcaster) -> Result<Self, CatalogError> {
        let error = |reason: &str| CatalogError::Upcaster {
            event_type: upcaster.event_type.clone(),
            from: upcaster.from,
            reason: reason.to_owned(),
        };
        let ty = self
            .get(&upcaster.event_type)
            .ok_or_else(|| error("the type is not in the catalogue"))?;
        if ty.version(upcaster.from).is_none() {
            return Err(error("the catalogue has no such version of the type"));
        }
        let next = ty
            .versions()
            .iter()
            .map(|v| v.version())
            .find(|v| *v > upcaster.from)
            .ok_or_else(|| {
                error("it is the type's latest version: there is nothing to upcast to")
            })?;
        upcaster.to = next;
        self.upcasters
            .insert((upcaster.event_type.clone(), upcaster.from), upcaster);
        Ok(self)
    }

    /// Registers the upcasters this crate ships whose type and versions the
    /// catalogue has.
    pub(crate) fn with_standard_upcasters(mut self) -> Result<Self, CatalogError> {
        for upcaster in standard() {
            let applies = self.get(upcaster.event_type()).is_some_and(|t| {
                t.version(upcaster.from()).is_some() && t.latest().version() > upcaster.from()
            });
            if applies {
                self = self.with_upcaster(upcaster)?;
            }
        }
        Ok(self)
    }

    /// The upcaster of a type from a version, if registered.
    pub fn upcaster(&self, event_type: &str, from: u32) -> Option<&Upcaster> {
        self.upcasters.get(&(event_type.to_owned(), from))
    }

    /// Every registered upcaster, by type (manifest order) then version.
    pub fn upcasters(&self) -> Vec<&Upcaster> {
        let mut all: Vec<&Upcaster> = self.upcasters.values().collect();
        all.sort_by_key(|u| (self.index.get(&u.event_type).copied(), u.from));
        all
    }

    /// Brings an event to version `to` of its type through the chain of
    /// upcasters; the result is validated against version `to`. An event
    /// already at `to` is returned as it is.
    pub fn upcast(&self, mut event: Envelope, to: u32) -> Result<Envelope, UpcastError> {
        if event.version == to {
            return Ok(event);
        }
        event.data = self.upcast_data(&event.event_type, event.version, to, event.data)?;
        event.version = to;
        Ok(event)
    }

    /// Brings data of version `from` of a type to version `to`; the result is
    /// validated against version `to`.
    pub fn upcast_data(
        &self,
        event_type: &str,
        from: u32,
        to: u32,
        data: Value,
    ) -> Result<Value, UpcastError> {
        let ty = self
            .get(event_type)
            .ok_or_else(|| UpcastError::UnknownType(event_type.to_owned()))?;
        if from > to || ty.version(to).is_none() || ty.version(from).is_none() {
            return Err(UpcastError::NoPath {
                event_type: event_type.to_owned(),
                from,
                to,
            });
        }
        let mut version = from;
        let mut data = data;
        while version < to {
            let upcaster =
                self.upcaster(event_type, version)
                    .ok_or_else(|| UpcastError::Missing {
                        event_type: event_type.to_owned(),
                        from: version,
                    })?;
            data = upcaster.apply(data).map_err(|reason| UpcastError::Failed {
                event_type: event_type.to_owned(),
                from: version,
                reason,
            })?;
            version = upcaster.to();
        }
        self.validate_data(event_type, to, &data)
            .map_err(UpcastError::Invalid)?;
        Ok(data)
    }
}

/// The upcasters shipped for the standard catalogue.
fn standard() -> Vec<Upcaster> {
    vec![Upcaster::new(
        "work_item.processing_failed",
        1,
        "adds `error.category`, derived from `error.code` (`VALIDATION_FAILED` → `validation`, \
         `NOT_FOUND` → `not_found`, `RETRIES_EXHAUSTED` → `exhausted`, `UPSTREAM_TIMEOUT` → `timeout`, \
         `RATE_LIMITED` → `rate_limited`, ...; a code it does not recognise → `unknown`)",
        processing_failed_v1_to_v2,
    )]
}

fn processing_failed_v1_to_v2(mut data: Value) -> Result<Value, String> {
    let error = data
        .get_mut("error")
        .and_then(Value::as_object_mut)
        .ok_or("`error` is not an object")?;
    let code = error
        .get("code")
        .and_then(Value::as_str)
        .ok_or("`error.code` is not a string")?;
    let category = error_category(code);
    error.insert("category".to_owned(), Value::from(category));
    Ok(data)
}

/// The `error.category` of version 2 of `work_item.processing_failed` for a
/// version 1 error code, by the words the code contains.
pub(crate) fn error_category(code: &str) -> &'static str {
    let has = |words: &[&str]| words.iter().any(|w| code.contains(w));
    if has(&["VALIDATION", "INVALID", "MALFORMED"]) {
        "validation"
    } else if has(&["NOT_FOUND", "MISSING"]) {
        "not_found"
    } else if has(&["PERMISSION", "FORBIDDEN", "UNAUTHORIZED", "DENIED"]) {
        "permission"
    } else if has(&["RATE_LIMIT", "THROTTLED", "QUOTA"]) {
        "rate_limited"
    } else if has(&["TIMEOUT", "TIMED_OUT", "DEADLINE"]) {
        "timeout"
    } else if has(&["EXHAUSTED"]) {
        "exhausted"
    } else if has(&["UPSTREAM", "CONNECTION", "UNAVAILABLE", "_API_"]) || code.starts_with("SLACK_")
    {
        "upstream"
    } else if has(&["INTERNAL", "PANIC", "UNHANDLED"]) {
        "internal"
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn categories() {
        for (code, category) in [
            ("VALIDATION_FAILED", "validation"),
            ("NOT_FOUND", "not_found"),
            ("RETRIES_EXHAUSTED", "exhausted"),
            ("UPSTREAM_TIMEOUT", "timeout"),
            ("RATE_LIMITED", "rate_limited"),
            ("CONNECTION_RESET", "upstream"),
            ("SLACK_CHANNEL_ARCHIVED", "upstream"),
            ("FORBIDDEN", "permission"),
            ("UNHANDLED_EXCEPTION", "internal"),
            ("SOMETHING_ELSE", "unknown"),
        ] {
            assert_eq!(error_category(code), category, "{code}");
        }
    }

    #[test]
    fn refuses_data_it_cannot_read() {
        assert!(processing_failed_v1_to_v2(json!({"error": "x"})).is_err());
        assert!(processing_failed_v1_to_v2(json!({"error": {"code": 1}})).is_err());
        assert!(processing_failed_v1_to_v2(json!(null)).is_err());
    }
}
