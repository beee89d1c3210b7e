//! The partition worker's park-mode steps; the state and its scripts are in
//! `crate::deadletter::park` (discards and replays resolve it too).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::partition_worker::{OwnedPartition, WorkerContext};
use crate::deadletter::park::PartitionParking;
use crate::handler::{ErrorClass, Handler};

/// The partition worker's park-mode steps.
impl<H: Handler> WorkerContext<H> {
    /// Writes the dead letter of entry `id`, parks its key (park mode),
    /// then acknowledges: the partition moves on only once the dead letter
    /// is written. False when the lease is lost (or the worker aborted).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn dead_letter_then_ack(
        &self,
        part: &OwnedPartition,
        envelope: crate::Envelope,
        id: &str,
        attempts: u64,
        class: ErrorClass,
        message: &str,
        parking: &mut Option<PartitionParking>,
    ) -> bool {
        let key = envelope.key.clone();
        let mut written = None;
        loop {
            if written.is_none() {
                match self
                    .failures
                    .dead_letter(
                        envelope.clone(),
                        &self.source(part, id),
                        attempts,
                        class,
                        message,
                    )
                    .await
                {
                    Ok(dl) => written = Some(dl),
                    Err(e) => {
                        tracing::error!(stream = %part.stream, entry_id = %id, error = %e, "could not write the dead letter; retrying");
                    }
                }
            }
            if let Some(dl) = written {
                // Parked before the ack: a crash in between redelivers the
                // entry to a key already parked (by its own dead letter).
                let parked = match parking.as_mut() {
                    Some(p) => p.park(&self.conn, &key, dl).await,
                    None => Ok(()),
                };
                match parked {
                    Ok(()) => {
                        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        return self.ack(part, id).await;
                    }
                    Err(e) => {
                        tracing::error!(stream = %part.stream, entry_id = %id, error = %e, "could not park the key of a dead letter; retrying");
                    }
                }
            }
            if !self
                .sleep_unless_aborted(part, Duration::from_secs(1))
                .await
            {
                return false;
            }
        }
    }

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
