//! Storage: one [`Store`] interface, a Postgres and a SQLite implementation, and the group-commit [`writer`].
//!
//! Every write is expressed as a [`Change`] and applied in batches: one transaction per batch, so the writer
//! can fold many users' changes into one commit. The batch logic (dedupe by svix id, ordering guard,
//! tombstones) is written once in `sql.rs` against the small `BatchTx` vocabulary of multi-row statements that
//! each backend implements with its own SQL.

/// Runs `$body` with `$pool` bound to whichever pool `$db` (a [`Db`]) holds: for statements that read the same
/// on both backends (SQLite reads `$n` as numbered parameters).
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            Db::Postgres(s) => {
                let $pool = s.pool();
                $body
            }
            Db::Sqlite(s) => {
                let $pool = s.pool();
                $body
            }
        }
    };
}

pub mod backfill;
pub mod changes;
pub mod diagnostics;
mod error;
pub mod instance;
mod json;
mod postgres;
pub mod prune;
pub mod refusals;
mod rows;
mod sanitize;
mod sql;
mod sqlite;
mod types;
pub mod writer;

use std::future::Future;
use std::time::Duration;

pub use error::StoreError;
pub use json::{nesting_within_limit, RawJson};
pub use postgres::PgStore;
pub use rows::{
    string_enum, JsonText, Lookup, MembersOf, MembershipCursor, MembershipRow, OrganizationRow, Row, UserRow,
};
pub use sqlite::SqliteStore;
pub use types::{
    Change, Delivery, Entity, Kind, MembershipData, OrganizationData, Outcome, RecordOnly, Source, UserData,
};

use sql::{apply_all, lookup_result, readiness};

use crate::config::DatabaseSettings;

/// The storage interface the rest of the daemon sees.
pub trait Store: Send + Sync + 'static {
    /// Applies the whole batch in one transaction and returns one outcome per change, in order.
    /// On error nothing of the batch is committed.
    fn apply(&self, batch: &[Change]) -> impl Future<Output = Result<Vec<Outcome>, StoreError>> + Send;
    /// Reads one record of the kind its id names (a soft-deleted row counts as tombstoned).
    fn lookup(&self, clerk_id: &str) -> impl Future<Output = Result<Lookup, StoreError>> + Send;
    /// A page of live memberships, newest first, after `after`.
    fn memberships(
        &self,
        of: MembersOf<'_>,
        after: Option<&MembershipCursor>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<MembershipRow>, StoreError>> + Send;
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

    /// Applies pending migrations (adopting the application's own tables first); with `rls` (Postgres only,
    /// `supabase.rls`) then enables row-level security on the synced tables.
    pub async fn migrate(&self, rls: bool) -> Result<(), StoreError> {
        match self {
            Db::Postgres(s) => {
                s.migrate().await?;
                if rls {
                    postgres::rls::enable(s.pool()).await?;
                }
                Ok(())
            }
            Db::Sqlite(_) if rls => Err(StoreError::Adopt(
                "supabase.rls is set, but row-level security exists only on Postgres (Supabase); unset it for SQLite"
                    .into(),
            )),
            Db::Sqlite(s) => s.migrate().await,
        }
    }

    /// Turns the change feed on or off (on by default): `changes.enabled`.
    pub fn set_feed(&mut self, on: bool) {
        match self {
            Db::Postgres(s) => s.set_feed(on),
            Db::Sqlite(s) => s.set_feed(on),
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

    async fn memberships(
        &self,
        of: MembersOf<'_>,
        after: Option<&MembershipCursor>,
        limit: i64,
    ) -> Result<Vec<MembershipRow>, StoreError> {
        timed("memberships", async {
            match self {
                Db::Postgres(s) => s.memberships(of, after, limit).await,
                Db::Sqlite(s) => s.memberships(of, after, limit).await,
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
