//! `NOTIFY clerk_sync_changes` after commits, so followers of the change feed read at once.

use std::time::Duration;

use sqlx::postgres::PgPool;

use super::PgStore;

impl PgStore {
    /// Has `NOTIFY clerk_sync_changes` sent with the highest seq of a committed batch, so followers read at once.
    ///
    /// Not inside the transaction: Postgres serializes the commits of notifying transactions (a lock held
    /// through commit), which would make every batch wait for the previous one's disk flush. Not on the
    /// batch's path either: a task sends it, and seqs committed while one is on its way go out as one. A
    /// notification lost to a crash right after the commit is covered by the followers' polling.
    pub(in crate::store) fn notify(&self, seq: Option<i64>) {
        if let Some(seq) = seq {
            self.committed.send_if_modified(|last| {
                let newer = seq > *last;
                *last = (*last).max(seq);
                newer
            });
        }
    }
}

/// Sends the notifications [`PgStore::notify`] asks for, at most one per `NOTIFY_GAP` (each is a transaction
/// every listening session is woken for; followers read up to the horizon anyway); ends when the last store
/// handle is dropped.
pub(super) async fn notifier(pool: PgPool, mut seqs: tokio::sync::watch::Receiver<i64>) {
    const NOTIFY_GAP: Duration = Duration::from_millis(20);
    while seqs.changed().await.is_ok() {
        tokio::time::sleep(NOTIFY_GAP).await;
        let seq = *seqs.borrow_and_update();
        let sent = sqlx::query("SELECT pg_notify('clerk_sync_changes', $1)")
            .bind(seq.to_string())
            .execute(&pool)
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "could not notify followers; they will find the change by polling");
        }
    }
}
