//! Storage: one [`Store`] interface, a Postgres and a SQLite implementation, and the group-commit [`writer`].
//!
//! Every write is expressed as a [`Change`] and applied in batches: one transaction per batch, so the writer
//! can fold many users' changes into one commit. The batch logic (dedupe by svix id, ordering guard,
//! tombstones) is written once in `sql.rs` against the small `BatchTx` vocabulary of multi-row statements that
//! each backend implements with its own SQL.

pub mod backfill;
mod error;
mod postgres;
mod sql;
mod sqlite;
mod types;
pub mod writer;

use std::future::Future;
use std::time::Duration;

pub use error::StoreError;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use types::{Change, Delivery, Lookup, Outcome, RecordOnly, Source, UserData, UserRow};

use sql::{apply_all, lookup_result, readiness};

use crate::config::DatabaseSettings;

/// The storage interface the rest of the daemon sees.
pub trait Store: Send + Sync + 'static {
    /// Applies the whole batch in one transaction and returns one outcome per change, in order.
    /// On error nothing of the batch is committed.
    fn apply(&self, batch: &[Change]) -> impl Future<Output = Result<Vec<Outcome>, StoreError>> + Send;
    /// Reads one user (a soft-deleted row counts as tombstoned).
    fn lookup(&self, clerk_id: &str) -> impl Future<Output = Result<Lookup, StoreError>> + Send;
    /// Database reachable and every migration applied.
    fn check_ready(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Deletes delivery records older than `age`; returns how many.
    fn prune_deliveries(&self, age: Duration) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// The configured backend.
#[derive(Clone, Debug)]
pub enum Db {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Db {
    /// Connects to the backend named by the URL's scheme (validated by the configuration).
    pub async fn connect(settings: &DatabaseSettings) -> Result<Db, StoreError> {
        if settings.is_postgres() {
            Ok(Db::Postgres(PgStore::connect(settings).await?))
        } else {
            Ok(Db::Sqlite(SqliteStore::connect(settings).await?))
        }
    }

    /// Applies pending migrations (adopting an application-made `users` table first).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Db::Postgres(s) => s.migrate().await,
            Db::Sqlite(s) => s.migrate().await,
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Postgres(s) => s.close().await,
            Db::Sqlite(s) => s.close().await,
        }
    }
}

/// Times a database operation into `clerk_sync_db_query_duration_seconds{operation}` under a span.
async fn timed<T>(operation: &'static str, work: impl Future<Output = T>) -> T {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let result = work.instrument(tracing::debug_span!("db", operation)).await;
    metrics::histogram!(crate::telemetry::metrics::DB_QUERY_DURATION, "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    result
}

impl Store for Db {
    async fn apply(&self, batch: &[Change]) -> Result<Vec<Outcome>, StoreError> {
        timed("apply_batch", async {
            match self {
                Db::Postgres(s) => s.apply(batch).await,
                Db::Sqlite(s) => s.apply(batch).await,
            }
        })
        .await
    }

    async fn lookup(&self, clerk_id: &str) -> Result<Lookup, StoreError> {
        timed("lookup", async {
            match self {
                Db::Postgres(s) => s.lookup(clerk_id).await,
                Db::Sqlite(s) => s.lookup(clerk_id).await,
            }
        })
        .await
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        timed("check_ready", async {
            match self {
                Db::Postgres(s) => s.check_ready().await,
                Db::Sqlite(s) => s.check_ready().await,
            }
        })
        .await
    }

    async fn prune_deliveries(&self, age: Duration) -> Result<u64, StoreError> {
        timed("prune_deliveries", async {
            match self {
                Db::Postgres(s) => s.prune_deliveries(age).await,
                Db::Sqlite(s) => s.prune_deliveries(age).await,
            }
        })
        .await
    }
}
