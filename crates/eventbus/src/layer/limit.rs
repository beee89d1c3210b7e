//! [`MaxEventsLayer`]: stop after so many events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tower_layer::Layer;

use crate::handler::{Delivery, Handler, HandlerError};

/// Lets at most `max` events succeed, then cancels a token (the consumer's
/// shutdown, to stop it: `eventbus consume --max-events`). A slot is
/// reserved before the handler runs, so no more than `max` ever run to
/// success, even concurrently; a failure (or an attempt dropped by its
/// timeout) gives its slot back. Events past the limit fail as retryable
/// and stay pending for another consumer.
#[derive(Debug, Clone)]
pub struct MaxEventsLayer {
    limit: Arc<Limit>,
}

#[derive(Debug)]
struct Limit {
    max: u64,
    reserved: AtomicU64,
    done: AtomicU64,
    reached: CancellationToken,
}

impl MaxEventsLayer {
    /// At most `max` successes; `reached` is cancelled at the last one.
    pub fn new(max: u64, reached: CancellationToken) -> Self {
        MaxEventsLayer {
            limit: Arc::new(Limit {
                max,
                reserved: AtomicU64::new(0),
                done: AtomicU64::new(0),
                reached,
            }),
        }
    }

    /// Events that succeeded so far.
    pub fn done(&self) -> u64 {
        self.limit.done.load(Ordering::Acquire)
    }
}

impl<H> Layer<H> for MaxEventsLayer {
    type Service = MaxEvents<H>;

    fn layer(&self, inner: H) -> MaxEvents<H> {
        MaxEvents {
            inner,
            limit: self.limit.clone(),
        }
    }
}

/// The handler a [`MaxEventsLayer`] builds.
#[derive(Debug, Clone)]
pub struct MaxEvents<H> {
    inner: H,
    limit: Arc<Limit>,
}

/// A reserved slot, given back unless the attempt succeeded.
struct Slot<'a> {
    limit: &'a Limit,
    kept: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.limit.reserved.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Limit {
    fn try_reserve(&self) -> Option<Slot<'_>> {
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                (r < self.max).then_some(r + 1)
            })
            .ok()
            .map(|_| Slot {
                limit: self,
                kept: false,
            })
    }
}

impl<H: Handler> Handler for MaxEvents<H> {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let Some(mut slot) = self.limit.try_reserve() else {
            return Err(HandlerError::retryable(
                "--max-events reached; left pending for another consumer",
            ));
        };
        self.inner.handle(delivery).await?;
        slot.kept = true;
        if self.limit.done.fetch_add(1, Ordering::AcqRel) + 1 >= self.limit.max {
            self.limit.reached.cancel();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reserved_and_given_back() {
        let layer = MaxEventsLayer::new(2, CancellationToken::new());
        let l = &layer.limit;
        let a = l.try_reserve().unwrap();
        let mut b = l.try_reserve().unwrap();
        assert!(l.try_reserve().is_none());
        drop(a);
        let _c = l.try_reserve().unwrap();
        b.kept = true;
        drop(b);
        assert!(l.try_reserve().is_none());
    }
}
