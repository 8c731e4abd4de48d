//! The SQLite backend (the embedded default: one file beside the daemon).

mod adopt;

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use super::{
    apply_all, Change, Delivery, Lookup, Outcome, Source, SqlTx, Store, StoreError, Upserted, UserData, UserRow,
};
use crate::config::DatabaseSettings;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// ISO-8601 UTC with milliseconds, the format of every timestamp column in the SQLite schema.
macro_rules! now {
    () => {
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    };
}

const UPSERT: &str = concat!(
    "INSERT INTO users (clerk_id, email, first_name, last_name, name, username, image_url,
                        created_via, updated_via, clerk_updated_at, created_at, updated_at)
     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ",
    now!(),
    ", ",
    now!(),
    "
     WHERE NOT EXISTS (SELECT 1 FROM clerk_sync_tombstones t WHERE t.clerk_id = ?1)
     ON CONFLICT (clerk_id) DO UPDATE SET
         email = excluded.email, first_name = excluded.first_name, last_name = excluded.last_name,
         name = excluded.name, username = excluded.username, image_url = excluded.image_url,
         updated_via = excluded.updated_via, clerk_updated_at = excluded.clerk_updated_at, updated_at = ",
    now!(),
    "
     WHERE users.deleted_at IS NULL
       AND (users.clerk_updated_at IS NULL OR users.clerk_updated_at < excluded.clerk_updated_at)
     RETURNING clerk_id"
);

const SOFT_DELETE: &str = concat!(
    "UPDATE users SET deleted_at = strftime('%Y-%m-%dT%H:%M:%fZ', ?2 / 1000.0, 'unixepoch'), updated_via = ?3, ",
    "updated_at = ",
    now!(),
    " WHERE clerk_id = ?1 AND deleted_at IS NULL"
);

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(settings.url.expose())
            .map_err(StoreError::Unavailable)?
            .create_if_missing(true)
            // WAL lets readers (readiness, API reads) proceed while the writer commits.
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_millis(settings.busy_timeout_ms));
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
            .connect_with(options)
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(SqliteStore { pool })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        let first = MIGRATOR.iter().next().map(|m| m.version).unwrap_or_default();
        adopt::adopt_users_table(&self.pool, first).await?;
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl Store for SqliteStore {
    async fn apply(&self, batch: &[Change]) -> Result<Vec<Outcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let outcomes = apply_all(&mut SqliteTx(&mut tx), batch).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn lookup(&self, clerk_id: &str) -> Result<Lookup, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT CAST(id AS TEXT) AS id, clerk_id, email, first_name, last_name, name, username, image_url, \
             created_via, updated_via, clerk_updated_at, deleted_at, created_at, updated_at \
             FROM users WHERE clerk_id = ?1",
        )
        .bind(clerk_id)
        .fetch_optional(&mut *conn)
        .await?;
        let tombstoned = match row {
            None => SqliteTx(&mut conn).is_tombstoned(clerk_id).await?,
            Some(_) => false,
        };
        Ok(super::lookup_result(row, || tombstoned))
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        let applied: Result<i64, _> = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await;
        super::readiness(applied, MIGRATOR.iter().count())
    }

    async fn prune_deliveries(&self, age: Duration) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM clerk_sync_deliveries \
             WHERE received_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || ?1 || ' seconds')",
        )
        .bind(age.as_secs() as i64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

struct SqliteTx<'a>(&'a mut SqliteConnection);

impl SqlTx for SqliteTx<'_> {
    super::portable_sql_tx_methods!();

    async fn upsert_user(&mut self, user: &UserData, via: Source) -> Result<Upserted, sqlx::Error> {
        // SQLite has no xmax; the daemon is its only writer, so a check inside the same write transaction
        // tells insert from update.
        let existed: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE clerk_id = ?1)")
            .bind(&user.clerk_id)
            .fetch_one(&mut *self.0)
            .await?;
        let written: Option<String> = sqlx::query_scalar(UPSERT)
            .bind(&user.clerk_id)
            .bind(&user.email)
            .bind(&user.first_name)
            .bind(&user.last_name)
            .bind(user.name())
            .bind(&user.username)
            .bind(&user.image_url)
            .bind(via.as_str())
            .bind(user.clerk_updated_at)
            .fetch_optional(&mut *self.0)
            .await?;
        Ok(match (written, existed) {
            (None, _) => Upserted::NotApplied,
            (Some(_), false) => Upserted::Created,
            (Some(_), true) => Upserted::Updated,
        })
    }

    async fn delete_user(
        &mut self,
        clerk_id: &str,
        deleted_at_ms: i64,
        via: Source,
        hard: bool,
    ) -> Result<(), sqlx::Error> {
        let query = if hard {
            sqlx::query("DELETE FROM users WHERE clerk_id = ?1").bind(clerk_id)
        } else {
            sqlx::query(SOFT_DELETE)
                .bind(clerk_id)
                .bind(deleted_at_ms)
                .bind(via.as_str())
        };
        query.execute(&mut *self.0).await?;
        Ok(())
    }
}
