//! What a backfill keeps in the database: its cursor (so an interrupted run resumes), the ids it has seen (so
//! `--prune` knows who is absent from Clerk without holding the list in memory), and reads for `--dry-run`.

use std::collections::HashMap;

use super::{Db, Kind, StoreError};

/// `clerk_id`, `clerk_updated_at`, deleted.
type KnownRow = (String, Option<i64>, bool);

/// A backfill's checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last Clerk id written; `None` before the first page.
    pub cursor: Option<String>,
    /// Records read from Clerk so far (for an offset walk, also where it continues).
    pub scanned: i64,
    /// Whether the walk records the ids it has seen: only one that may prune needs them (see
    /// [`Db::backfill_start`]).
    pub keeps_seen: bool,
}

/// What the database holds for one id, as far as a backfill's dry run needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    Live { clerk_updated_at: Option<i64> },
    Deleted,
}

/// Moves the cursor of backfill `$name`, inside the open transaction `$tx`.
macro_rules! save_cursor {
    ($tx:expr, $name:expr, $cursor:expr, $scanned:expr) => {
        sqlx::query(
            "UPDATE clerk_sync_backfill SET cursor = $2, scanned = $3, updated_at = CURRENT_TIMESTAMP WHERE name = $1",
        )
        .bind($name)
        .bind($cursor)
        .bind($scanned)
        .execute(&mut *$tx)
        .await?
    };
}

/// Records the ids of one page (a JSON array) as seen by a backfill: one statement per backend.
const SEEN_POSTGRES: &str = "INSERT INTO clerk_sync_backfill_seen (name, clerk_id) \
     SELECT $1, value FROM json_array_elements_text($2::json) ON CONFLICT DO NOTHING";
const SEEN_SQLITE: &str = "INSERT INTO clerk_sync_backfill_seen (name, clerk_id) \
     SELECT $1, value FROM json_each($2) WHERE true ON CONFLICT DO NOTHING";

/// Runs `$sql` (one of the `SEEN_*` statements) inside the open transaction `$tx`.
macro_rules! insert_seen {
    ($tx:expr, $sql:expr, $name:expr, $ids:expr) => {
        sqlx::query($sql).bind($name).bind($ids).execute(&mut *$tx).await?
    };
}

impl Db {
    /// The checkpoint of backfill `name`, if a run of it has not finished.
    pub async fn backfill_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>, StoreError> {
        let row: Option<(Option<String>, i64, bool)> = on_pool!(self, |pool| {
            sqlx::query_as("SELECT cursor, scanned, keeps_seen FROM clerk_sync_backfill WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(cursor, scanned, keeps_seen)| Checkpoint {
            cursor,
            scanned,
            keeps_seen,
        }))
    }

    /// Starts backfill `name` afresh: no cursor, nothing seen, started now (the database's clock, in the format of
    /// the rows' `created_at`: `--prune` compares the two). With `keeps_seen` its pages record the ids they hold,
    /// which `--prune` needs; without, they skip that write (one index entry per record).
    pub async fn backfill_start(&self, name: &str, keeps_seen: bool) -> Result<(), StoreError> {
        let now = match self {
            Db::Postgres(_) => "now()",
            Db::Sqlite(_) => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        };
        let start = format!(
            "INSERT INTO clerk_sync_backfill (name, cursor, scanned, started_at, keeps_seen) \
             VALUES ($1, NULL, 0, {now}, $2) \
             ON CONFLICT (name) DO UPDATE SET cursor = NULL, scanned = 0, started_at = {now}, keeps_seen = $2"
        );
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM clerk_sync_backfill_seen WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&start)
                .bind(name)
                .bind(keeps_seen)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Applies one page of backfill `name` in one transaction, with the ids it holds when `keeps_seen`, and with
    /// `cursor` the checkpoint after it (a walk writing one page at a time). A walk writing several at once moves
    /// its cursor separately ([`Db::backfill_save_cursor`]), in page order, once every earlier page committed.
    pub async fn backfill_apply_page(
        &self,
        name: &str,
        keeps_seen: bool,
        batch: &[super::Change],
        cursor: Option<&Checkpoint>,
    ) -> Result<Vec<super::Outcome>, StoreError> {
        let ids = keeps_seen.then(|| {
            let seen: Vec<&str> = batch.iter().filter_map(super::Change::clerk_id).collect();
            serde_json::to_string(&seen).unwrap_or_else(|_| "[]".into())
        });
        let outcomes = match self {
            Db::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                let (outcomes, seq) = s.apply_in(&mut tx, batch).await?;
                if let Some(ids) = &ids {
                    insert_seen!(tx, SEEN_POSTGRES, name, ids);
                }
                if let Some(c) = cursor {
                    save_cursor!(tx, name, c.cursor.as_deref(), c.scanned);
                }
                tx.commit().await?;
                s.notify(seq);
                outcomes
            }
            Db::Sqlite(s) => {
                let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
                let outcomes = s.backfill_in(&mut tx, batch).await?;
                if let Some(ids) = &ids {
                    insert_seen!(tx, SEEN_SQLITE, name, ids);
                }
                if let Some(c) = cursor {
                    save_cursor!(tx, name, c.cursor.as_deref(), c.scanned);
                }
                tx.commit().await?;
                outcomes
            }
        };
        Ok(outcomes)
    }

    /// Moves the cursor of backfill `name`.
    ///
    /// On Postgres without waiting for the commit to reach the disk: the pages the cursor moves past committed
    /// (and were flushed) before this transaction began, and the log replays in order, so a crash can only lose
    /// the move, never keep it without its pages; a resumed run then rewrites a page or two, which is harmless.
    pub async fn backfill_save_cursor(&self, name: &str, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let (cursor, scanned) = (checkpoint.cursor.as_deref(), checkpoint.scanned);
        match self {
            Db::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                sqlx::query("SET LOCAL synchronous_commit = off")
                    .execute(&mut *tx)
                    .await?;
                save_cursor!(tx, name, cursor, scanned);
                tx.commit().await?;
            }
            Db::Sqlite(s) => {
                let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
                save_cursor!(tx, name, cursor, scanned);
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Records ids as seen by backfill `name`, and with `checkpoint` the cursor after them, in one transaction.
    pub async fn backfill_page(
        &self,
        name: &str,
        seen: &[&str],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), StoreError> {
        let ids = serde_json::to_string(seen).unwrap_or_else(|_| "[]".into());
        match self {
            Db::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                insert_seen!(tx, SEEN_POSTGRES, name, &ids);
                if let Some(c) = checkpoint {
                    save_cursor!(tx, name, c.cursor.as_deref(), c.scanned);
                }
                tx.commit().await?;
            }
            Db::Sqlite(s) => {
                let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
                insert_seen!(tx, SEEN_SQLITE, name, &ids);
                if let Some(c) = checkpoint {
                    save_cursor!(tx, name, c.cursor.as_deref(), c.scanned);
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// The organizations whose memberships a backfill walks, after `after` in id order, at most `limit`: those
    /// the database holds live, and those backfill `also_seen_by` has seen (a dry run writes no organization, yet
    /// must walk the memberships of the ones it would create). Tombstoned ones never: Clerk deleted their
    /// memberships with them.
    pub async fn backfill_organizations(
        &self,
        after: &str,
        also_seen_by: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT clerk_id FROM (\
                     SELECT clerk_id FROM organizations WHERE deleted_at IS NULL AND clerk_id > $1 \
                     UNION SELECT clerk_id FROM clerk_sync_backfill_seen WHERE name = $2 AND clerk_id > $1\
                 ) o WHERE NOT EXISTS (SELECT 1 FROM clerk_sync_tombstones t WHERE t.clerk_id = o.clerk_id) \
                 ORDER BY clerk_id LIMIT $3",
            )
            .bind(after)
            .bind(also_seen_by)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The members the live organizations hold by their stored `members_count`: a memberships walk's estimate.
    pub async fn backfill_members_estimate(&self) -> Result<i64, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(members_count), 0) AS BIGINT) FROM organizations WHERE deleted_at IS NULL",
            )
            .fetch_one(pool)
            .await?
        }))
    }

    /// Forgets backfill `name`: the run is complete.
    pub async fn backfill_finish(&self, name: &str) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for table in ["clerk_sync_backfill_seen", "clerk_sync_backfill"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE name = $1"))
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// What the database holds for each of `ids`, records of `kind` (absent: neither a row nor a tombstone).
    pub async fn known(&self, kind: Kind, ids: &[&str]) -> Result<HashMap<String, Known>, StoreError> {
        let json = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        let input = match self {
            Db::Postgres(_) => "SELECT value FROM json_array_elements_text($1::json)",
            Db::Sqlite(_) => "SELECT value FROM json_each($1)",
        };
        let rows = format!(
            "SELECT clerk_id, clerk_updated_at, deleted_at IS NOT NULL FROM {} WHERE clerk_id IN ({input})",
            kind.table()
        );
        let tombstones = format!("SELECT clerk_id FROM clerk_sync_tombstones WHERE clerk_id IN ({input})");
        let (rows, dead): (Vec<KnownRow>, Vec<String>) = on_pool!(self, |pool| {
            let rows = sqlx::query_as(&rows).bind(&json).fetch_all(pool).await?;
            let dead = sqlx::query_scalar(&tombstones).bind(&json).fetch_all(pool).await?;
            (rows, dead)
        });
        let mut known: HashMap<String, Known> = rows
            .into_iter()
            .map(|(id, clerk_updated_at, deleted)| {
                let k = if deleted {
                    Known::Deleted
                } else {
                    Known::Live { clerk_updated_at }
                };
                (id, k)
            })
            .collect();
        for id in dead {
            known.insert(id, Known::Deleted);
        }
        Ok(known)
    }
}

/// One runner at a time across replicas: a Postgres session advisory lock held on its own connection until
/// [`Exclusive::release`]. SQLite serves one process, so it is always granted there.
pub struct Exclusive {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    key: &'static str,
}

impl Db {
    /// Takes the lock named `key` if no one holds it.
    pub async fn try_exclusive(&self, key: &'static str) -> Result<Option<Exclusive>, StoreError> {
        let Db::Postgres(s) = self else {
            return Ok(Some(Exclusive { conn: None, key }));
        };
        let mut conn = s.pool().acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 1))")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then_some(Exclusive { conn: Some(conn), key }))
    }
}

impl Exclusive {
    /// Whether the lock is still held: a session lock lives as long as its connection, which a database
    /// restart or a network failure ends without telling anyone.
    pub async fn is_held(&mut self) -> bool {
        match self.conn.as_mut() {
            Some(conn) => sqlx::query("SELECT 1").execute(&mut **conn).await.is_ok(),
            None => true,
        }
    }

    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 1))")
                .bind(self.key)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                // The lock lives as long as the session: never hand this connection back to the pool.
                conn.close_on_drop();
            }
        }
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        // Not released (the task was cancelled): closing the session releases the lock.
        if let Some(conn) = self.conn.as_mut() {
            conn.close_on_drop();
        }
    }
}
