//! The partition worker's park-mode steps; the state and its scripts are in
//! `crate::deadletter::park` (discards and replays resolve it too).

use std::time::Duration;

use super::partition_worker::{OwnedPartition, WorkerContext};
use crate::deadletter::park::PartitionParking;
use crate::handler::Handler;

/// The partition worker's park-mode steps.
impl<H: Handler> WorkerContext<H> {
    /// Park mode: the partition's parked keys, once its pending entries are
    /// taken over. `Some(None)` when park mode is off; `None` when the
    /// worker is aborted while Redis is failing.
    pub(super) async fn load_parking(
        &self,
        part: &OwnedPartition,
    ) -> Option<Option<PartitionParking>> {
        if !self.park_keys {
            return Some(None);
        }
        loop {
            match PartitionParking::load(&self.conn, &part.stream, &self.group).await {
                Ok(p) => return Some(Some(p)),
                Err(e) => {
                    tracing::warn!(stream = %part.stream, error = %e, "loading parked keys failed; retrying");
                    if !self
                        .sleep_unless_aborted(part, Duration::from_millis(500))
                        .await
                    {
                        return None;
                    }
                }
            }
        }
    }

    /// Park mode: `Some(Some(dead letter))` when `key` is held, `None` when
    /// its events flow, `Some(None)` when the worker is aborted while Redis
    /// is failing.
    pub(super) async fn held_by(
        &self,
        part: &OwnedPartition,
        parking: &mut Option<PartitionParking>,
        key: &str,
    ) -> Option<Option<String>> {
        let parking = parking.as_mut()?;
        loop {
            match parking.held_by(&self.conn, key).await {
                Ok(held) => return held.map(Some),
                Err(e) => {
                    tracing::warn!(stream = %part.stream, error = %e, "checking a parked key failed; retrying");
                    if !self
                        .sleep_unless_aborted(part, Duration::from_millis(500))
                        .await
                    {
                        return Some(None);
                    }
                }
            }
        }
    }
}
