//! Reading the change feed (`clerk_sync_changes`): pages of changes after a seq, the head, retention, and the
//! forwarding cursor. Writes to the feed happen inside each batch's transaction (`sql.rs`).

use super::{Db, Kind, StoreError};

/// One committed change, as `GET /v1/changes` shows it. `at` is RFC 3339 UTC.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Change)]
pub struct FeedChange {
    #[schema(minimum = 1)]
    pub seq: i64,
    #[schema(schema_with = change_kind)]
    pub kind: String,
    pub clerk_id: String,
    #[schema(schema_with = change_op)]
    pub op: String,
    #[schema(schema_with = super::rows::change_via)]
    pub via: String,
    pub at: String,
}

/// `kind` of a change, for the OpenAPI document (the values the feed's CHECK constraint allows).
fn change_kind() -> utoipa::openapi::Object {
    let kinds = [Kind::User, Kind::Organization, Kind::Membership].map(Kind::as_str);
    super::rows::string_enum(&kinds, false)
}

/// `op` of a change: what the change did to its record.
fn change_op() -> utoipa::openapi::Object {
    super::rows::string_enum(&["created", "updated", "deleted"], false)
}

/// Where the feed stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedHead {
    /// The horizon: every change up to this seq is committed (or will never be), so a reader may read up to it
    /// and never miss one committed later. 0 when none was ever written.
    pub last: i64,
    /// Every change up to this seq has been pruned (retention): a reader after an older seq missed some.
    pub pruned_through: i64,
}

const PAGE_POSTGRES: &str = "SELECT seq, kind, clerk_id, op, via, \
     to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS at \
     FROM clerk_sync_changes WHERE seq > $1 AND seq <= $3 ORDER BY seq LIMIT $2";
const PAGE_SQLITE: &str = "SELECT seq, kind, clerk_id, op, via, at FROM clerk_sync_changes \
     WHERE seq > $1 AND seq <= $3 ORDER BY seq LIMIT $2";

/// After pruning every row the table is empty, but seqs never go back: the pruned-through mark counts too.
const HEAD_POSTGRES: &str = "SELECT greatest(coalesce((SELECT max(seq) FROM clerk_sync_changes), 0), through), \
     through FROM clerk_sync_changes_pruned WHERE id = 1";
const HEAD_SQLITE: &str = "SELECT max(coalesce((SELECT max(seq) FROM clerk_sync_changes), 0), through), \
     through FROM clerk_sync_changes_pruned WHERE id = 1";

/// Pruning finds the first change young enough to keep by walking the primary key from the oldest (the rows it
/// passes are the ones it deletes), so `at` needs no index of its own for every write to maintain. `at` follows
/// seq closely but not exactly (it is each transaction's start), so a row a few milliseconds past the
/// retention may stay until the next run.
const PRUNE_POSTGRES: &str = "WITH keep AS (SELECT seq FROM clerk_sync_changes \
                   WHERE at >= now() - make_interval(secs => $1) ORDER BY seq LIMIT 1), \
          gone AS (DELETE FROM clerk_sync_changes WHERE seq < coalesce((SELECT seq FROM keep), \
                   (SELECT max(seq) + 1 FROM clerk_sync_changes)) RETURNING seq) \
     SELECT count(*), max(seq) FROM gone";
const PRUNE_SQLITE: &str = "DELETE FROM clerk_sync_changes WHERE seq < coalesce( \
         (SELECT seq FROM clerk_sync_changes \
          WHERE at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || $1 || ' seconds') ORDER BY seq LIMIT 1), \
         (SELECT max(seq) + 1 FROM clerk_sync_changes)) RETURNING seq";

/// The rows of a page of the feed, `(after, upto]` in seq order, at most `limit`: `$postgres` or `$sqlite` (the same
/// parameters, `$1` after, `$2` limit, `$3` upto).
macro_rules! page {
    ($db:expr, $postgres:expr, $sqlite:expr, $after:expr, $limit:expr, $upto:expr) => {
        match $db {
            Db::Postgres(s) => {
                sqlx::query_as($postgres)
                    .bind($after)
                    .bind($limit)
                    .bind($upto)
                    .fetch_all(s.pool())
                    .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_as($sqlite)
                    .bind($after)
                    .bind($limit)
                    .bind($upto)
                    .fetch_all(s.pool())
                    .await?
            }
        }
    };
}

impl Db {
    /// Up to `limit` changes after `after` and at most `upto` (a horizon from [`Db::feed_head`]), in seq order.
    pub async fn changes_after(&self, after: i64, limit: i64, upto: i64) -> Result<Vec<FeedChange>, StoreError> {
        Ok(page!(self, PAGE_POSTGRES, PAGE_SQLITE, after, limit, upto))
    }

    /// The ids of up to `limit` changes after `after` and at most `upto`, and the seq read to: the last one's
    /// when the page is full, else `upto`. What the follower reads when no stream needs the changes themselves.
    pub async fn changed_ids_after(&self, after: i64, limit: i64, upto: i64) -> Result<(Vec<String>, i64), StoreError> {
        const IDS: &str =
            "SELECT seq, clerk_id FROM clerk_sync_changes WHERE seq > $1 AND seq <= $3 ORDER BY seq LIMIT $2";
        let rows: Vec<(i64, String)> = page!(self, IDS, IDS, after, limit, upto);
        let end = match rows.last() {
            Some((seq, _)) if rows.len() as i64 == limit => *seq,
            _ => upto,
        };
        Ok((rows.into_iter().map(|(_, id)| id).collect(), end))
    }

    /// The horizon and the pruned-through mark. On Postgres this takes the feed lock exclusively for an
    /// instant: it waits for the batches that hold a seq to commit, and batches starting meanwhile wait for it.
    /// SQLite has one writer, whose uncommitted rows no reader sees and whose seqs come after every committed
    /// one.
    pub async fn feed_head(&self) -> Result<FeedHead, StoreError> {
        match self {
            Db::Postgres(s) => {
                // One statement (migration `20261209000001_feed_head.sql`): the lock is held for the read alone.
                let (a, b) = super::postgres::FEED_LOCK;
                let (last, pruned_through) =
                    sqlx::query_as("SELECT last, pruned_through FROM clerk_sync_feed_head($1, $2)")
                        .bind(a)
                        .bind(b)
                        .fetch_one(s.pool())
                        .await?;
                Ok(FeedHead { last, pruned_through })
            }
            Db::Sqlite(_) => self.feed_latest().await,
        }
    }

    /// Like [`Db::feed_head`] without the lock: `last` is the highest committed seq, so every change committed
    /// before the call is at or below it. On Postgres a lower seq may still be in flight, so it is no horizon:
    /// only how far a reader has to wait for the horizon to reach. (On SQLite it is the horizon.)
    pub async fn feed_latest(&self) -> Result<FeedHead, StoreError> {
        let (last, pruned_through): (i64, i64) = match self {
            Db::Postgres(s) => sqlx::query_as(HEAD_POSTGRES).fetch_one(s.pool()).await?,
            Db::Sqlite(s) => sqlx::query_as(HEAD_SQLITE).fetch_one(s.pool()).await?,
        };
        Ok(FeedHead { last, pruned_through })
    }

    /// Only the pruned-through mark (no lock).
    pub async fn feed_pruned_through(&self) -> Result<i64, StoreError> {
        let sql = "SELECT through FROM clerk_sync_changes_pruned WHERE id = 1";
        Ok(match self {
            Db::Postgres(s) => sqlx::query_scalar(sql).fetch_one(s.pool()).await?,
            Db::Sqlite(s) => sqlx::query_scalar(sql).fetch_one(s.pool()).await?,
        })
    }

    /// Deletes changes older than `age` and moves the pruned-through mark; returns how many were deleted.
    pub async fn prune_changes(&self, age: std::time::Duration) -> Result<u64, StoreError> {
        // One transaction: a reader never sees rows gone without the mark that says so.
        let secs = age.as_secs() as i64;
        let (count, through) = match self {
            Db::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                let (count, through): (i64, Option<i64>) = sqlx::query_as(PRUNE_POSTGRES)
                    .bind(secs as f64)
                    .fetch_one(&mut *tx)
                    .await?;
                if let Some(through) = through {
                    sqlx::query("UPDATE clerk_sync_changes_pruned SET through = greatest(through, $1) WHERE id = 1")
                        .bind(through)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                (count, through)
            }
            Db::Sqlite(s) => {
                let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
                let gone: Vec<i64> = sqlx::query_scalar(PRUNE_SQLITE).bind(secs).fetch_all(&mut *tx).await?;
                let through = gone.iter().copied().max();
                if let Some(through) = through {
                    sqlx::query("UPDATE clerk_sync_changes_pruned SET through = max(through, $1) WHERE id = 1")
                        .bind(through)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                (gone.len() as i64, through)
            }
        };
        if let Some(through) = through {
            tracing::debug!(count, through, "pruned the change feed");
        }
        Ok(count as u64)
    }

    /// The last seq forwarding acknowledged under `name` (0 before the first).
    pub async fn forward_cursor(&self, name: &str) -> Result<i64, StoreError> {
        let sql = "SELECT seq FROM clerk_sync_forward WHERE name = $1";
        let seq: Option<i64> = match self {
            Db::Postgres(s) => sqlx::query_scalar(sql).bind(name).fetch_optional(s.pool()).await?,
            Db::Sqlite(s) => sqlx::query_scalar(sql).bind(name).fetch_optional(s.pool()).await?,
        };
        Ok(seq.unwrap_or(0))
    }

    /// Moves the cursor of `name` forward to `seq`; never back. `false` when it already stood past `seq`: another
    /// forwarder (one that took over while this one did not yet know it lost its lock) has gone further.
    pub async fn save_forward_cursor(&self, name: &str, seq: i64) -> Result<bool, StoreError> {
        // `<=`, not `<`: saving the seq it stands at is no sign of another forwarder being ahead.
        let sql = "INSERT INTO clerk_sync_forward (name, seq) VALUES ($1, $2) \
                   ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated_at = CURRENT_TIMESTAMP \
                   WHERE clerk_sync_forward.seq <= excluded.seq";
        let saved = match self {
            Db::Postgres(s) => sqlx::query(sql)
                .bind(name)
                .bind(seq)
                .execute(s.pool())
                .await?
                .rows_affected(),
            Db::Sqlite(s) => sqlx::query(sql)
                .bind(name)
                .bind(seq)
                .execute(s.pool())
                .await?
                .rows_affected(),
        };
        Ok(saved > 0)
    }
}
