//! Hard deletes that the application's own foreign keys may refuse.

use super::{BatchTx, Removal};
use crate::store::Kind;

/// Removes the rows of `rows`; returns the users whose row could not be removed because the application's own
/// foreign keys still reference it. Those are soft-deleted instead: the delete is acknowledged and the tombstone
/// kept, rather than failing the delivery on every retry.
pub(super) async fn hard_delete<'a, T: BatchTx>(
    tx: &mut T,
    kind: Kind,
    rows: &[&Removal<'a>],
) -> Result<Vec<Removal<'a>>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.clerk_id).collect();
    tx.exec("SAVEPOINT clerk_sync_hard_delete").await?;
    match tx.hard_delete(kind, &ids).await {
        Ok(()) => {
            tx.exec("RELEASE SAVEPOINT clerk_sync_hard_delete").await?;
            return Ok(Vec::new());
        }
        Err(e) if is_foreign_key_violation(&e) => tx.exec("ROLLBACK TO SAVEPOINT clerk_sync_hard_delete").await?,
        Err(e) => return Err(e),
    }
    // Some row is referenced: remove the others one by one, keep the referenced ones (soft delete).
    let mut kept = Vec::new();
    for r in rows {
        match tx.hard_delete(kind, &[r.clerk_id]).await {
            Ok(()) => tx.exec("RELEASE SAVEPOINT clerk_sync_hard_delete").await?,
            Err(e) if is_foreign_key_violation(&e) => {
                tx.exec("ROLLBACK TO SAVEPOINT clerk_sync_hard_delete").await?;
                tracing::warn!(
                    clerk_id = r.clerk_id,
                    "hard delete refused by a foreign key of the application; the row is soft-deleted instead"
                );
                metrics::counter!(crate::telemetry::metrics::HARD_DELETE_REFUSED).increment(1);
                kept.push((*r).clone());
            }
            Err(e) => return Err(e),
        }
        tx.exec("SAVEPOINT clerk_sync_hard_delete").await?;
    }
    tx.exec("RELEASE SAVEPOINT clerk_sync_hard_delete").await?;
    Ok(kept)
}

/// SQLSTATE 23503 on Postgres; SQLITE_CONSTRAINT_FOREIGNKEY (787) on SQLite.
fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("23503") | Some("787")),
        _ => false,
    }
}
