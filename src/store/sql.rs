//! What a batch of changes means, written once against the small [`BatchTx`] vocabulary each backend implements
//! with multi-row statements (Postgres `UNNEST` over arrays, SQLite `json_each`).
//!
//! A batch costs a handful of statements whatever its size: record the deliveries (a redelivered svix id stops
//! there), upsert each kind of record (users, organizations, memberships) in one statement under the ordering
//! guard and the tombstone check, tombstone and delete in one statement each (and when an organization or user
//! is deleted, its memberships with it: see `cascade`), correct the recorded outcome of the few changes that
//! were not applied, and append what changed to the change feed.

use std::collections::{HashMap, HashSet};

mod cascade;
mod feed;
mod fragments;
mod hard_delete;
mod lift;
mod upsert;

use cascade::{cascade, Cascaded};
use feed::feed_rows;
pub(super) use feed::FeedRow;
pub(crate) use fragments::{not_tombstoned, organization_count_only, organization_set, organization_wins};
use hard_delete::hard_delete;
pub(super) use lift::undo_run;
use upsert::{Restored, Upsert};

use super::{
    Change, Delivery, Kind, Lookup, MembershipData, OrganizationData, Outcome, RecordOnly, Row, Source, StoreError,
    UserData,
};

/// Turns the row (if any) and its tombstone (`Some(true)`: made by a prune) into a [`Lookup`].
pub(super) fn lookup_result(row: Option<Row>, tomb: Option<bool>) -> Lookup {
    match (row, tomb) {
        (Some(row), _) if row.deleted_at().is_none() => Lookup::Found(std::sync::Arc::new(row)),
        (_, Some(true)) => Lookup::Pruned,
        (Some(_), _) | (None, Some(false)) => Lookup::Tombstoned,
        (None, None) => Lookup::Missing,
    }
}

/// Ready when the migrations table lists every embedded migration as applied.
pub(super) fn readiness(applied: Result<i64, sqlx::Error>, expected: usize) -> Result<(), StoreError> {
    match applied {
        Ok(n) if n >= expected as i64 => Ok(()),
        Ok(n) => Err(StoreError::NotReady(format!("{n} of {expected} migrations applied"))),
        Err(sqlx::Error::Database(db)) => Err(StoreError::NotReady(db.message().to_string())),
        Err(e) => Err(e.into()),
    }
}

/// A delivery row to record, with the outcome it is recorded under.
pub(super) struct NewDelivery<'a> {
    pub delivery: &'a Delivery,
    pub outcome: &'a str,
}

/// A row to write: the record (NUL-free) and the path writing it.
pub(super) struct New<'a, T> {
    pub row: &'a T,
    pub via: Source,
}

// Not derived: that would ask `T: Clone`.
impl<T> Clone for New<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for New<'_, T> {}

pub(super) type NewUser<'a> = New<'a, UserData>;
pub(super) type NewOrganization<'a> = New<'a, OrganizationData>;
pub(super) type NewMembership<'a> = New<'a, MembershipData>;

/// A record to delete.
#[derive(Clone)]
pub(super) struct Removal<'a> {
    pub clerk_id: &'a str,
    pub deleted_at_ms: i64,
    pub via: Source,
    /// The prune run inferring the deletion (its tombstone can be lifted); `None`: Clerk announced it (final).
    pub prune_run: Option<&'a str>,
    /// For a membership a pruned organization or user takes with it: that parent.
    pub cascade_of: Option<&'a str>,
}

/// Which prune tombstones [`BatchTx::lift_tombstones`] deletes.
#[derive(Clone, Copy, Debug)]
pub(in crate::store) enum Lift<'a> {
    /// Those of these records, and of the memberships their prune took with them.
    Records(&'a [&'a str]),
    /// Every tombstone this prune run made.
    Run(&'a str),
}

/// The multi-row statements one batch needs, inside an open transaction. Every method takes rows whose keys are
/// distinct, sorted by key (so concurrent batches on other connections or replicas lock rows in one order).
pub(super) trait BatchTx {
    /// Inserts the deliveries whose svix id is not recorded yet; returns the svix ids it inserted.
    async fn insert_deliveries(&mut self, rows: &[NewDelivery<'_>]) -> Result<HashSet<String>, sqlx::Error>;
    /// The recorded outcome of each of these svix ids.
    async fn delivery_outcomes(&mut self, svix_ids: &[&str]) -> Result<HashMap<String, String>, sqlx::Error>;
    async fn set_delivery_outcomes(&mut self, rows: &[(&str, &str)]) -> Result<(), sqlx::Error>;
    /// Creates or updates each user unless the row is as new or newer, or the user is tombstoned. Returns the
    /// clerk ids written, each with `true` when the row was created.
    async fn upsert_users(&mut self, rows: &[NewUser<'_>]) -> Result<HashMap<String, bool>, sqlx::Error>;
    /// The same for organizations.
    async fn upsert_organizations(
        &mut self,
        rows: &[NewOrganization<'_>],
    ) -> Result<HashMap<String, bool>, sqlx::Error>;
    /// The same for memberships.
    async fn upsert_memberships(&mut self, rows: &[NewMembership<'_>]) -> Result<HashMap<String, bool>, sqlx::Error>;
    /// Which of these clerk ids are tombstoned.
    async fn tombstoned(&mut self, clerk_ids: &[&str]) -> Result<HashSet<String>, sqlx::Error>;
    /// Of these tombstoned clerk ids, those whose tombstone a prune made, each with its row's `clerk_updated_at`.
    async fn pruned(&mut self, clerk_ids: &[&str]) -> Result<HashMap<String, Option<i64>>, sqlx::Error>;
    /// Inserts the tombstones that do not exist yet, and makes final the prune tombstones a deletion Clerk
    /// announced meets; returns the clerk ids of both.
    async fn insert_tombstones(&mut self, rows: &[Removal<'_>]) -> Result<HashSet<String>, sqlx::Error>;
    /// Deletes prune tombstones: of these records and the memberships their prune took with them, or of one run.
    /// Returns the clerk ids whose tombstone went.
    async fn lift_tombstones(&mut self, which: Lift<'_>) -> Result<Vec<String>, sqlx::Error>;
    /// Undeletes the soft-deleted rows of these records, all of one kind, that no tombstone covers (nor, for a
    /// membership, its organization's or user's); with `forget`, also forgets their `clerk_updated_at`, so that
    /// the write lifting them lands whatever its `updated_at`. Returns the clerk ids undeleted.
    async fn restore(&mut self, kind: Kind, clerk_ids: &[&str], forget: bool) -> Result<Vec<String>, sqlx::Error>;
    /// The live memberships of these organizations and users: (clerk id, organization, user), by clerk id.
    async fn live_memberships_of(&mut self, parents: &[&str]) -> Result<Vec<(String, String, String)>, sqlx::Error>;
    /// Sets `deleted_at` on the live rows of these records, all of one kind.
    async fn soft_delete(&mut self, kind: Kind, rows: &[Removal<'_>]) -> Result<(), sqlx::Error>;
    /// Removes the rows of these records, all of one kind.
    async fn hard_delete(&mut self, kind: Kind, clerk_ids: &[&str]) -> Result<(), sqlx::Error>;
    /// Runs `sql` (a savepoint command) as it is.
    async fn exec(&mut self, sql: &'static str) -> Result<(), sqlx::Error>;
    /// Appends these changes to the feed, in this order.
    async fn record_changes(&mut self, rows: &[FeedRow<'_>]) -> Result<(), sqlx::Error>;
    /// Whether the upsert statements append their own feed rows (one statement fewer per batch), so that
    /// [`BatchTx::record_changes`] gets only the deletes.
    fn records_upserts(&self) -> bool {
        false
    }
}

/// Applies a batch through `tx`; the caller owns begin / commit. One outcome per change, in order.
///
/// Changes are split into rounds so that no round names a user or a svix id twice (a multi-row upsert may not
/// touch one row twice); the writer's callers almost never put one user in a batch twice, so there is usually
/// one round.
///
/// With `feed`, every change that created, updated or deleted a row is also appended to the change feed, in the
/// same transaction: the feed never shows an uncommitted change and never misses a committed one.
pub(super) async fn apply_all<T: BatchTx>(
    tx: &mut T,
    batch: &[Change],
    feed: bool,
) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
    let (mut cascaded, mut restored) = (Vec::new(), Vec::new());
    for round in rounds(batch) {
        apply_round(tx, batch, &round, &mut outcomes, &mut cascaded, &mut restored).await?;
    }
    let outcomes: Vec<Outcome> = outcomes.into_iter().map(|o| o.unwrap_or(Outcome::Stale)).collect();
    if feed {
        // The memberships deleted with their parent last: none of them can change after its delete. Those undeleted
        // with a parent whose prune was lifted, likewise after it.
        let mut rows = feed_rows(batch, &outcomes, !tx.records_upserts());
        rows.extend(restored.iter().map(|r: &Restored| FeedRow {
            kind: Kind::Membership.as_str(),
            clerk_id: &r.clerk_id,
            op: "updated",
            via: r.via.as_str(),
        }));
        rows.extend(cascaded.iter().map(|c: &Cascaded| FeedRow {
            kind: Kind::Membership.as_str(),
            clerk_id: &c.clerk_id,
            op: "deleted",
            via: c.via.as_str(),
        }));
        if !rows.is_empty() {
            tx.record_changes(&rows).await?;
        }
    }
    Ok(outcomes)
}

/// Indexes of the changes grouped into rounds, in order; within a round every user and svix id is distinct, and
/// a change comes in a later round than every earlier change naming the same user or svix id.
fn rounds(batch: &[Change]) -> Vec<Vec<usize>> {
    let mut users: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
    let mut messages: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, change) in batch.iter().enumerate() {
        let user = change.clerk_id();
        let message = change.delivery().map(|d| d.svix_id.as_str());
        let after = |seen: &HashMap<&str, usize>, key: Option<&str>| key.and_then(|k| seen.get(k)).map_or(0, |r| r + 1);
        let round = after(&users, user).max(after(&messages, message));
        if let Some(user) = user {
            users.insert(user, round);
        }
        if let Some(message) = message {
            messages.insert(message, round);
        }
        if rounds.len() <= round {
            rounds.resize_with(round + 1, Vec::new);
        }
        rounds[round].push(i);
    }
    rounds
}

async fn apply_round<T: BatchTx>(
    tx: &mut T,
    batch: &[Change],
    round: &[usize],
    outcomes: &mut [Option<Outcome>],
    cascaded: &mut Vec<Cascaded>,
    restored: &mut Vec<Restored>,
) -> Result<(), sqlx::Error> {
    // 1. Deliveries first: a redelivered svix id stops here, before touching the user. Changes that write a
    //    user are recorded as "applied" and corrected below in the rare case they were not.
    let mut deliveries: Vec<NewDelivery> = round
        .iter()
        .filter_map(|&i| {
            let change = &batch[i];
            change.delivery().map(|delivery| NewDelivery {
                delivery,
                outcome: provisional(change),
            })
        })
        .collect();
    deliveries.sort_unstable_by(|a, b| a.delivery.svix_id.cmp(&b.delivery.svix_id));
    let inserted = if deliveries.is_empty() {
        HashSet::new()
    } else {
        tx.insert_deliveries(&deliveries).await?
    };
    let duplicates: Vec<&str> = deliveries
        .iter()
        .map(|d| d.delivery.svix_id.as_str())
        .filter(|id| !inserted.contains(*id))
        .collect();
    let prior = if duplicates.is_empty() {
        HashMap::new()
    } else {
        tx.delivery_outcomes(&duplicates).await?
    };
    let live: Vec<usize> = round
        .iter()
        .copied()
        .filter(|&i| match batch[i].delivery() {
            Some(d) if !inserted.contains(&d.svix_id) => {
                let outcome = prior.get(&d.svix_id).cloned().unwrap_or_else(|| "applied".into());
                outcomes[i] = Some(Outcome::Duplicate(outcome));
                false
            }
            _ => true,
        })
        .collect();

    // 2. Upserts, one statement per kind.
    let mut upserts: Vec<Upsert> = live
        .iter()
        .filter_map(|&i| match &batch[i] {
            Change::Upsert { entity, via, .. } => Some((i, entity, *via)),
            _ => None,
        })
        .collect();
    upserts.sort_unstable_by(|a, b| a.1.clerk_id().cmp(b.1.clerk_id()));
    if !upserts.is_empty() {
        restored.extend(upsert::upserts(tx, &upserts, outcomes).await?);
    }

    // 3. Deletes: the tombstone decides; only a new tombstone deletes the row, and a new organization's or user's
    //    its memberships.
    let mut removals: Vec<(usize, Removal, Kind, bool)> = live
        .iter()
        .filter_map(|&i| match &batch[i] {
            Change::Delete {
                kind,
                clerk_id,
                deleted_at_ms,
                via,
                hard,
                pruned_by,
                ..
            } => Some((
                i,
                Removal {
                    clerk_id,
                    deleted_at_ms: *deleted_at_ms,
                    via: *via,
                    prune_run: pruned_by.as_deref(),
                    cascade_of: None,
                },
                *kind,
                *hard,
            )),
            _ => None,
        })
        .collect();
    removals.sort_unstable_by(|a, b| a.1.clerk_id.cmp(b.1.clerk_id));
    if !removals.is_empty() {
        let rows: Vec<Removal> = removals.iter().map(|(_, r, _, _)| r.clone()).collect();
        let new = tx.insert_tombstones(&rows).await?;
        for kind in [Kind::User, Kind::Organization, Kind::Membership] {
            let (soft, hard): (Vec<&(usize, Removal, Kind, bool)>, Vec<_>) = removals
                .iter()
                .filter(|(_, r, k, _)| *k == kind && new.contains(r.clerk_id))
                .partition(|(_, _, _, hard)| !*hard);
            let mut soft: Vec<Removal> = soft.into_iter().map(|(_, r, _, _)| r.clone()).collect();
            let hard: Vec<&Removal> = hard.into_iter().map(|(_, r, _, _)| r).collect();
            soft.extend(hard_delete(tx, kind, &hard).await?);
            soft.sort_unstable_by(|a, b| a.clerk_id.cmp(b.clerk_id));
            if !soft.is_empty() {
                tx.soft_delete(kind, &soft).await?;
            }
        }
        let parents: Vec<(&Removal, bool)> = removals
            .iter()
            .filter(|(_, r, kind, _)| *kind != Kind::Membership && new.contains(r.clerk_id))
            .map(|(_, r, _, hard)| (r, *hard))
            .collect();
        cascaded.extend(cascade(tx, &parents).await?);
        for (i, r, _, _) in &removals {
            outcomes[*i] = Some(if new.contains(r.clerk_id) {
                Outcome::Deleted
            } else {
                Outcome::Tombstoned
            });
        }
    }

    for &i in &live {
        if let Change::Record { outcome, .. } = &batch[i] {
            outcomes[i] = Some(Outcome::Recorded(*outcome));
        }
    }

    // 4. Correct the recorded outcome of deliveries that did not apply as provisionally recorded.
    let mut corrections: Vec<(&str, &str)> = live
        .iter()
        .filter_map(|&i| {
            let d = batch[i].delivery()?;
            let outcome = outcomes[i].as_ref()?.delivery_outcome();
            (outcome != provisional(&batch[i])).then_some((d.svix_id.as_str(), outcome))
        })
        .collect();
    corrections.sort_unstable();
    if !corrections.is_empty() {
        tx.set_delivery_outcomes(&corrections).await?;
    }
    Ok(())
}

/// The outcome recorded with the delivery before the change is applied.
fn provisional(change: &Change) -> &'static str {
    match change {
        Change::Record {
            outcome: RecordOnly::Ignored,
            ..
        } => "ignored",
        Change::Record {
            outcome: RecordOnly::InvalidPayload,
            ..
        } => "invalid_payload",
        Change::Record {
            outcome: RecordOnly::WrongInstance,
            ..
        } => "wrong_instance",
        _ => "applied",
    }
}
