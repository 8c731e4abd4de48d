//! Deleting an organization or a user deletes its memberships, in the same transaction: Clerk removes them (and
//! does not say that it sends `organizationMembership.deleted` for each), so a membership must not outlive its
//! organization or user in the table, in row-level security or on the change feed.
//!
//! The memberships get no tombstone of their own when Clerk announced the parent's deletion: the parent's covers
//! them. A prune's deletion is inferred and can be lifted, so there each membership gets a prune tombstone naming
//! the run and its parent (`cascade_of`), lifted with the parent's. Every membership upsert is refused
//! while its organization or user is tombstoned (`not_tombstoned!` in the backends' statements), and a
//! soft-deleted row is never updated, so nothing brings one back or makes a new one. A tombstone per member
//! would cost a row per member of a large organization, and would outlast the parent's were that ever lifted.

use std::collections::HashMap;

use super::hard_delete::hard_delete;
use super::{BatchTx, Removal};
use crate::store::{Kind, Source};

/// A membership deleted with its organization or user, for the change feed.
pub(super) struct Cascaded {
    pub clerk_id: String,
    pub via: Source,
}

/// Deletes the live memberships of `parents` (organizations and users whose tombstone this batch made, each with
/// whether its delete is hard): each membership as its parent was, at the parent's `deleted_at`, by the parent's
/// path, and removed rather than soft-deleted when the parent's delete is hard. Two statements when there are
/// memberships (find them, delete them), one when there are none.
pub(super) async fn cascade<T: BatchTx>(
    tx: &mut T,
    parents: &[(&Removal<'_>, bool)],
) -> Result<Vec<Cascaded>, sqlx::Error> {
    if parents.is_empty() {
        return Ok(Vec::new());
    }
    let by_id: HashMap<&str, (&Removal, bool)> = parents.iter().map(|(r, hard)| (r.clerk_id, (*r, *hard))).collect();
    let mut ids: Vec<&str> = by_id.keys().copied().collect();
    ids.sort_unstable();
    let mut members = tx.live_memberships_of(&ids).await?;
    // Rows are deleted, and appear on the feed, in clerk id order whatever order the backend returned them in.
    members.sort_unstable();
    let (mut soft, mut hard, mut cascaded) = (Vec::new(), Vec::new(), Vec::with_capacity(members.len()));
    for (clerk_id, organization, user) in &members {
        // Organization and user may both go in one batch: either will do, the organization is taken.
        let Some((parent, is_hard)) = by_id.get(organization.as_str()).or_else(|| by_id.get(user.as_str())) else {
            continue;
        };
        let removal = Removal {
            clerk_id,
            deleted_at_ms: parent.deleted_at_ms,
            via: parent.via,
            prune_run: parent.prune_run,
            cascade_of: parent.prune_run.map(|_| parent.clerk_id),
        };
        cascaded.push(Cascaded {
            clerk_id: clerk_id.clone(),
            via: parent.via,
        });
        if *is_hard {
            hard.push(removal);
        } else {
            soft.push(removal);
        }
    }
    // A prune's deletion is not final: the memberships it takes get tombstones naming the run and the parent,
    // so that lifting the parent's (or undoing the run) brings them back. A deletion Clerk announced needs none.
    let mut pruned: Vec<Removal> = soft
        .iter()
        .chain(&hard)
        .filter(|r| r.prune_run.is_some())
        .cloned()
        .collect();
    pruned.sort_unstable_by(|a, b| a.clerk_id.cmp(b.clerk_id));
    if !pruned.is_empty() {
        tx.insert_tombstones(&pruned).await?;
    }
    let hard: Vec<&Removal> = hard.iter().collect();
    soft.extend(hard_delete(tx, Kind::Membership, &hard).await?);
    soft.sort_unstable_by(|a, b| a.clerk_id.cmp(b.clerk_id));
    if !soft.is_empty() {
        tx.soft_delete(Kind::Membership, &soft).await?;
    }
    Ok(cascaded)
}
