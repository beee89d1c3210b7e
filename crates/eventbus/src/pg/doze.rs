//! When writers notify the relay, and when they need not.
//!
//! A `NOTIFY` costs a writing transaction more than its row: PostgreSQL
//! serialises the commits of every transaction that notified, across the
//! whole server (the notification queue's lock is held until the commit is
//! flushed), so one notification per commit caps an application's commit
//! rate at one WAL flush at a time. A relay that is already working does
//! not need them; only a relay about to wait does.
//!
//! So the outbox trigger (migration 0006) notifies only while a relay
//! *dozes*: a relay that found nothing to do holds the session advisory
//! lock `(hashtext(channel), -1)` on one of its pool's connections (its
//! workers, idle, need none). The trigger
//! first tries the same lock in shared mode for its transaction
//! (`pg_try_advisory_xact_lock_shared`): when that is refused, because a
//! relay holds it or is waiting for it, the transaction notifies; when it is
//! granted, no relay is waiting, the transaction does not notify, and it
//! keeps the shared lock until it commits.
//!
//! No wake-up is lost. A relay takes the lock only after every one of its
//! workers came back from an empty round; granting it waits for each
//! transaction that skipped its notification to end, so when the relay holds
//! the lock those rows are committed, and one more round (woken here)
//! finds them. Rows committed before the relay's request was queued, by
//! writers that were neither waited on nor notified, are found by a round
//! woken once the request has been waiting `grace`. Every transaction that
//! writes after the request is queued notifies. A notification wakes the
//! workers and releases the lock, so writers stop notifying as soon as the
//! relay works again. A lost connection releases the lock with it.
//!
//! A worker that skipped a partition because another relay holds it is not
//! idle: with several relays, one working while the others doze would make
//! every writer notify.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::time::Instant;

use crate::connection::backoff;

/// The workers of one relay that are waiting after an empty round.
#[derive(Debug)]
pub(super) struct Idle {
    workers: usize,
    waiting: AtomicUsize,
    all: tokio::sync::Notify,
}

impl Idle {
    pub(super) fn new(workers: usize) -> Self {
        Idle {
            workers,
            waiting: AtomicUsize::new(0),
            all: tokio::sync::Notify::new(),
        }
    }

    /// A worker waits after an empty round until the guard is dropped.
    pub(super) fn enter(&self) -> IdleGuard<'_> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) + 1 == self.workers {
            self.all.notify_one();
        }
        IdleGuard(self)
    }

    fn all_now(&self) -> bool {
        self.waiting.load(Ordering::Acquire) >= self.workers
    }

    /// Resolves once every worker has been idle at some point since the
    /// last call (a hint: check [`Idle::all_now`]).
    async fn all_idle(&self) {
        self.all.notified().await
    }
}

/// See [`Idle::enter`].
pub(super) struct IdleGuard<'a>(&'a Idle);

impl Drop for IdleGuard<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A pool connection that asks for or holds the lock. Dropped unreleased
/// (mid-request, or holding the lock), it is closed rather than returned
/// to the pool, so the lock goes with it and no other user waits on it.
struct Held(Option<PoolConnection<Postgres>>);

impl Held {
    fn conn(&mut self) -> &mut PoolConnection<Postgres> {
        self.0.as_mut().expect("held until released")
    }

    /// Back to the pool (the lock released first).
    fn release(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            c.close_on_drop();
        }
    }
}

type Taking = Pin<Box<dyn Future<Output = (Held, sqlx::Result<()>)> + Send>>;

enum State {
    /// Working; writers do not notify.
    Awake,
    /// The lock is asked for: writers notify from now on.
    Taking {
        lock: Taking,
        since: Instant,
        swept: bool,
    },
    /// Holding the lock: writers notify.
    Dozing(Held),
}

/// One relay's side of the protocol (module docs).
pub(super) struct Doze {
    pool: PgPool,
    channel: String,
    grace: Duration,
    state: State,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Doze {
    pub(super) fn new(pool: PgPool, channel: String, grace: Duration) -> Self {
        Doze {
            pool,
            channel,
            grace,
            state: State::Awake,
            failures: 0,
            retry_at: None,
        }
    }

    /// The next thing to do: resolves with `true` when the workers should
    /// look again (the lock is held, or the request has waited `grace`).
    /// While awake it waits for every worker to be idle, then asks for the
    /// lock. Dropping the future loses nothing but a connection being opened.
    pub(super) async fn step(&mut self, idle: &Idle) -> bool {
        if matches!(self.state, State::Awake) {
            idle.all_idle().await;
            if idle.all_now() && self.retry_at.is_none_or(|t| Instant::now() >= t) {
                self.retry_at = None;
                self.start().await;
            }
            return false;
        }
        self.progress().await
    }

    /// Asks for the lock, on a connection of the pool (idle workers need
    /// none).
    async fn start(&mut self) {
        let conn = match self.pool.acquire().await {
            Ok(c) => c,
            Err(e) => {
                self.failed(&e);
                return;
            }
        };
        let channel = self.channel.clone();
        let lock: Taking = Box::pin(async move {
            let mut held = Held(Some(conn));
            let r = sqlx::query("SELECT pg_advisory_lock(hashtext($1), -1)")
                .bind(channel)
                .execute(&mut **held.conn())
                .await
                .map(|_| ());
            (held, r)
        });
        self.state = State::Taking {
            lock,
            since: Instant::now(),
            swept: false,
        };
    }

    /// While the lock is asked for: `true` once it is held or the request
    /// has waited `grace`; pending in other states.
    async fn progress(&mut self) -> bool {
        let State::Taking { lock, since, swept } = &mut self.state else {
            return std::future::pending().await;
        };
        let sweep_at = *since + self.grace;
        let (held, r) = if *swept {
            lock.await
        } else {
            tokio::select! {
                done = &mut *lock => done,
                _ = tokio::time::sleep_until(sweep_at) => {
                    *swept = true;
                    return true;
                }
            }
        };
        match r {
            Ok(()) => {
                self.failures = 0;
                self.state = State::Dozing(held);
                true
            }
            Err(e) => {
                self.state = State::Awake;
                drop(held);
                self.failed(&e);
                // A sweep lets the workers look again meanwhile.
                true
            }
        }
    }

    /// Work arrived: releases the lock, so writers stop notifying.
    pub(super) async fn wake(&mut self) {
        match std::mem::replace(&mut self.state, State::Awake) {
            State::Dozing(mut held) => {
                match sqlx::query("SELECT pg_advisory_unlock(hashtext($1), -1)")
                    .bind(&self.channel)
                    .execute(&mut **held.conn())
                    .await
                {
                    Ok(_) => held.release(),
                    // Dropping it closes the connection, which releases the lock.
                    Err(e) => self.failed(&e),
                }
            }
            // Writers notify while the request waits, as expected: keep it.
            other => self.state = other,
        }
    }

    /// The listener is gone: writers' notifications would reach nobody, so
    /// let go of everything; the workers poll until it is back.
    pub(super) fn reset(&mut self) {
        self.state = State::Awake;
    }

    fn failed(&mut self, e: &sqlx::Error) {
        self.failures += 1;
        let delay = backoff(
            self.failures,
            Duration::from_millis(200),
            Duration::from_secs(5),
        );
        self.retry_at = Some(Instant::now() + delay);
        tracing::warn!(error = %e, ?delay, "relay doze connection failed; the relay polls meanwhile");
    }
}
