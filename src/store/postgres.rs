//! The Postgres backend (production; usually Supabase).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::sql::{BatchTx, NewDelivery, NewUser, Removal};
use super::{apply_all, Change, Lookup, Outcome, Store, StoreError, UserData, UserRow};
use crate::config::DatabaseSettings;

mod adopt_check;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        // A table locked by the application (a migration, a long query) must fail a write in bounded time, so
        // the webhook is answered 503 and retried rather than held past Svix's 15 s.
        let options = PgConnectOptions::from_str(settings.url.expose())
            .map_err(StoreError::Unavailable)?
            .options([
                ("lock_timeout", format!("{}ms", settings.lock_timeout_ms)),
                ("statement_timeout", format!("{}ms", settings.statement_timeout_ms)),
            ]);
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

impl PgStore {
    /// Applies `batch` inside the open transaction `tx` (taking the per-user advisory locks first).
    pub(super) async fn apply_in(tx: &mut PgConnection, batch: &[Change]) -> Result<Vec<Outcome>, sqlx::Error> {
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
        apply_all(&mut PgTx(tx), batch).await
    }
}

impl Store for PgStore {
    async fn apply(&self, batch: &[Change]) -> Result<Vec<Outcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let outcomes = PgStore::apply_in(&mut tx, batch).await?;
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
            None => !PgTx(&mut conn).tombstoned(&[clerk_id]).await?.is_empty(),
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

/// One statement for every user of a batch. `ORDER BY` makes concurrent batches take row locks in one order.
const UPSERT: &str = "\
INSERT INTO users AS u (clerk_id, email, first_name, last_name, name, username, image_url,
                        created_via, updated_via, clerk_updated_at, created_at, updated_at)
SELECT i.clerk_id, i.email, i.first_name, i.last_name, i.name, i.username, i.image_url, i.via, i.via,
       i.clerk_updated_at, now(), now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::int8[])
     AS i(clerk_id, email, first_name, last_name, name, username, image_url, via, clerk_updated_at)
WHERE NOT EXISTS (SELECT 1 FROM clerk_sync_tombstones t WHERE t.clerk_id = i.clerk_id)
ORDER BY i.clerk_id
ON CONFLICT (clerk_id) DO UPDATE SET
    email = EXCLUDED.email, first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
    name = EXCLUDED.name, username = EXCLUDED.username, image_url = EXCLUDED.image_url,
    updated_via = EXCLUDED.updated_via, clerk_updated_at = EXCLUDED.clerk_updated_at, updated_at = now()
WHERE u.deleted_at IS NULL AND (u.clerk_updated_at IS NULL OR u.clerk_updated_at < EXCLUDED.clerk_updated_at)
RETURNING u.clerk_id, (u.xmax = 0)";

const INSERT_DELIVERIES: &str = "\
INSERT INTO clerk_sync_deliveries (svix_id, event_type, clerk_id, outcome)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) ORDER BY 1
ON CONFLICT (svix_id) DO NOTHING
RETURNING svix_id";

impl BatchTx for PgTx<'_> {
    async fn insert_deliveries(&mut self, rows: &[NewDelivery<'_>]) -> Result<HashSet<String>, sqlx::Error> {
        let ids: Vec<&str> = rows.iter().map(|r| r.delivery.svix_id.as_str()).collect();
        let types: Vec<&str> = rows.iter().map(|r| r.delivery.event_type.as_str()).collect();
        let users: Vec<Option<&str>> = rows.iter().map(|r| r.delivery.clerk_id.as_deref()).collect();
        let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome).collect();
        let inserted: Vec<String> = sqlx::query_scalar(INSERT_DELIVERIES)
            .bind(ids)
            .bind(types)
            .bind(users)
            .bind(outcomes)
            .fetch_all(&mut *self.0)
            .await?;
        Ok(inserted.into_iter().collect())
    }

    async fn delivery_outcomes(&mut self, svix_ids: &[&str]) -> Result<HashMap<String, String>, sqlx::Error> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT svix_id, outcome FROM clerk_sync_deliveries WHERE svix_id = ANY($1)")
                .bind(svix_ids)
                .fetch_all(&mut *self.0)
                .await?;
        Ok(rows.into_iter().collect())
    }

    async fn set_delivery_outcomes(&mut self, rows: &[(&str, &str)]) -> Result<(), sqlx::Error> {
        let (ids, outcomes): (Vec<&str>, Vec<&str>) = rows.iter().copied().unzip();
        sqlx::query(
            "UPDATE clerk_sync_deliveries d SET outcome = i.outcome \
             FROM unnest($1::text[], $2::text[]) AS i(svix_id, outcome) WHERE d.svix_id = i.svix_id",
        )
        .bind(ids)
        .bind(outcomes)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn upsert_users(&mut self, rows: &[NewUser<'_>]) -> Result<HashMap<String, bool>, sqlx::Error> {
        let text = |f: fn(&UserData) -> Option<&str>| -> Vec<Option<&str>> { rows.iter().map(|r| f(r.user)).collect() };
        let ids: Vec<&str> = rows.iter().map(|r| r.user.clerk_id.as_str()).collect();
        let names: Vec<Option<String>> = rows.iter().map(|r| r.user.name()).collect();
        let via: Vec<&str> = rows.iter().map(|r| r.via.as_str()).collect();
        let updated: Vec<i64> = rows.iter().map(|r| r.user.clerk_updated_at).collect();
        let written: Vec<(String, bool)> = sqlx::query_as(UPSERT)
            .bind(ids)
            .bind(text(|u| u.email.as_deref()))
            .bind(text(|u| u.first_name.as_deref()))
            .bind(text(|u| u.last_name.as_deref()))
            .bind(names)
            .bind(text(|u| u.username.as_deref()))
            .bind(text(|u| u.image_url.as_deref()))
            .bind(via)
            .bind(updated)
            .fetch_all(&mut *self.0)
            .await?;
        Ok(written.into_iter().collect())
    }

    async fn tombstoned(&mut self, clerk_ids: &[&str]) -> Result<HashSet<String>, sqlx::Error> {
        let found: Vec<String> =
            sqlx::query_scalar("SELECT clerk_id FROM clerk_sync_tombstones WHERE clerk_id = ANY($1)")
                .bind(clerk_ids)
                .fetch_all(&mut *self.0)
                .await?;
        Ok(found.into_iter().collect())
    }

    async fn insert_tombstones(&mut self, rows: &[Removal<'_>]) -> Result<HashSet<String>, sqlx::Error> {
        let ids: Vec<&str> = rows.iter().map(|r| r.clerk_id).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.deleted_at_ms).collect();
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO clerk_sync_tombstones (clerk_id, deleted_at_ms) \
             SELECT * FROM unnest($1::text[], $2::int8[]) ORDER BY 1 \
             ON CONFLICT (clerk_id) DO NOTHING RETURNING clerk_id",
        )
        .bind(ids)
        .bind(at)
        .fetch_all(&mut *self.0)
        .await?;
        Ok(inserted.into_iter().collect())
    }

    async fn soft_delete(&mut self, rows: &[Removal<'_>]) -> Result<(), sqlx::Error> {
        let ids: Vec<&str> = rows.iter().map(|r| r.clerk_id).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.deleted_at_ms).collect();
        let via: Vec<&str> = rows.iter().map(|r| r.via.as_str()).collect();
        sqlx::query(
            "UPDATE users u SET deleted_at = to_timestamp(i.at::double precision / 1000), updated_via = i.via, \
             updated_at = now() FROM unnest($1::text[], $2::int8[], $3::text[]) AS i(clerk_id, at, via) \
             WHERE u.clerk_id = i.clerk_id AND u.deleted_at IS NULL",
        )
        .bind(ids)
        .bind(at)
        .bind(via)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn hard_delete(&mut self, clerk_ids: &[&str]) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM users WHERE clerk_id = ANY($1)")
            .bind(clerk_ids)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn exec(&mut self, sql: &'static str) -> Result<(), sqlx::Error> {
        sqlx::query(sql).execute(&mut *self.0).await?;
        Ok(())
    }
}
