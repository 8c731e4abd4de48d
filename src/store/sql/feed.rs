//! Which changes of a batch go to the change feed (`clerk_sync_changes`).

use crate::store::{Change, Outcome};

/// One committed change, as the feed (`clerk_sync_changes`) records it.
pub(in crate::store) struct FeedRow<'a> {
    pub kind: &'static str,
    pub clerk_id: &'a str,
    /// `created`, `updated` or `deleted`.
    pub op: &'static str,
    pub via: &'static str,
}

/// The feed's rows for a batch's outcomes: every change that created, updated or deleted a row, in batch order
/// (upserts only with `upserts`). Stale, duplicate, tombstoned and ignored deliveries changed nothing, so they
/// write nothing. A record's changes keep their order either way: rounds run in batch order, and a record is in
/// a round once.
pub(super) fn feed_rows<'a>(batch: &'a [Change], outcomes: &[Outcome], upserts: bool) -> Vec<FeedRow<'a>> {
    batch
        .iter()
        .zip(outcomes)
        .filter(|(change, _)| upserts || !matches!(change, Change::Upsert { .. }))
        .filter_map(|(change, outcome)| {
            let op = match outcome {
                Outcome::Created => "created",
                Outcome::Updated => "updated",
                Outcome::Deleted => "deleted",
                _ => return None,
            };
            let (kind, clerk_id, via) = match change {
                Change::Upsert { entity, via, .. } => (entity.kind(), entity.clerk_id(), *via),
                Change::Delete {
                    kind, clerk_id, via, ..
                } => (*kind, clerk_id.as_str(), *via),
                Change::Record { .. } => return None,
            };
            Some(FeedRow {
                kind: kind.as_str(),
                clerk_id,
                op,
                via: via.as_str(),
            })
        })
        .collect()
}
