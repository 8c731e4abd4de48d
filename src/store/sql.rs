//! What a change means, written once against the small [`SqlTx`] vocabulary each backend implements.

use super::{Change, Delivery, Lookup, Outcome, Source, StoreError, UserData, UserRow};

/// Turns the row (if any) and the tombstone flag into a [`Lookup`].
pub(super) fn lookup_result(row: Option<UserRow>, tombstoned: impl FnOnce() -> bool) -> Lookup {
    match row {
        Some(row) if row.deleted_at.is_none() => Lookup::Found(std::sync::Arc::new(row)),
        Some(_) => Lookup::Tombstoned,
        None if tombstoned() => Lookup::Tombstoned,
        None => Lookup::Missing,
    }
}

/// Ready when the migrations table lists every embedded migration as applied.
pub(super) fn readiness(applied: Result<i64, sqlx::Error>, expected: usize) -> Result<(), StoreError> {
    match applied {
        Ok(n) if n >= expected as i64 => Ok(()),
        Ok(n) => Err(StoreError::NotReady(format!("{n} of {expected} migrations applied"))),
        Err(sqlx::Error::Database(db)) => Err(StoreError::NotReady(db.message().to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Result of the conflict-safe upsert statement.
pub(super) enum Upserted {
    Created,
    Updated,
    /// The guard refused it: stale, or the user is tombstoned.
    NotApplied,
}

/// The statements one change needs, inside an open transaction. Each backend implements them with its SQL.
pub(super) trait SqlTx {
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
pub(super) use portable_sql_tx_methods;

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
pub(super) async fn apply_all<T: SqlTx>(tx: &mut T, batch: &[Change]) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut outcomes = Vec::with_capacity(batch.len());
    for change in batch {
        outcomes.push(apply_change(tx, change).await?);
    }
    Ok(outcomes)
}
