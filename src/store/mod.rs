//! Storage: one [`Store`] interface, a Postgres and a SQLite implementation, and the group-commit [`writer`].
//!
//! Every write is expressed as a [`Change`] and applied in batches: one transaction per batch, so the writer
//! can fold many users' changes into one commit. The per-change logic (dedupe by svix id, ordering guard,
//! tombstones) is written once in [`apply_change`] against the small [`SqlTx`] vocabulary that each backend
//! implements with its own SQL.

mod error;
mod postgres;
mod sqlite;
pub mod writer;

use std::future::Future;
use std::time::Duration;

pub use error::StoreError;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::config::DatabaseSettings;

/// Which path wrote a row; stored in `created_via` / `updated_via` and counted by the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Webhook,
    Fallback,
    Backfill,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::Fallback => "fallback",
            Source::Backfill => "backfill",
        }
    }
}

/// The daemon's own columns of one user, as Clerk last described them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserData {
    pub clerk_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    /// Clerk's `updated_at` in ms since the epoch: the ordering guard.
    pub clerk_updated_at: i64,
}

impl UserData {
    /// First and last name joined by a space; `None` when both are missing.
    pub fn name(&self) -> Option<String> {
        let parts: Vec<&str> = [&self.first_name, &self.last_name]
            .into_iter()
            .flatten()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// The Svix message a change came from; recorded in the same transaction, which makes redelivery a no-op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub svix_id: String,
    pub event_type: String,
    pub clerk_id: Option<String>,
}

/// What is recorded for a delivery that changes no user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordOnly {
    Ignored,
    InvalidPayload,
}

/// One unit of work for the writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Create or update, applied only when newer than the stored row and never over a tombstone.
    Upsert {
        user: UserData,
        via: Source,
        delivery: Option<Delivery>,
    },
    /// Tombstone the user; soft-delete (or, with `hard`, remove) the row.
    Delete {
        clerk_id: String,
        deleted_at_ms: i64,
        via: Source,
        hard: bool,
        delivery: Option<Delivery>,
    },
    /// Only remember that a delivery was seen.
    Record { delivery: Delivery, outcome: RecordOnly },
}

impl Change {
    fn delivery(&self) -> Option<&Delivery> {
        match self {
            Change::Upsert { delivery, .. } | Change::Delete { delivery, .. } => delivery.as_ref(),
            Change::Record { delivery, .. } => Some(delivery),
        }
    }
}

/// What applying a [`Change`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    /// Older than (or as old as) the stored row: nothing changed.
    Stale,
    /// The user is deleted: nothing brings it back.
    Tombstoned,
    Deleted,
    Recorded(RecordOnly),
    /// This svix id was processed before; carries the outcome stored then.
    Duplicate(String),
}

impl Outcome {
    /// The value of `clerk_sync_deliveries.outcome` for this result.
    pub fn delivery_outcome(&self) -> &str {
        match self {
            Outcome::Created | Outcome::Updated | Outcome::Deleted => "applied",
            Outcome::Stale => "stale",
            Outcome::Tombstoned => "tombstoned",
            Outcome::Recorded(RecordOnly::Ignored) => "ignored",
            Outcome::Recorded(RecordOnly::InvalidPayload) => "invalid_payload",
            Outcome::Duplicate(prior) => prior,
        }
    }
}

/// A user as the API returns it: every daemon-owned column. Timestamps are RFC 3339 strings in UTC.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub clerk_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    pub created_via: String,
    pub updated_via: Option<String>,
    pub clerk_updated_at: Option<i64>,
    pub deleted_at: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// What the database knows about one clerk id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(std::sync::Arc<UserRow>),
    /// Deleted in Clerk (soft-deleted row, or a tombstone without a row): never re-created.
    Tombstoned,
    Missing,
}

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

/// Turns the row (if any) and the tombstone flag into a [`Lookup`].
fn lookup_result(row: Option<UserRow>, tombstoned: impl FnOnce() -> bool) -> Lookup {
    match row {
        Some(row) if row.deleted_at.is_none() => Lookup::Found(std::sync::Arc::new(row)),
        Some(_) => Lookup::Tombstoned,
        None if tombstoned() => Lookup::Tombstoned,
        None => Lookup::Missing,
    }
}

/// Ready when the migrations table lists every embedded migration as applied.
fn readiness(applied: Result<i64, sqlx::Error>, expected: usize) -> Result<(), StoreError> {
    match applied {
        Ok(n) if n >= expected as i64 => Ok(()),
        Ok(n) => Err(StoreError::NotReady(format!("{n} of {expected} migrations applied"))),
        Err(sqlx::Error::Database(db)) => Err(StoreError::NotReady(db.message().to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Result of the conflict-safe upsert statement.
enum Upserted {
    Created,
    Updated,
    /// The guard refused it: stale, or the user is tombstoned.
    NotApplied,
}

/// The statements one change needs, inside an open transaction. Each backend implements them with its SQL.
trait SqlTx {
    /// Inserts the delivery row unless the svix id exists; `false` when it did.
    async fn insert_delivery(&mut self, d: &Delivery, outcome: &str) -> Result<bool, sqlx::Error>;
    async fn delivery_outcome(&mut self, svix_id: &str) -> Result<String, sqlx::Error>;
    async fn set_delivery_outcome(&mut self, svix_id: &str, outcome: &str) -> Result<(), sqlx::Error>;
    async fn upsert_user(&mut self, user: &UserData, via: Source) -> Result<Upserted, sqlx::Error>;
    async fn is_tombstoned(&mut self, clerk_id: &str) -> Result<bool, sqlx::Error>;
    /// Inserts the tombstone unless one exists; `false` when it did.
    async fn insert_tombstone(&mut self, clerk_id: &str, deleted_at_ms: i64) -> Result<bool, sqlx::Error>;
    async fn delete_user(
        &mut self,
        clerk_id: &str,
        deleted_at_ms: i64,
        via: Source,
        hard: bool,
    ) -> Result<(), sqlx::Error>;
}

/// The [`SqlTx`] methods whose SQL is the same on both backends (SQLite reads `$1` as a parameter numbered by
/// first appearance, which is the order used here). Expanded inside each backend's `impl SqlTx`, whose
/// transaction wrapper is a tuple struct around `&mut <Connection>`.
macro_rules! portable_sql_tx_methods {
    () => {
        async fn insert_delivery(&mut self, d: &Delivery, outcome: &str) -> Result<bool, sqlx::Error> {
            let done = sqlx::query(
                "INSERT INTO clerk_sync_deliveries (svix_id, event_type, clerk_id, outcome) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (svix_id) DO NOTHING",
            )
            .bind(&d.svix_id)
            .bind(&d.event_type)
            .bind(&d.clerk_id)
            .bind(outcome)
            .execute(&mut *self.0)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn delivery_outcome(&mut self, svix_id: &str) -> Result<String, sqlx::Error> {
            sqlx::query_scalar("SELECT outcome FROM clerk_sync_deliveries WHERE svix_id = $1")
                .bind(svix_id)
                .fetch_one(&mut *self.0)
                .await
        }

        async fn set_delivery_outcome(&mut self, svix_id: &str, outcome: &str) -> Result<(), sqlx::Error> {
            sqlx::query("UPDATE clerk_sync_deliveries SET outcome = $2 WHERE svix_id = $1")
                .bind(svix_id)
                .bind(outcome)
                .execute(&mut *self.0)
                .await?;
            Ok(())
        }

        async fn is_tombstoned(&mut self, clerk_id: &str) -> Result<bool, sqlx::Error> {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM clerk_sync_tombstones WHERE clerk_id = $1)")
                .bind(clerk_id)
                .fetch_one(&mut *self.0)
                .await
        }

        async fn insert_tombstone(&mut self, clerk_id: &str, deleted_at_ms: i64) -> Result<bool, sqlx::Error> {
            let done = sqlx::query(
                "INSERT INTO clerk_sync_tombstones (clerk_id, deleted_at_ms) VALUES ($1, $2) \
                 ON CONFLICT (clerk_id) DO NOTHING",
            )
            .bind(clerk_id)
            .bind(deleted_at_ms)
            .execute(&mut *self.0)
            .await?;
            Ok(done.rows_affected() == 1)
        }
    };
}
pub(crate) use portable_sql_tx_methods;

/// The one definition of what a change means, shared by both backends.
async fn apply_change<T: SqlTx>(tx: &mut T, change: &Change) -> Result<Outcome, sqlx::Error> {
    // The delivery row goes first: a redelivered svix id stops here, before touching the user.
    let provisional = match change {
        Change::Record { outcome, .. } => Outcome::Recorded(*outcome),
        _ => Outcome::Created,
    };
    if let Some(d) = change.delivery() {
        if !tx.insert_delivery(d, provisional.delivery_outcome()).await? {
            return Ok(Outcome::Duplicate(tx.delivery_outcome(&d.svix_id).await?));
        }
    }
    let outcome = match change {
        Change::Upsert { user, via, .. } => match tx.upsert_user(user, *via).await? {
            Upserted::Created => Outcome::Created,
            Upserted::Updated => Outcome::Updated,
            Upserted::NotApplied if tx.is_tombstoned(&user.clerk_id).await? => Outcome::Tombstoned,
            Upserted::NotApplied => Outcome::Stale,
        },
        Change::Delete {
            clerk_id,
            deleted_at_ms,
            via,
            hard,
            ..
        } => {
            if tx.insert_tombstone(clerk_id, *deleted_at_ms).await? {
                tx.delete_user(clerk_id, *deleted_at_ms, *via, *hard).await?;
                Outcome::Deleted
            } else {
                Outcome::Tombstoned
            }
        }
        Change::Record { outcome, .. } => Outcome::Recorded(*outcome),
    };
    if let Some(d) = change.delivery() {
        if outcome.delivery_outcome() != provisional.delivery_outcome() {
            tx.set_delivery_outcome(&d.svix_id, outcome.delivery_outcome()).await?;
        }
    }
    Ok(outcome)
}

/// Applies a batch through `tx`; the caller owns begin / commit.
async fn apply_all<T: SqlTx>(tx: &mut T, batch: &[Change]) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut outcomes = Vec::with_capacity(batch.len());
    for change in batch {
        outcomes.push(apply_change(tx, change).await?);
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(first: Option<&str>, last: Option<&str>) -> UserData {
        UserData {
            clerk_id: "user_1".into(),
            email: None,
            first_name: first.map(Into::into),
            last_name: last.map(Into::into),
            username: None,
            image_url: None,
            clerk_updated_at: 1,
        }
    }

    #[test]
    fn name_joins_present_parts() {
        assert_eq!(
            user(Some("Ada"), Some("Lovelace")).name().as_deref(),
            Some("Ada Lovelace")
        );
        assert_eq!(user(Some("Ada"), None).name().as_deref(), Some("Ada"));
        assert_eq!(user(None, Some("Lovelace")).name().as_deref(), Some("Lovelace"));
        assert_eq!(user(None, None).name(), None);
        assert_eq!(user(Some(" "), None).name(), None);
    }

    #[test]
    fn delivery_outcomes_name_the_stored_values() {
        assert_eq!(Outcome::Created.delivery_outcome(), "applied");
        assert_eq!(Outcome::Deleted.delivery_outcome(), "applied");
        assert_eq!(Outcome::Stale.delivery_outcome(), "stale");
        assert_eq!(Outcome::Tombstoned.delivery_outcome(), "tombstoned");
        assert_eq!(
            Outcome::Recorded(RecordOnly::InvalidPayload).delivery_outcome(),
            "invalid_payload"
        );
        assert_eq!(Outcome::Duplicate("ignored".into()).delivery_outcome(), "ignored");
    }
}
