use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus::{Delivery, Handler, HandlerError};
use uuid::Uuid;

type FailFn = dyn Fn(&Delivery, u32) -> bool + Send + Sync;

/// A handler that records every delivery. Optionally fails some: the
/// predicate gets the delivery and how many times this event id was seen
/// before (0 on the first delivery) and returns true to fail it.
#[derive(Clone)]
pub struct Collector {
    seen: Arc<Mutex<Vec<Delivery>>>,
    attempts: Arc<Mutex<HashMap<Uuid, u32>>>,
    fail: Option<Arc<FailFn>>,
    delay: Duration,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("seen", &self.len())
            .finish()
    }
}

impl Default for Collector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector {
    /// Records everything, fails nothing.
    pub fn new() -> Self {
        Collector {
            seen: Arc::default(),
            attempts: Arc::default(),
            fail: None,
            delay: Duration::ZERO,
        }
    }

    /// Fails the deliveries for which `f(delivery, previous_attempts)` is true.
    pub fn failing(f: impl Fn(&Delivery, u32) -> bool + Send + Sync + 'static) -> Self {
        Collector {
            fail: Some(Arc::new(f)),
            ..Self::new()
        }
    }

    /// Sleeps this long in each delivery before answering.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Successful deliveries so far.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// True if nothing was handled yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the successful deliveries so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap().clone()
    }

    /// The distinct event ids handled successfully.
    pub fn ids(&self) -> std::collections::HashSet<Uuid> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.envelope.id)
            .collect()
    }

    /// Waits (polling) until `cond` holds, up to `within`. Returns whether it held.
    pub async fn wait_until(within: Duration, cond: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !cond() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Waits (polling) until `cond` holds on the deliveries, up to `within`.
    /// Returns whether it held.
    pub async fn wait_for(&self, within: Duration, cond: impl Fn(&[Delivery]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if cond(&self.seen.lock().unwrap()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Handler for Collector {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let previous = {
            let mut a = self.attempts.lock().unwrap();
            let n = a.entry(delivery.envelope.id).or_insert(0);
            *n += 1;
            *n - 1
        };
        if let Some(f) = &self.fail {
            if f(&delivery, previous) {
                return Err(HandlerError::retryable(format!(
                    "planned failure {previous}"
                )));
            }
        }
        self.seen.lock().unwrap().push(delivery);
        Ok(())
    }
}
