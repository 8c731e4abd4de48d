//! Step 2 of a round: the upserts, one statement per kind, and what a refused one met — a row as new or newer,
//! or a tombstone. A tombstone Clerk announced is final; one a prune made is lifted when this write is Clerk's
//! sign that the record lives (see `lift`), and the write then lands.

use std::collections::{HashMap, HashSet};

use super::lift::lift;
use super::{BatchTx, Lift, New, NewMembership, NewOrganization, NewUser};
use crate::store::{Entity, Kind, Outcome, Source};

/// An upsert of the round: its index in the batch, the record, the path writing it.
pub(super) type Upsert<'a> = (usize, &'a Entity, Source);

/// A row undeleted with a record whose prune was lifted (a membership its prune took with it), for the feed.
pub(super) struct Restored {
    pub clerk_id: String,
    pub via: Source,
}

/// Runs the round's upserts (sorted by clerk id) and sets their outcomes; returns the memberships undeleted with
/// a lifted organization or user.
pub(super) async fn upserts<T: BatchTx>(
    tx: &mut T,
    upserts: &[Upsert<'_>],
    outcomes: &mut [Option<Outcome>],
) -> Result<Vec<Restored>, sqlx::Error> {
    let mut written = write(tx, upserts.iter()).await?;
    let refused: Vec<&str> = upserts
        .iter()
        .map(|(_, e, _)| e.clerk_id())
        .filter(|id| !written.contains_key(*id))
        .collect();
    let mut tombstoned = if refused.is_empty() {
        HashSet::new()
    } else {
        tx.tombstoned(&refused).await?
    };
    let mut restored = Vec::new();
    if !tombstoned.is_empty() {
        let mut ids: Vec<&str> = tombstoned.iter().map(String::as_str).collect();
        ids.sort_unstable();
        let pruned = tx.pruned(&ids).await?;
        let lifting: Vec<&Upsert> = upserts
            .iter()
            .filter(|(_, e, via)| {
                pruned
                    .get(e.clerk_id())
                    .is_some_and(|stored| shows_alive(e.clerk_updated_at(), *stored, *via))
            })
            .collect();
        if let Some((_, _, via)) = lifting.first() {
            let ids: Vec<&str> = lifting.iter().map(|(_, e, _)| e.clerk_id()).collect();
            for id in lift(tx, Lift::Records(&ids), &ids).await? {
                if !ids.contains(&id.as_str()) {
                    restored.push(Restored {
                        clerk_id: id,
                        via: *via,
                    });
                }
            }
            written.extend(write(tx, lifting.iter().copied()).await?);
            for id in &ids {
                tracing::info!(
                    clerk_id = id,
                    via = via.as_str(),
                    "Clerk shows a pruned record alive: prune lifted"
                );
                tombstoned.remove(*id);
            }
        }
    }
    for (i, e, _) in upserts {
        let id = e.clerk_id();
        outcomes[*i] = Some(match written.get(id) {
            Some(true) => Outcome::Created,
            Some(false) => Outcome::Updated,
            None if tombstoned.contains(id) => Outcome::Tombstoned,
            None => Outcome::Stale,
        });
    }
    Ok(restored)
}

/// Whether a write of a record whose prune tombstone holds its row at `stored` shows Clerk has it: an event is
/// proof only when newer than what the prune saw (a delayed retry of an older one proves nothing), the list or a
/// lookup when not older (Clerk answered it now).
fn shows_alive(incoming: i64, stored: Option<i64>, via: Source) -> bool {
    match (via, stored) {
        (_, None) => true,
        (Source::Webhook, Some(stored)) => incoming > stored,
        (Source::Fallback | Source::Backfill, Some(stored)) => incoming >= stored,
    }
}

/// One statement per kind; the ids written, `true` for those created.
async fn write<'a, T: BatchTx>(
    tx: &mut T,
    upserts: impl Iterator<Item = &'a Upsert<'a>> + Clone,
) -> Result<HashMap<String, bool>, sqlx::Error> {
    let mut written = HashMap::new();
    let of = |kind: Kind| upserts.clone().filter(move |(_, e, _)| e.kind() == kind);
    let users: Vec<NewUser> = of(Kind::User)
        .filter_map(|(_, e, via)| match e {
            Entity::User(row) => Some(New { row, via: *via }),
            _ => None,
        })
        .collect();
    if !users.is_empty() {
        written.extend(tx.upsert_users(&users).await?);
    }
    let organizations: Vec<NewOrganization> = of(Kind::Organization)
        .filter_map(|(_, e, via)| match e {
            Entity::Organization(row) => Some(New { row, via: *via }),
            _ => None,
        })
        .collect();
    if !organizations.is_empty() {
        written.extend(tx.upsert_organizations(&organizations).await?);
    }
    let memberships: Vec<NewMembership> = of(Kind::Membership)
        .filter_map(|(_, e, via)| match e {
            Entity::Membership(row) => Some(New { row, via: *via }),
            _ => None,
        })
        .collect();
    if !memberships.is_empty() {
        written.extend(tx.upsert_memberships(&memberships).await?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_shows_a_pruned_record_alive() {
        assert!(shows_alive(10, Some(9), Source::Webhook));
        assert!(
            !shows_alive(9, Some(9), Source::Webhook),
            "a retry of the event the prune saw"
        );
        assert!(shows_alive(9, Some(9), Source::Backfill), "listed by Clerk now");
        assert!(shows_alive(9, Some(9), Source::Fallback), "answered by Clerk now");
        assert!(!shows_alive(8, Some(9), Source::Backfill));
        assert!(shows_alive(1, None, Source::Webhook));
    }
}
