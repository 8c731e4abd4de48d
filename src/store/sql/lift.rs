//! Lifting prune tombstones. A prune infers a deletion from Clerk's list; Clerk did not announce it, so the
//! tombstone is not final: when Clerk shows the record alive (`upsert`), or `clerk-sync undo-prune` takes a run
//! back, the tombstone goes and the row is undeleted — with the memberships the prune of an organization or user
//! took with it, unless something else (a deletion Clerk announced) still covers them.

use super::{BatchTx, FeedRow, Lift};
use crate::store::{Kind, Source};

/// Deletes the prune tombstones `which` names and undeletes their rows, parents before memberships (a membership
/// is undeleted only when no tombstone covers its organization or user). The rows of `forget` (the records a
/// write is about to rewrite) forget their `clerk_updated_at` so that the write lands. Returns the clerk ids
/// undeleted.
pub(in crate::store) async fn lift<T: BatchTx>(
    tx: &mut T,
    which: Lift<'_>,
    forget: &[&str],
) -> Result<Vec<String>, sqlx::Error> {
    let mut gone = tx.lift_tombstones(which).await?;
    gone.sort_unstable();
    let mut restored = Vec::new();
    for kind in [Kind::User, Kind::Organization, Kind::Membership] {
        let (rewritten, kept): (Vec<&str>, Vec<&str>) = gone
            .iter()
            .map(String::as_str)
            .filter(|id| Kind::of(id) == Some(kind))
            .partition(|id| forget.contains(id));
        if !rewritten.is_empty() {
            restored.extend(tx.restore(kind, &rewritten, true).await?);
        }
        if !kept.is_empty() {
            restored.extend(tx.restore(kind, &kept, false).await?);
        }
    }
    Ok(restored)
}

/// Takes back prune run `run`: lifts every tombstone it made and undeletes the rows no deletion Clerk announced
/// since covers, each on the feed (as `updated`) when `feed`. Returns the clerk ids undeleted.
pub(in crate::store) async fn undo_run<T: BatchTx>(
    tx: &mut T,
    run: &str,
    feed: bool,
) -> Result<Vec<String>, sqlx::Error> {
    let restored = lift(tx, Lift::Run(run), &[]).await?;
    if feed && !restored.is_empty() {
        let rows: Vec<FeedRow> = restored
            .iter()
            .filter_map(|id| {
                Some(FeedRow {
                    kind: Kind::of(id)?.as_str(),
                    clerk_id: id,
                    op: "updated",
                    via: Source::Backfill.as_str(),
                })
            })
            .collect();
        tx.record_changes(&rows).await?;
    }
    Ok(restored)
}
