//! The Postgres backend (production; usually Supabase).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::sql::{BatchTx, FeedRow, Lift, NewDelivery, NewMembership, NewOrganization, NewUser, Removal};
use super::{apply_all, Change, Kind, Lookup, MembersOf, MembershipCursor, MembershipRow, Outcome, Store, StoreError};
use crate::config::DatabaseSettings;

mod adopt_check;
mod fast;
mod notify;
mod read;
pub(super) mod rls;
mod tombstones;
mod write;

pub(super) static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// Whether committed changes go to the change feed (`changes.enabled`).
    feed: bool,
    /// The highest seq committed, for the notifier task (see [`PgStore::notify`]).
    committed: std::sync::Arc<tokio::sync::watch::Sender<i64>>,
}

/// A connection idle this long is pinged before use (see `PgStore::connect`).
const PING_IF_IDLE: Duration = Duration::from_secs(1);

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
            // sqlx pings every connection it hands out: a round trip per batch under load. Only a connection
            // that sat idle may have been cut (a restarted server, a pooler's idle timeout); a busy one is
            // known to work, and if it breaks anyway the batch fails, its webhooks are answered 503 and retried.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(StoreError::Unavailable)?;
        let (committed, seqs) = tokio::sync::watch::channel(0);
        tokio::spawn(notify::notifier(pool.clone(), seqs));
        Ok(PgStore {
            pool,
            feed: true,
            committed: std::sync::Arc::new(committed),
        })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        let first = MIGRATOR.iter().map(|m| m.version).min().unwrap_or_default();
        adopt_check::users_in_current_schema(&self.pool, first).await?;
        let mut conn = self.pool.acquire().await?;
        // On a fresh database the first migration's `ADD COLUMN IF NOT EXISTS` meets the table it has just made,
        // and Postgres answers with notices ("column ... already exists, skipping") that read like an adoption.
        // Warnings, which say what adopting an application's table changed, still come through.
        sqlx::query("SET client_min_messages = warning")
            .execute(&mut *conn)
            .await?;
        let applied = MIGRATOR.run(&mut *conn).await;
        // A connection that cannot reset only keeps quiet about notices; the migration's outcome matters more.
        let _ = sqlx::query("RESET client_min_messages").execute(&mut *conn).await;
        applied.map_err(|e| {
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

    /// Turns the change feed on or off (on by default).
    pub fn set_feed(&mut self, on: bool) {
        self.feed = on;
    }
}

impl PgStore {
    /// Applies `batch` inside the open transaction `tx` (taking the per-user advisory locks first).
    /// Returns the outcomes and the highest feed seq the batch wrote, which [`PgStore::notify`] announces once
    /// the caller has committed.
    pub(super) async fn apply_in(
        &self,
        tx: &mut PgConnection,
        batch: &[Change],
    ) -> Result<(Vec<Outcome>, Option<i64>), sqlx::Error> {
        // Replicas sharing this database serialize per user too: without the lock a create on one replica and
        // a delete on another could each miss the other's uncommitted row (READ COMMITTED) and leave a live row
        // beside a tombstone; a membership locks its organization and user too, whose deletes delete it.
        // Locks are taken in sorted order, so two batches never deadlock on each other.
        let mut users: Vec<&str> = batch.iter().flat_map(Change::lock_ids).collect();
        users.sort_unstable();
        users.dedup();
        if !users.is_empty() {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended(u, 0)) FROM unnest($1::text[]) AS u")
                .bind(&users)
                .execute(&mut *tx)
                .await?;
        }
        let mut tx = PgTx {
            conn: tx,
            last_seq: None,
            feed: self.feed,
        };
        let outcomes = apply_all(&mut tx, batch, self.feed).await?;
        Ok((outcomes, tx.last_seq))
    }

    /// Takes back prune run `run` (see `store::sql::lift`): one transaction, on the feed like any write.
    pub(super) async fn undo_prune(&self, run: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.pool.begin().await?;
        let mut tx = PgTx {
            conn: &mut conn,
            last_seq: None,
            feed: self.feed,
        };
        let restored = super::sql::undo_run(&mut tx, run, self.feed).await?;
        let seq = tx.last_seq;
        conn.commit().await?;
        self.notify(seq);
        Ok(restored)
    }
}

impl Store for PgStore {
    async fn apply(&self, batch: &[Change]) -> Result<Vec<Outcome>, StoreError> {
        if let Some(users) = fast::users(batch) {
            if let Some((outcomes, seq)) = fast::apply(&self.pool, &users, self.feed).await? {
                self.notify(seq);
                return Ok(outcomes);
            }
        }
        let mut tx = self.pool.begin().await?;
        let (outcomes, seq) = self.apply_in(&mut tx, batch).await?;
        tx.commit().await?;
        self.notify(seq);
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
        let done =
            sqlx::query("DELETE FROM clerk_sync_deliveries WHERE received_at < now() - make_interval(secs => $1)")
                .bind(age.as_secs_f64())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }
}

/// A transaction's connection, the highest feed seq it wrote, and whether it writes the feed.
struct PgTx<'a> {
    conn: &'a mut PgConnection,
    last_seq: Option<i64>,
    feed: bool,
}

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
            .fetch_all(&mut *self.conn)
            .await?;
        Ok(inserted.into_iter().collect())
    }

    async fn delivery_outcomes(&mut self, svix_ids: &[&str]) -> Result<HashMap<String, String>, sqlx::Error> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT svix_id, outcome FROM clerk_sync_deliveries WHERE svix_id = ANY($1)")
                .bind(svix_ids)
                .fetch_all(&mut *self.conn)
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
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    async fn upsert_users(&mut self, rows: &[NewUser<'_>]) -> Result<HashMap<String, bool>, sqlx::Error> {
        let (written, seq) = write::users(self.conn, rows, self.feed).await?;
        self.last_seq = self.last_seq.max(seq);
        Ok(written)
    }

    async fn upsert_organizations(
        &mut self,
        rows: &[NewOrganization<'_>],
    ) -> Result<HashMap<String, bool>, sqlx::Error> {
        let (written, seq) = write::organizations(self.conn, rows, self.feed).await?;
        self.last_seq = self.last_seq.max(seq);
        Ok(written)
    }

    async fn upsert_memberships(&mut self, rows: &[NewMembership<'_>]) -> Result<HashMap<String, bool>, sqlx::Error> {
        let (written, seq) = write::memberships(self.conn, rows, self.feed).await?;
        self.last_seq = self.last_seq.max(seq);
        Ok(written)
    }

    fn records_upserts(&self) -> bool {
        true
    }

    async fn tombstoned(&mut self, clerk_ids: &[&str]) -> Result<HashSet<String>, sqlx::Error> {
        tombstones::tombstoned(self.conn, clerk_ids).await
    }

    async fn pruned(&mut self, clerk_ids: &[&str]) -> Result<HashMap<String, Option<i64>>, sqlx::Error> {
        tombstones::pruned(self.conn, clerk_ids).await
    }

    async fn insert_tombstones(&mut self, rows: &[Removal<'_>]) -> Result<HashSet<String>, sqlx::Error> {
        tombstones::insert(self.conn, rows).await
    }

    async fn lift_tombstones(&mut self, which: Lift<'_>) -> Result<Vec<String>, sqlx::Error> {
        tombstones::lift(self.conn, which).await
    }

    async fn restore(&mut self, kind: Kind, clerk_ids: &[&str], forget: bool) -> Result<Vec<String>, sqlx::Error> {
        tombstones::restore(self.conn, kind, clerk_ids, forget).await
    }

    async fn live_memberships_of(&mut self, parents: &[&str]) -> Result<Vec<(String, String, String)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT clerk_id, organization_clerk_id, user_clerk_id FROM organization_memberships \
             WHERE deleted_at IS NULL AND (organization_clerk_id = ANY($1) OR user_clerk_id = ANY($1)) \
             ORDER BY clerk_id",
        )
        .bind(parents)
        .fetch_all(&mut *self.conn)
        .await
    }

    async fn soft_delete(&mut self, kind: Kind, rows: &[Removal<'_>]) -> Result<(), sqlx::Error> {
        let ids: Vec<&str> = rows.iter().map(|r| r.clerk_id).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.deleted_at_ms).collect();
        let via: Vec<&str> = rows.iter().map(|r| r.via.as_str()).collect();
        // The table name comes from `Kind`, never from input.
        sqlx::query(&format!(
            "UPDATE {} r SET deleted_at = to_timestamp(i.at::double precision / 1000), updated_via = i.via, \
             updated_at = now() FROM unnest($1::text[], $2::int8[], $3::text[]) AS i(clerk_id, at, via) \
             WHERE r.clerk_id = i.clerk_id AND r.deleted_at IS NULL",
            kind.table()
        ))
        .bind(ids)
        .bind(at)
        .bind(via)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    async fn hard_delete(&mut self, kind: Kind, clerk_ids: &[&str]) -> Result<(), sqlx::Error> {
        sqlx::query(&format!("DELETE FROM {} WHERE clerk_id = ANY($1)", kind.table()))
            .bind(clerk_ids)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }

    async fn exec(&mut self, sql: &'static str) -> Result<(), sqlx::Error> {
        sqlx::query(sql).execute(&mut *self.conn).await?;
        Ok(())
    }

    async fn record_changes(&mut self, rows: &[FeedRow<'_>]) -> Result<(), sqlx::Error> {
        // seq comes from a sequence, whose values are handed out at insert time, not at commit: a batch could
        // commit after a later one, and a reader that already read past the later seq would miss it. So every
        // writer holds this lock, shared (writers do not wait for each other), from before its seq is handed
        // out to its commit; a reader takes it exclusively for an instant to learn up to which seq everything
        // is final (`Db::feed_horizon`) and reads no further. Taken last, after every row lock, it cannot
        // take part in a deadlock.
        // One statement: every row to insert joins the lock's one row, so the lock is taken before the first
        // seq is handed out.
        let last: Option<i64> = sqlx::query_scalar(
            "WITH lock AS (SELECT pg_advisory_xact_lock_shared($5, $6)), \
                  ins AS (INSERT INTO clerk_sync_changes (kind, clerk_id, op, via) \
                          SELECT i.kind, i.clerk_id, i.op, i.via \
                          FROM lock, unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY \
                               AS i(kind, clerk_id, op, via, n) ORDER BY i.n RETURNING seq) \
             SELECT max(seq) FROM ins",
        )
        .bind(rows.iter().map(|r| r.kind).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.clerk_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.op).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.via).collect::<Vec<_>>())
        .bind(FEED_LOCK.0)
        .bind(FEED_LOCK.1)
        .fetch_one(&mut *self.conn)
        .await?;
        self.last_seq = self.last_seq.max(last);
        Ok(())
    }
}

/// The advisory lock (two-key form: a lock space apart from the per-record `bigint` keys) between feed writers
/// (shared) and readers learning the horizon (exclusive).
pub(super) const FEED_LOCK: (i32, i32) = (0x636c_6b73, 1);
