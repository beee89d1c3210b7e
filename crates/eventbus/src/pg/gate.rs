//! [`PoolGate`]: many tasks, one small pool, no connection storm.
//!
//! sqlx bounds each `acquire` by the pool's `acquire_timeout`, and a
//! connection opened for a waiter is opened *inside* that waiter's deadline.
//! With many more waiters than connections, the waiter that finds a free
//! slot has usually waited most of its deadline already: its connect is cut
//! off half-way (the server is left with a half-open backend), the slot is
//! free again, and the next nearly-expired waiter does the same. Under
//! overload that loop reached ~500–800 connection attempts a second and
//! moved nothing (docs/benchmarks.md, "outbox overload").
//!
//! The gate puts a fair semaphore sized to the pool in front of it: tasks
//! wait there, without a deadline, and only as many tasks as the pool has
//! connections call `acquire` at once. Each of them finds an idle connection
//! or a free slot at once, so a connect, when needed, starts at the
//! beginning of its deadline and is never abandoned half-way by a waiter
//! that will immediately try again. When acquiring fails (server down,
//! `too many clients`, a connect timing out), the failing task keeps its
//! place in the gate and sleeps a jittered, growing backoff before letting
//! the next task try, so a process makes at most "pool size" attempts per
//! backoff period.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::connection::backoff;

/// First and largest delay after a failed acquire (jittered, see `backoff`).
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A fair queue in front of a [`PgPool`]: at most as many tasks acquire as
/// the pool has connections, and failures back off. Clone it to share one
/// gate among the users of one pool. See the module docs.
#[derive(Clone, Debug)]
pub struct PoolGate {
    pool: PgPool,
    permits: Arc<Semaphore>,
    failures: Arc<AtomicU32>,
}

impl PoolGate {
    /// A gate sized to the pool's `max_connections`.
    pub fn new(pool: PgPool) -> Self {
        let size = pool.options().get_max_connections().max(1) as usize;
        PoolGate {
            pool,
            permits: Arc::new(Semaphore::new(size)),
            failures: Arc::default(),
        }
    }

    /// The pool behind the gate.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// How many tasks may hold a connection at once (the pool's size).
    pub fn size(&self) -> usize {
        self.pool.options().get_max_connections().max(1) as usize
    }

    /// Waits for a turn (no deadline), then takes a connection from the
    /// pool. On failure the turn is held for a jittered backoff before the
    /// error is returned, so the next task does not retry at once.
    pub async fn acquire(&self) -> Result<GatedConnection, sqlx::Error> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        match self.pool.acquire().await {
            Ok(conn) => {
                self.failures.store(0, Ordering::Relaxed);
                Ok(GatedConnection {
                    conn,
                    _permit: permit,
                })
            }
            Err(e) => {
                let n = self.failures.fetch_add(1, Ordering::Relaxed);
                if !matches!(e, sqlx::Error::PoolClosed) {
                    tracing::debug!(error = %e, failures = n + 1, "PostgreSQL acquire failed; backing off");
                    tokio::time::sleep(backoff(n.min(16), BACKOFF_BASE, BACKOFF_MAX)).await;
                }
                drop(permit);
                Err(e)
            }
        }
    }
}

/// A pooled connection holding its turn in a [`PoolGate`]; both are given
/// back when it is dropped.
#[derive(Debug)]
pub struct GatedConnection {
    conn: PoolConnection<Postgres>,
    _permit: OwnedSemaphorePermit,
}

impl Deref for GatedConnection {
    type Target = PoolConnection<Postgres>;

    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl DerefMut for GatedConnection {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}
