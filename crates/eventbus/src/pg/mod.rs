//! PostgreSQL: migrations, the transactional outbox, the relay and the inbox.
//!
//! Tables live in one schema ([`DbSchema`], default `public`). Every
//! statement names them schema-qualified, so callers' `search_path` does not
//! matter. Functions take `impl PgExecutor` (or a connection) so they join
//! the caller's transaction.

mod doze;
mod gate;
mod inbox;
mod migrate;
mod outbox;
mod relay;
mod row;

pub use gate::{GatedConnection, PoolGate};
pub use inbox::{
    cleanup_inbox, inbox_contains, record_inbox, Deduplicated, Inbox, InboxConfig, InboxHandler,
    InboxLayer, InboxStats, Savepoints, DEFAULT_INBOX_BATCH, DEFAULT_INBOX_PARALLEL,
};
pub use migrate::{
    is_migrated, migrate, migrations, read_settings, record_settings, Migration, OutboxSettings,
};
pub use outbox::{outbox_status, replay_published, Outbox, OutboxConfig, PartitionBacklog};
pub use relay::{Failpoint, Relay, RelayConfig, RelayStats};
pub use row::OutboxRow;

pub use crate::db::{connect_pool, DbSchema, ACQUIRE_TIMEOUT, DEFAULT_POOL_SIZE};
pub(crate) use crate::db::{db_error, delete_older_than, event_db_error, safe};
