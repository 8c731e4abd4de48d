//! The Postgres backend (production; usually Supabase).

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::{
    apply_all, Change, Delivery, Lookup, Outcome, Source, SqlTx, Store, StoreError, Upserted, UserData, UserRow,
};
use crate::config::DatabaseSettings;

mod adopt_check;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(settings.url.expose()).map_err(StoreError::Unavailable)?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
            .connect_with(options)
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(PgStore { pool })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        let first = MIGRATOR.iter().map(|m| m.version).min().unwrap_or_default();
        adopt_check::users_in_current_schema(&self.pool, first).await?;
        MIGRATOR.run(&self.pool).await.map_err(|e| {
            // The adoption step raises an exception (P0001) whose message is meant for the operator as it is.
            let adopt = match &e {
                MigrateError::Execute(sqlx::Error::Database(db))
                | MigrateError::ExecuteMigration(sqlx::Error::Database(db), _) => {
                    (db.code().as_deref() == Some("P0001")).then(|| db.message().to_string())
                }
                _ => None,
            };
            adopt.map_or(StoreError::Migrate(e), StoreError::Adopt)
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Store for PgStore {
    async fn apply(&self, batch: &[Change]) -> Result<Vec<Outcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Replicas sharing this database serialize per user too: without the lock a create on one replica and
        // a delete on another could each miss the other's uncommitted row (READ COMMITTED) and leave a live row
        // beside a tombstone. Locks are taken in sorted order, so two batches never deadlock on each other.
        let mut users: Vec<&str> = batch.iter().filter_map(Change::clerk_id).collect();
        users.sort_unstable();
        users.dedup();
        if !users.is_empty() {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended(u, 0)) FROM unnest($1::text[]) AS u")
                .bind(&users)
                .execute(&mut *tx)
                .await?;
        }
        let outcomes = apply_all(&mut PgTx(&mut tx), batch).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn lookup(&self, clerk_id: &str) -> Result<Lookup, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let row: Option<UserRow> = sqlx::query_as(SELECT_USER)
            .bind(clerk_id)
            .fetch_optional(&mut *conn)
            .await?;
        let tombstoned = match row {
            None => PgTx(&mut conn).is_tombstoned(clerk_id).await?,
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
        let done =
            sqlx::query("DELETE FROM clerk_sync_deliveries WHERE received_at < now() - make_interval(secs => $1)")
                .bind(age.as_secs_f64())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }
}

/// Timestamps as RFC 3339 UTC text, so both backends return the same shape.
const SELECT_USER: &str = "\
SELECT id::text AS id, clerk_id, email, first_name, last_name, name, username, image_url, created_via, updated_via,
       clerk_updated_at,
       to_char(deleted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS deleted_at,
       to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS created_at,
       to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS updated_at
FROM users WHERE clerk_id = $1";

struct PgTx<'a>(&'a mut PgConnection);

const UPSERT: &str = "\
INSERT INTO users AS u (clerk_id, email, first_name, last_name, name, username, image_url,
                        created_via, updated_via, clerk_updated_at, created_at, updated_at)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $8, $9, now(), now()
WHERE NOT EXISTS (SELECT 1 FROM clerk_sync_tombstones t WHERE t.clerk_id = $1)
ON CONFLICT (clerk_id) DO UPDATE SET
    email = EXCLUDED.email, first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
    name = EXCLUDED.name, username = EXCLUDED.username, image_url = EXCLUDED.image_url,
    updated_via = EXCLUDED.updated_via, clerk_updated_at = EXCLUDED.clerk_updated_at, updated_at = now()
WHERE u.deleted_at IS NULL AND (u.clerk_updated_at IS NULL OR u.clerk_updated_at < EXCLUDED.clerk_updated_at)
RETURNING (xmax = 0)";

impl SqlTx for PgTx<'_> {
    super::portable_sql_tx_methods!();

    async fn upsert_user(&mut self, user: &UserData, via: Source) -> Result<Upserted, sqlx::Error> {
        let created: Option<bool> = sqlx::query_scalar(UPSERT)
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
        Ok(match created {
            Some(true) => Upserted::Created,
            Some(false) => Upserted::Updated,
            None => Upserted::NotApplied,
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
            sqlx::query("DELETE FROM users WHERE clerk_id = $1").bind(clerk_id)
        } else {
            sqlx::query(
                "UPDATE users SET deleted_at = to_timestamp($2::double precision / 1000), updated_via = $3, \
                 updated_at = now() WHERE clerk_id = $1 AND deleted_at IS NULL",
            )
            .bind(clerk_id)
            .bind(deleted_at_ms)
            .bind(via.as_str())
        };
        query.execute(&mut *self.0).await?;
        Ok(())
    }
}
