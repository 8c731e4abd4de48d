//! Refusals the daemon counts without a write per request (`clerk_sync_refusals`), for `clerk-sync doctor`.
//!
//! A webhook whose signature does not verify comes from someone without the secret: if each one cost a database
//! write, anyone could load the database by posting garbage. So the handler only bumps an in-memory counter
//! (an atomic add, like the metric it also bumps), and the daemon's upkeep adds what was counted to the table at
//! most once a minute: one upsert per reason and minute whatever the request rate, and the rows are deleted after
//! three days. Counts not yet written when the process dies are lost (a minute's worth at most; a clean shutdown
//! writes them). Rare refusals of the daemon's own (a refused `reconcile.prune`) are added directly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Db, StoreError};

/// The reason a refused webhook signature is recorded under.
pub const BAD_SIGNATURE: &str = "bad_signature";
/// The reason a `reconcile.prune` the brake refused is recorded under.
pub const PRUNE_REFUSED: &str = "reconcile_prune_refused";

/// Least time between two writes of the counts.
pub const WRITE_INTERVAL: Duration = Duration::from_secs(60);

/// How long refusal rows are kept.
const KEEP_SECS: i64 = 3 * 24 * 3600;

/// Refusals counted in memory since they were last written.
#[derive(Debug, Default)]
pub struct Refusals {
    bad_signature: AtomicU64,
    /// When counts were last written (or an attempt failed): `None` before the first.
    last_write: Mutex<Option<Instant>>,
}

impl Refusals {
    pub fn new() -> Self {
        Refusals::default()
    }

    /// Counts one webhook refused for its signature.
    pub fn bad_signature(&self) {
        self.bad_signature.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds the counts to the table unless they were written less than [`WRITE_INTERVAL`] ago (`force`: a clean
    /// shutdown writes them whenever). Nothing counted, nothing written. Counts a failed write could not add are
    /// kept for the next one. Returns how many refusals were written.
    pub async fn write(&self, db: &Db, force: bool) -> Result<u64, StoreError> {
        if self.bad_signature.load(Ordering::Relaxed) == 0 {
            return Ok(0);
        }
        {
            let mut last = self.last_write.lock().unwrap_or_else(|p| p.into_inner());
            if !force && last.is_some_and(|at| at.elapsed() < WRITE_INTERVAL) {
                return Ok(0);
            }
            // Set for a failed attempt too: a database that is down is asked once a minute, not every tick.
            *last = Some(Instant::now());
        }
        let count = self.bad_signature.swap(0, Ordering::Relaxed);
        // Given back unless the write succeeds: when it fails, and when the write is dropped half-way (the upkeep
        // is aborted at shutdown, possibly mid-write, right before the shutdown's own forced write).
        let taken = Taken {
            counter: &self.bad_signature,
            count,
        };
        db.add_refusals(BAD_SIGNATURE, count).await?;
        std::mem::forget(taken);
        Ok(count)
    }
}

/// Counts taken from a counter for a write, added back when dropped.
struct Taken<'a> {
    counter: &'a AtomicU64,
    count: u64,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.counter.fetch_add(self.count, Ordering::Relaxed);
    }
}

const ADD_POSTGRES: &str = "INSERT INTO clerk_sync_refusals (minute, reason, count) \
     VALUES (date_trunc('minute', now()), $1, $2) \
     ON CONFLICT (minute, reason) DO UPDATE SET count = clerk_sync_refusals.count + excluded.count";
const ADD_SQLITE: &str = "INSERT INTO clerk_sync_refusals (minute, reason, count) \
     VALUES (strftime('%Y-%m-%dT%H:%M:00.000Z', 'now'), $1, $2) \
     ON CONFLICT (minute, reason) DO UPDATE SET count = clerk_sync_refusals.count + excluded.count";
const FORGET_POSTGRES: &str = "DELETE FROM clerk_sync_refusals WHERE minute < now() - make_interval(secs => $1)";
const FORGET_SQLITE: &str =
    "DELETE FROM clerk_sync_refusals WHERE minute < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || $1 || ' seconds')";
const SINCE_POSTGRES: &str = "SELECT reason, CAST(sum(count) AS BIGINT) FROM clerk_sync_refusals \
     WHERE minute >= now() - make_interval(secs => $1) GROUP BY reason";
const SINCE_SQLITE: &str = "SELECT reason, sum(count) FROM clerk_sync_refusals \
     WHERE minute >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || $1 || ' seconds') GROUP BY reason";

impl Db {
    /// Adds `count` refusals for `reason` to the current minute's row, and forgets rows past three days.
    pub async fn add_refusals(&self, reason: &str, count: u64) -> Result<(), StoreError> {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        match self {
            Db::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                sqlx::query(ADD_POSTGRES)
                    .bind(reason)
                    .bind(count)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(FORGET_POSTGRES)
                    .bind(KEEP_SECS as f64)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Db::Sqlite(s) => {
                let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query(ADD_SQLITE)
                    .bind(reason)
                    .bind(count)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(FORGET_SQLITE).bind(KEEP_SECS).execute(&mut *tx).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Refusals by reason written within `within` (to the minute).
    pub async fn refusals_within(&self, within: Duration) -> Result<HashMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> = match self {
            Db::Postgres(s) => {
                sqlx::query_as(SINCE_POSTGRES)
                    .bind(within.as_secs_f64())
                    .fetch_all(s.pool())
                    .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_as(SINCE_SQLITE)
                    .bind(within.as_secs() as i64)
                    .fetch_all(s.pool())
                    .await?
            }
        };
        Ok(rows.into_iter().collect())
    }
}
