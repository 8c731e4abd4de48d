//! What `--prune` reads and writes beyond a batch: its candidates (live rows a complete walk did not see and that
//! existed when it started), the live rows its brake weighs them against, the runs it made, and taking one back.

use super::{Db, Kind, StoreError};

/// One prune run, as `clerk-sync undo-prune` lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneRun {
    pub run: String,
    /// Tombstones it made that stand (lifted ones and those Clerk's own deletion made final are gone).
    pub tombstones: i64,
    /// When its first tombstone was recorded (the database's clock, as text).
    pub at: String,
}

/// The candidates' filter: live, not seen by walk `$1`, and created before that walk started — a row created
/// since (a user signing up during the walk, by webhook) may be missing from pages read before it existed.
fn unseen(kind: Kind) -> String {
    // The table name comes from `Kind`, never from input.
    format!(
        "FROM {table} r WHERE r.deleted_at IS NULL \
         AND r.created_at < (SELECT b.started_at FROM clerk_sync_backfill b WHERE b.name = $1) \
         AND NOT EXISTS (SELECT 1 FROM clerk_sync_backfill_seen s WHERE s.name = $1 AND s.clerk_id = r.clerk_id)",
        table = kind.table()
    )
}

impl Db {
    /// Prune candidates of walk `name` after `after` in id order, at most `limit`; each with its organization's id
    /// when `kind` is [`Kind::Membership`] (so `--prune` can ask Clerk about it).
    pub async fn prune_candidates(
        &self,
        kind: Kind,
        name: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let parent = match kind {
            Kind::Membership => "r.organization_clerk_id",
            Kind::User | Kind::Organization => "CAST(NULL AS TEXT)",
        };
        let sql = format!(
            "SELECT r.clerk_id, {parent} {} AND r.clerk_id > $2 ORDER BY r.clerk_id LIMIT $3",
            unseen(kind)
        );
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(name)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?
        }))
    }

    /// How many prune candidates walk `name` left.
    pub async fn prune_candidates_count(&self, kind: Kind, name: &str) -> Result<u64, StoreError> {
        let sql = format!("SELECT count(*) {}", unseen(kind));
        let n: i64 = on_pool!(self, |pool| sqlx::query_scalar(&sql).bind(name).fetch_one(pool).await?);
        Ok(n.max(0) as u64)
    }

    /// Live rows of `kind`: what the prune brake weighs a run against.
    pub async fn live_count(&self, kind: Kind) -> Result<u64, StoreError> {
        let sql = format!("SELECT count(*) FROM {} WHERE deleted_at IS NULL", kind.table());
        let n: i64 = on_pool!(self, |pool| sqlx::query_scalar(&sql).fetch_one(pool).await?);
        Ok(n.max(0) as u64)
    }

    /// The prune runs whose tombstones stand, oldest first.
    pub async fn prune_runs(&self) -> Result<Vec<PruneRun>, StoreError> {
        let rows: Vec<(String, i64, String)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT prune_run, count(*), CAST(min(recorded_at) AS TEXT) FROM clerk_sync_tombstones \
                 WHERE prune_run IS NOT NULL GROUP BY prune_run ORDER BY min(recorded_at), prune_run",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(run, tombstones, at)| PruneRun { run, tombstones, at })
            .collect())
    }

    /// Takes back prune run `run`: lifts exactly the tombstones it made and undeletes their rows, except those a
    /// deletion Clerk announced since made final (and memberships whose organization or user that covers).
    /// Returns the clerk ids undeleted.
    pub async fn undo_prune(&self, run: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Db::Postgres(s) => s.undo_prune(run).await,
            Db::Sqlite(s) => s.undo_prune(run).await,
        }
    }
}
