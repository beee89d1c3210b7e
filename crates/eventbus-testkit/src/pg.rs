use eventbus::pg::{connect_pool, migrate, DbSchema};
use sqlx::PgPool;

/// The shared PostgreSQL used by tests that do not stop it:
/// `EVENTBUS_TEST_DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/test`.
pub fn shared_database_url() -> String {
    std::env::var("EVENTBUS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A unique, migrated schema (`t_<prefix>_<random>`) on the shared
/// PostgreSQL, dropped (with everything in it) when this is dropped.
#[derive(Debug)]
pub struct TestSchema {
    schema: DbSchema,
    url: String,
    pool: PgPool,
}

impl TestSchema {
    /// Creates and migrates a fresh schema.
    pub async fn new(prefix: &str) -> Self {
        let url = shared_database_url();
        let rand = uuid::Uuid::new_v4().simple().to_string();
        let schema =
            DbSchema::new(format!("t_{prefix}_{}", &rand[..10])).expect("valid schema name");
        let pool = connect_pool(&url, 8, "eventbus-test")
            .await
            .expect("test database");
        migrate(&mut pool.acquire().await.unwrap(), &schema)
            .await
            .expect("migrate test schema");
        TestSchema { schema, url, pool }
    }

    /// A fresh schema name that is NOT created (for "missing table" tests).
    pub fn unmigrated_name(prefix: &str) -> DbSchema {
        let rand = uuid::Uuid::new_v4().simple().to_string();
        DbSchema::new(format!("t_{prefix}_{}", &rand[..10])).expect("valid schema name")
    }

    /// An outbox writing to this schema, with the default settings.
    pub fn outbox_for(&self, topology: &eventbus::Topology) -> eventbus::pg::Outbox {
        eventbus::pg::Outbox::new(
            topology.clone(),
            eventbus::pg::OutboxConfig {
                schema: self.schema().clone(),
                ..Default::default()
            },
        )
        .expect("a valid outbox")
    }

    /// The schema.
    pub fn schema(&self) -> &DbSchema {
        &self.schema
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        self.schema.name()
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A pool on the database (up to 8 connections).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// `"schema"."table"`.
    pub fn table(&self, table: &str) -> String {
        format!("\"{}\".\"{}\"", self.schema.name(), table)
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.schema.name().to_owned());
        // Drop may run inside a runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let pool = connect_pool(&url, 1, "eventbus-test-cleanup").await.ok()?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                )))
                .execute(&pool)
                .await
                .ok()
            })
        })
        .join();
    }
}

/// An inbox handler that writes one row (`event_id`) per handled event into
/// a table of a [`TestSchema`], in the inbox's transaction: count the rows
/// to see effects happen exactly once.
#[derive(Debug)]
pub struct ResultWriter {
    table: String,
    fail_once: bool,
    failed: std::sync::Mutex<std::collections::HashSet<uuid::Uuid>>,
}

impl ResultWriter {
    /// Creates the table `name` in `db` and a writer to it.
    pub async fn create(db: &TestSchema, name: &str) -> Self {
        let table = db.table(name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} (event_id uuid NOT NULL)"
        )))
        .execute(db.pool())
        .await
        .expect("create the results table");
        ResultWriter {
            table,
            fail_once: false,
            failed: Default::default(),
        }
    }

    /// Fails each event once, after writing its row: the row must roll back
    /// with the inbox row.
    pub fn failing_once(mut self) -> Self {
        self.fail_once = true;
        self
    }

    /// The qualified table name.
    pub fn table(&self) -> &str {
        &self.table
    }
}

impl eventbus::pg::InboxHandler for ResultWriter {
    async fn handle<'a>(
        &'a self,
        d: &'a eventbus::Delivery,
        tx: &'a mut sqlx::PgConnection,
    ) -> Result<(), eventbus::HandlerError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (event_id) VALUES ($1)",
            self.table
        )))
        .bind(d.envelope.id)
        .execute(&mut *tx)
        .await
        .map_err(|e| eventbus::HandlerError::retryable(e.to_string()))?;
        if self.fail_once && self.failed.lock().unwrap().insert(d.envelope.id) {
            return Err(eventbus::HandlerError::retryable(
                "planned failure after writing",
            ));
        }
        Ok(())
    }
}
