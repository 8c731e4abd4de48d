//! The Clerk instance this database mirrors (`clerk_sync_instance`, one row at most): see `clerk::pin`.

use super::{Db, StoreError};

/// The pinned instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pinned {
    pub instance_id: String,
    /// Clerk's `environment_type`; `None` while only a webhook has named the instance.
    pub environment: Option<String>,
    /// What pinned it: `key` (the daemon's secret key), `webhook`, or `replace` (`clerk-sync pin --replace`).
    pub pinned_by: String,
    /// When (the database's clock, as text).
    pub pinned_at: String,
}

type PinnedRow = (String, Option<String>, String, String);

const SELECT: &str = "SELECT instance_id, environment, pinned_by, CAST(pinned_at AS TEXT) FROM clerk_sync_instance";

/// Pins `$1` (environment `$2`, by `$3`) when nothing is pinned; when `$1` is the pinned instance, fills in an
/// environment the pin lacks. Another pinned instance is left as it is.
/// The singleton key is given, not left to its default: SQLite's INTEGER PRIMARY KEY would hand out a new rowid.
const PIN: &str = "INSERT INTO clerk_sync_instance (singleton, instance_id, environment, pinned_by) \
     VALUES (true, $1, $2, $3) \
     ON CONFLICT (singleton) DO UPDATE SET environment = coalesce(clerk_sync_instance.environment, excluded.environment) \
     WHERE clerk_sync_instance.instance_id = excluded.instance_id";

fn pinned((instance_id, environment, pinned_by, pinned_at): PinnedRow) -> Pinned {
    Pinned {
        instance_id,
        environment,
        pinned_by,
        pinned_at,
    }
}

impl Db {
    /// The pinned instance, if any.
    pub async fn pinned_instance(&self) -> Result<Option<Pinned>, StoreError> {
        let row: Option<PinnedRow> = on_pool!(self, |pool| sqlx::query_as(SELECT).fetch_optional(pool).await?);
        Ok(row.map(pinned))
    }

    /// Pins `instance_id` unless another instance is pinned (replicas racing to pin agree on the first), and
    /// returns the pin that stands.
    pub async fn pin_instance(
        &self,
        instance_id: &str,
        environment: Option<&str>,
        by: &str,
    ) -> Result<Pinned, StoreError> {
        let row: PinnedRow = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(PIN)
                .bind(instance_id)
                .bind(environment)
                .bind(by)
                .execute(&mut *tx)
                .await?;
            let row = sqlx::query_as(SELECT).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            row
        });
        Ok(pinned(row))
    }

    /// Pins `instance_id` in place of whatever was pinned (`clerk-sync pin --replace`); returns the previous pin.
    pub async fn replace_pin(
        &self,
        instance_id: &str,
        environment: Option<&str>,
    ) -> Result<Option<Pinned>, StoreError> {
        let previous: Option<PinnedRow> = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let previous = sqlx::query_as(SELECT).fetch_optional(&mut *tx).await?;
            sqlx::query("DELETE FROM clerk_sync_instance").execute(&mut *tx).await?;
            sqlx::query(PIN)
                .bind(instance_id)
                .bind(environment)
                .bind("replace")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            previous
        });
        Ok(previous.map(pinned))
    }
}
