//! What `clerk-sync doctor` reads: read-only questions about the daemon's own bookkeeping. Nothing here writes.
//! Ages are computed by the database against its own clock, the one that stamped the rows.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::{Db, StoreError};
use crate::config::DatabaseSettings;

/// How far the embedded migrations are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migrations {
    pub applied: i64,
    pub expected: usize,
}

/// The most recent recorded webhook delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct LastDelivery {
    pub event_type: String,
    pub outcome: String,
    pub age_secs: f64,
}

/// Where the change feed stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeedState {
    /// The highest committed seq (0: none yet).
    pub head: i64,
    /// Every change up to this seq was pruned (retention).
    pub pruned_through: i64,
    /// How long ago the newest change still kept was written.
    pub last_age_secs: Option<f64>,
}

/// How far forwarding has come.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForwardState {
    /// The last seq the application acknowledged (0 before the first).
    pub cursor: i64,
    /// Changes kept in the feed after the cursor.
    pub behind: i64,
    /// How long the oldest of them has waited.
    pub oldest_age_secs: Option<f64>,
}

/// The file a `sqlite://` URL names, when it names one (not an in-memory database). Connecting creates a missing
/// file, so the doctor asks first.
pub fn sqlite_file(settings: &DatabaseSettings) -> Option<PathBuf> {
    if settings.is_postgres() || settings.url.expose().contains("mode=memory") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(settings.url.expose()).ok()?;
    let file = options.get_filename();
    (!file.as_os_str().is_empty() && file.as_os_str() != ":memory:").then(|| file.to_path_buf())
}

/// `$since`: the start of a window of `$1` seconds ending now; `$age(col)`: seconds since `col`.
const SINCE_POSTGRES: &str = "now() - make_interval(secs => $1)";
const SINCE_SQLITE: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || $1 || ' seconds')";

fn age_postgres(column: &str) -> String {
    format!("CAST(extract(epoch FROM now() - {column}) AS DOUBLE PRECISION)")
}

fn age_sqlite(column: &str) -> String {
    format!("((julianday('now') - julianday({column})) * 86400.0)")
}

impl Db {
    /// Migrations applied (0 when none ever was) against those this binary embeds.
    pub async fn migrations(&self) -> Result<Migrations, StoreError> {
        let count = "SELECT count(*) FROM _sqlx_migrations WHERE success";
        let (applied, expected) = match self {
            Db::Postgres(s) => {
                let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                    .fetch_one(s.pool())
                    .await?;
                let applied = match exists {
                    true => sqlx::query_scalar(count).fetch_one(s.pool()).await?,
                    false => 0,
                };
                (applied, super::postgres::MIGRATOR.iter().count())
            }
            Db::Sqlite(s) => {
                let exists: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
                )
                .fetch_one(s.pool())
                .await?;
                let applied = match exists {
                    true => sqlx::query_scalar(count).fetch_one(s.pool()).await?,
                    false => 0,
                };
                (applied, super::sqlite::MIGRATOR.iter().count())
            }
        };
        Ok(Migrations { applied, expected })
    }

    /// The columns of `table` (on Postgres: in the current schema, where the daemon reads it); empty when there
    /// is no such table.
    pub async fn table_columns(&self, table: &str) -> Result<Vec<String>, StoreError> {
        Ok(match self {
            Db::Postgres(s) => {
                sqlx::query_scalar(
                    "SELECT CAST(column_name AS TEXT) FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1",
                )
                .bind(table)
                .fetch_all(s.pool())
                .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
                    .bind(table)
                    .fetch_all(s.pool())
                    .await?
            }
        })
    }

    /// The most recent delivery recorded (deliveries are kept `webhooks.delivery_retention_hours`).
    pub async fn last_delivery(&self) -> Result<Option<LastDelivery>, StoreError> {
        let sql = |age: String| {
            format!("SELECT event_type, outcome, {age} FROM clerk_sync_deliveries ORDER BY received_at DESC LIMIT 1")
        };
        let row: Option<(String, String, f64)> = match self {
            Db::Postgres(s) => {
                sqlx::query_as(&sql(age_postgres("received_at")))
                    .fetch_optional(s.pool())
                    .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_as(&sql(age_sqlite("received_at")))
                    .fetch_optional(s.pool())
                    .await?
            }
        };
        Ok(row.map(|(event_type, outcome, age_secs)| LastDelivery {
            event_type,
            outcome,
            age_secs,
        }))
    }

    /// Deliveries recorded within `within`, by outcome (`applied`, `wrong_instance`, …).
    pub async fn deliveries_by_outcome(&self, within: Duration) -> Result<HashMap<String, i64>, StoreError> {
        let sql = |since: &str| {
            format!("SELECT outcome, count(*) FROM clerk_sync_deliveries WHERE received_at >= {since} GROUP BY outcome")
        };
        self.grouped(sql(SINCE_POSTGRES), sql(SINCE_SQLITE), within).await
    }

    /// Users created within `within`, by the path that created them (`webhook`, `fallback`, `backfill`, …).
    pub async fn users_created_by_path(&self, within: Duration) -> Result<HashMap<String, i64>, StoreError> {
        let sql = |since: &str| {
            format!("SELECT created_via, count(*) FROM users WHERE created_at >= {since} GROUP BY created_via")
        };
        self.grouped(sql(SINCE_POSTGRES), sql(SINCE_SQLITE), within).await
    }

    /// Runs a `SELECT key, count(*) … GROUP BY key` over a window of `within` ending now.
    async fn grouped(
        &self,
        postgres: String,
        sqlite: String,
        within: Duration,
    ) -> Result<HashMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> = match self {
            Db::Postgres(s) => {
                sqlx::query_as(&postgres)
                    .bind(within.as_secs_f64())
                    .fetch_all(s.pool())
                    .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_as(&sqlite)
                    .bind(within.as_secs() as i64)
                    .fetch_all(s.pool())
                    .await?
            }
        };
        Ok(rows.into_iter().collect())
    }

    /// The feed's head, pruned-through mark and newest change (no lock: a head, not a horizon).
    pub async fn feed_state(&self) -> Result<FeedState, StoreError> {
        let head = self.feed_latest().await?;
        let sql = |age: String| format!("SELECT {age} FROM clerk_sync_changes ORDER BY seq DESC LIMIT 1");
        let last_age_secs: Option<f64> = match self {
            Db::Postgres(s) => {
                sqlx::query_scalar(&sql(age_postgres("at")))
                    .fetch_optional(s.pool())
                    .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_scalar(&sql(age_sqlite("at")))
                    .fetch_optional(s.pool())
                    .await?
            }
        };
        Ok(FeedState {
            head: head.last,
            pruned_through: head.pruned_through,
            last_age_secs,
        })
    }

    /// How far forwarding under cursor `name` has come, and what waits for it.
    pub async fn forward_state(&self, name: &str) -> Result<ForwardState, StoreError> {
        let cursor = self.forward_cursor(name).await?;
        let sql = |age: String| format!("SELECT count(*), max({age}) FROM clerk_sync_changes WHERE seq > $1");
        let (behind, oldest_age_secs): (i64, Option<f64>) = match self {
            Db::Postgres(s) => {
                sqlx::query_as(&sql(age_postgres("at")))
                    .bind(cursor)
                    .fetch_one(s.pool())
                    .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_as(&sql(age_sqlite("at")))
                    .bind(cursor)
                    .fetch_one(s.pool())
                    .await?
            }
        };
        Ok(ForwardState {
            cursor,
            behind,
            oldest_age_secs,
        })
    }
}
