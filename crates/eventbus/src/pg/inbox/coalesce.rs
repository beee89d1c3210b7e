//! Group commit: requests queued by many tasks, handled a batch at a time.
//!
//! A task [`push`](Coalescer::push)es its request (which carries where the
//! answer goes) and, if a runner is free, starts one. A runner takes what is
//! queued (up to `max`; it never waits for a batch to fill), hands it to
//! [`Flush::flush`], and goes on while anything is queued. At most
//! `parallel` runners work at once; batches form while they are all busy.
//! Runners are tasks of their own, so a batch goes on when the task that
//! started it is cancelled.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a [`Coalescer`] does with a batch.
pub(crate) trait Flush: Send + Sync + 'static {
    /// One queued request.
    type Item: Send + 'static;

    /// Takes the next batch, at most `max`, from the front of `queue`.
    fn take(&self, queue: &mut VecDeque<Self::Item>, max: usize) -> Vec<Self::Item> {
        let n = queue.len().min(max);
        queue.drain(..n).collect()
    }

    /// Handles one batch and answers its requests; returns those to queue
    /// again, first, in order.
    fn flush(&self, batch: Vec<Self::Item>) -> impl Future<Output = Vec<Self::Item>> + Send;
}

/// A queue of requests and its batch runners (see the module docs).
pub(crate) struct Coalescer<F: Flush> {
    pub(crate) flush: F,
    queue: Mutex<VecDeque<F::Item>>,
    runners: Arc<Semaphore>,
    max: usize,
}

impl<F: Flush> Coalescer<F> {
    /// Batches of at most `max`, at most `parallel` at once.
    pub(crate) fn new(flush: F, max: usize, parallel: usize) -> Arc<Self> {
        Arc::new(Coalescer {
            flush,
            queue: Mutex::new(VecDeque::new()),
            runners: Arc::new(Semaphore::new(parallel.max(1))),
            max: max.max(1),
        })
    }

    /// Queues `item`; a runner takes it soon.
    pub(crate) fn push(self: &Arc<Self>, item: F::Item) {
        self.lock().push_back(item);
        if let Ok(permit) = self.runners.clone().try_acquire_owned() {
            tokio::spawn(self.clone().run(permit));
        }
        // Every runner busy: one of them takes `item` before it stops.
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<F::Item>> {
        self.queue.lock().expect("coalescer queue poisoned")
    }

    /// Runs batches while requests are queued, then gives the permit back.
    async fn run(self: Arc<Self>, mut permit: OwnedSemaphorePermit) {
        loop {
            loop {
                let batch = {
                    let mut queue = self.lock();
                    self.flush.take(&mut queue, self.max)
                };
                if batch.is_empty() {
                    break;
                }
                let again = self.flush.flush(batch).await;
                if !again.is_empty() {
                    let mut queue = self.lock();
                    for item in again.into_iter().rev() {
                        queue.push_front(item);
                    }
                }
                // Let the tasks just answered queue their next requests
                // (an ordered partition's next entry) before the next
                // batch forms.
                tokio::task::yield_now().await;
            }
            drop(permit);
            // A request queued after the queue looked empty, while this
            // runner still held its permit, found no free runner: take it.
            if self.lock().is_empty() {
                return;
            }
            match self.runners.clone().try_acquire_owned() {
                Ok(p) => permit = p,
                Err(_) => return, // another runner holds it and will look
            }
        }
    }
}
