//! The SQLite backend (the embedded default: one file beside the daemon).

mod adopt;
mod page;
mod read;
mod tombstones;
mod users;
mod write;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::sql::{BatchTx, FeedRow, Lift, NewDelivery, NewMembership, NewOrganization, NewUser, Removal};
use super::{apply_all, Change, Kind, Lookup, MembersOf, MembershipCursor, MembershipRow, Outcome, Store, StoreError};
use crate::config::DatabaseSettings;

pub(super) static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// ISO-8601 UTC with milliseconds, the format of every timestamp column in the SQLite schema.
macro_rules! now {
    () => {
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    };
}

/// A timestamp SQLite cannot format (past year 9999) must not leave a deleted record live: it falls back to now.
/// `{table}` is replaced by the kind's table.
const SOFT_DELETE: &str = concat!(
    "UPDATE {table} SET deleted_at = coalesce(strftime('%Y-%m-%dT%H:%M:%fZ', (j.value ->> 1) / 1000.0, 'unixepoch'), ",
    now!(),
    "), updated_via = j.value ->> 2, updated_at = ",
    now!(),
    " FROM json_each(?1) AS j WHERE {table}.clerk_id = j.value ->> 0 AND {table}.deleted_at IS NULL"
);

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Whether committed changes go to the change feed (`changes.enabled`).
    feed: bool,
}

impl SqliteStore {
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(settings.url.expose())
            .map_err(StoreError::Unavailable)?
            .create_if_missing(true)
            // WAL lets readers (readiness, API reads) proceed while the writer commits.
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL, NORMAL syncs at checkpoints rather than at every commit: a power loss may lose the last
            // commits but never corrupts the file, and a process crash loses nothing.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_millis(settings.busy_timeout_ms));
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
            .connect_with(options)
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(SqliteStore { pool, feed: true })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        let first = MIGRATOR.iter().next().map(|m| m.version).unwrap_or_default();
        let preexisting = adopt::existing_tables(&self.pool).await?;
        adopt::adopt_users_table(&self.pool, first).await?;
        adopt::adopt_identity(&self.pool, &preexisting).await?;
        MIGRATOR.run(&self.pool).await?;
        // Again: a table the first migration just created lacks the profile's columns.
        adopt::adopt_identity(&self.pool, &preexisting).await?;
        adopt::order_ids(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Turns the change feed on or off (on by default).
    pub fn set_feed(&mut self, on: bool) {
        self.feed = on;
    }
}

impl SqliteStore {
    /// Applies `batch` inside the open (IMMEDIATE) transaction `tx`.
    pub(super) async fn apply_in(
        &self,
        tx: &mut SqliteConnection,
        batch: &[Change],
    ) -> Result<Vec<Outcome>, sqlx::Error> {
        apply_all(&mut SqliteTx(tx), batch, self.feed).await
    }

    /// Applies a backfill page inside the open (IMMEDIATE) transaction `tx`: a plain page of users bound as
    /// parameters (`page.rs`), any other the general way.
    pub(super) async fn backfill_in(
        &self,
        tx: &mut SqliteConnection,
        batch: &[Change],
    ) -> Result<Vec<Outcome>, sqlx::Error> {
        // A backfill's pages touch a random-keyed index (the `id` primary key) all over: a larger page cache on
        // its connections keeps that index in memory instead of reading a page of it from the file per user.
        sqlx::query("PRAGMA cache_size = -65536").execute(&mut *tx).await?;
        match page::apply(tx, batch, self.feed).await? {
            Some(outcomes) => Ok(outcomes),
            None => self.apply_in(tx, batch).await,
        }
    }

    /// Takes back prune run `run` (see `store::sql::lift`): one transaction, on the feed like any write.
    pub(super) async fn undo_prune(&self, run: &str) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let restored = super::sql::undo_run(&mut SqliteTx(&mut tx), run, self.feed).await?;
        tx.commit().await?;
        Ok(restored)
    }
}

impl Store for SqliteStore {
    async fn apply(&self, batch: &[Change]) -> Result<Vec<Outcome>, StoreError> {
        // IMMEDIATE takes the write lock up front: a deferred transaction that reads first and then writes fails
        // with SQLITE_BUSY_SNAPSHOT when another connection committed in between.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let outcomes = self.apply_in(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn lookup(&self, clerk_id: &str) -> Result<Lookup, StoreError> {
        let Some(kind) = Kind::of(clerk_id) else {
            return Ok(Lookup::Missing);
        };
        let mut conn = self.pool.acquire().await?;
        let row = read::row(&mut conn, kind, clerk_id).await?;
        let tomb = match &row {
            Some(row) if row.deleted_at().is_none() => None,
            _ => tombstones::tomb(&mut conn, clerk_id).await?,
        };
        Ok(super::lookup_result(row, tomb))
    }

    async fn memberships(
        &self,
        of: MembersOf<'_>,
        after: Option<&MembershipCursor>,
        limit: i64,
    ) -> Result<Vec<MembershipRow>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(read::memberships(&mut conn, of, after, limit).await?)
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

/// Rows as one JSON array of arrays, the single parameter of the multi-row statements.
fn json_rows<T: serde::Serialize>(rows: impl Iterator<Item = T>) -> String {
    // Serializing plain strings and integers cannot fail.
    serde_json::to_string(&rows.collect::<Vec<T>>()).unwrap_or_else(|_| "[]".into())
}

/// A JSON aggregate this module asked SQLite for.
fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn json_ids<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    json_rows(ids)
}

impl BatchTx for SqliteTx<'_> {
    async fn insert_deliveries(&mut self, rows: &[NewDelivery<'_>]) -> Result<HashSet<String>, sqlx::Error> {
        let json = json_rows(rows.iter().map(|r| {
            let d = r.delivery;
            (&d.svix_id, &d.event_type, &d.clerk_id, r.outcome)
        }));
        // One row back rather than one per delivery: every row crosses a thread boundary in sqlx's SQLite
        // driver, and that, not SQLite, was the cost of a batch. The transaction is IMMEDIATE (this is the only
        // writer), so the ids recorded before the insert are exactly the ones it skips.
        let recorded: String = sqlx::query_scalar(
            "SELECT json_group_array(svix_id) FROM clerk_sync_deliveries \
             WHERE svix_id IN (SELECT j.value ->> 0 FROM json_each(?1) AS j)",
        )
        .bind(&json)
        .fetch_one(&mut *self.0)
        .await?;
        let recorded: HashSet<String> = decode(&recorded)?;
        sqlx::query(
            "INSERT INTO clerk_sync_deliveries (svix_id, event_type, clerk_id, outcome) \
             SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3 FROM json_each(?1) AS j WHERE true \
             ON CONFLICT (svix_id) DO NOTHING",
        )
        .bind(json)
        .execute(&mut *self.0)
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.delivery.svix_id.clone())
            .filter(|id| !recorded.contains(id))
            .collect())
    }

    async fn delivery_outcomes(&mut self, svix_ids: &[&str]) -> Result<HashMap<String, String>, sqlx::Error> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT svix_id, outcome FROM clerk_sync_deliveries WHERE svix_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_ids(svix_ids.iter().copied()))
        .fetch_all(&mut *self.0)
        .await?;
        Ok(rows.into_iter().collect())
    }

    async fn set_delivery_outcomes(&mut self, rows: &[(&str, &str)]) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE clerk_sync_deliveries SET outcome = j.value ->> 1 FROM json_each(?1) AS j \
             WHERE clerk_sync_deliveries.svix_id = j.value ->> 0",
        )
        .bind(json_rows(rows.iter()))
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn upsert_users(&mut self, rows: &[NewUser<'_>]) -> Result<HashMap<String, bool>, sqlx::Error> {
        write::users(self.0, rows).await
    }

    async fn upsert_organizations(
        &mut self,
        rows: &[NewOrganization<'_>],
    ) -> Result<HashMap<String, bool>, sqlx::Error> {
        write::organizations(self.0, rows).await
    }

    async fn upsert_memberships(&mut self, rows: &[NewMembership<'_>]) -> Result<HashMap<String, bool>, sqlx::Error> {
        write::memberships(self.0, rows).await
    }

    async fn tombstoned(&mut self, clerk_ids: &[&str]) -> Result<HashSet<String>, sqlx::Error> {
        tombstones::tombstoned(self.0, clerk_ids).await
    }

    async fn pruned(&mut self, clerk_ids: &[&str]) -> Result<HashMap<String, Option<i64>>, sqlx::Error> {
        tombstones::pruned(self.0, clerk_ids).await
    }

    async fn insert_tombstones(&mut self, rows: &[Removal<'_>]) -> Result<HashSet<String>, sqlx::Error> {
        tombstones::insert(self.0, rows).await
    }

    async fn lift_tombstones(&mut self, which: Lift<'_>) -> Result<Vec<String>, sqlx::Error> {
        tombstones::lift(self.0, which).await
    }

    async fn restore(&mut self, kind: Kind, clerk_ids: &[&str], forget: bool) -> Result<Vec<String>, sqlx::Error> {
        tombstones::restore(self.0, kind, clerk_ids, forget).await
    }

    async fn live_memberships_of(&mut self, parents: &[&str]) -> Result<Vec<(String, String, String)>, sqlx::Error> {
        // One row back, as for the deliveries.
        let found: String = sqlx::query_scalar(
            "SELECT json_group_array(json_array(clerk_id, organization_clerk_id, user_clerk_id)) FROM \
             (SELECT clerk_id, organization_clerk_id, user_clerk_id FROM organization_memberships \
              WHERE deleted_at IS NULL AND (organization_clerk_id IN (SELECT value FROM json_each(?1)) \
                                            OR user_clerk_id IN (SELECT value FROM json_each(?1))) \
              ORDER BY clerk_id)",
        )
        .bind(json_ids(parents.iter().copied()))
        .fetch_one(&mut *self.0)
        .await?;
        decode(&found)
    }

    async fn soft_delete(&mut self, kind: Kind, rows: &[Removal<'_>]) -> Result<(), sqlx::Error> {
        sqlx::query(&SOFT_DELETE.replace("{table}", kind.table()))
            .bind(json_rows(
                rows.iter().map(|r| (r.clerk_id, r.deleted_at_ms, r.via.as_str())),
            ))
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn hard_delete(&mut self, kind: Kind, clerk_ids: &[&str]) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "DELETE FROM {} WHERE clerk_id IN (SELECT value FROM json_each(?1))",
            kind.table()
        ))
        .bind(json_ids(clerk_ids.iter().copied()))
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn exec(&mut self, sql: &'static str) -> Result<(), sqlx::Error> {
        sqlx::query(sql).execute(&mut *self.0).await?;
        Ok(())
    }

    async fn record_changes(&mut self, rows: &[FeedRow<'_>]) -> Result<(), sqlx::Error> {
        // One writer (IMMEDIATE transactions): AUTOINCREMENT order is commit order. Followers poll.
        sqlx::query(
            "INSERT INTO clerk_sync_changes (kind, clerk_id, op, via) \
             SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3 FROM json_each(?1) AS j ORDER BY j.key",
        )
        .bind(json_rows(rows.iter().map(|r| (r.kind, r.clerk_id, r.op, r.via))))
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }
}
