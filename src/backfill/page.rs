//! What every walk does with a page: start and end the walk's checkpoint, write the page (or, in a dry run,
//! classify it), and count the outcomes.

use std::sync::Arc;

use super::{walk_name, Backfill, Options, Tally, Walked};
use crate::store::backfill::{Checkpoint, Known};
use crate::store::writer::count_created;
use crate::store::{Change, Db, Kind, Outcome, Store, StoreError};
use crate::telemetry::metrics;

/// A dry run records the ids it saw under its own name (bookkeeping only, never the walk's), so `--prune` can
/// say what would be tombstoned without holding the list in memory; they are cleared when the run ends.
pub(super) fn dry_run_name(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "users-dry-run",
        Kind::Organization => "organizations-dry-run",
        Kind::Membership => "memberships-dry-run",
    }
}

/// The name a walk records its seen ids under in this run.
pub(super) fn seen_name(kind: Kind, dry_run: bool) -> &'static str {
    if dry_run {
        dry_run_name(kind)
    } else {
        walk_name(kind)
    }
}

pub(super) type PageResult = Result<(Vec<Change>, Vec<Result<Outcome, StoreError>>), StoreError>;

impl Backfill {
    /// Where walk `kind` starts: its checkpoint unless `restart` (or none yet). A dry run changes nothing and
    /// keeps no checkpoint: it always reads from the start.
    pub(super) async fn begin(
        &self,
        kind: Kind,
        options: Options,
        tally: &mut Tally,
    ) -> Result<Checkpoint, StoreError> {
        if options.dry_run {
            self.db.backfill_start(dry_run_name(kind), true).await?;
            tally.walked = Walked::Fresh;
            return Ok(Checkpoint {
                keeps_seen: true,
                ..Checkpoint::default()
            });
        }
        if !options.restart {
            match self.db.backfill_checkpoint(walk_name(kind)).await? {
                // A walk that may prune needs every id it saw, those of the run it continues too.
                Some(resume) if resume.keeps_seen || !options.prune => {
                    tally.walked = Walked::Resumed;
                    tally.scanned = resume.scanned.max(0) as u64;
                    return Ok(resume);
                }
                Some(_) => tracing::info!(
                    walk = walk_name(kind),
                    "backfill: the interrupted walk was not pruning, so it kept no record of the ids it saw; \
                     --prune walks again from the start"
                ),
                None => {}
            }
        }
        // Only a walk that may prune records the ids it sees (a write per record otherwise saved).
        let keeps_seen = options.prune;
        self.db.backfill_start(walk_name(kind), keeps_seen).await?;
        tally.walked = Walked::Fresh;
        Ok(Checkpoint {
            keeps_seen,
            ..Checkpoint::default()
        })
    }

    /// Ends a complete walk: its checkpoint and seen ids are forgotten. A dry run's are kept until the run ends
    /// (the memberships walk reads the organizations one saw).
    pub(super) async fn end(&self, kind: Kind, options: Options) -> Result<(), StoreError> {
        if options.dry_run {
            return Ok(());
        }
        self.db.backfill_finish(walk_name(kind)).await
    }

    /// Writes one page (recording its ids as seen when `keeps_seen`) and, in the same transaction, moves the
    /// walk's cursor to `checkpoint`; a dry run classifies the page and records its ids as seen. For the walks
    /// that write a page at a time.
    pub(super) async fn apply_page(
        &self,
        kind: Kind,
        changes: Vec<Change>,
        keeps_seen: bool,
        checkpoint: Option<&Checkpoint>,
        options: Options,
        tally: &mut Tally,
    ) -> Result<(), StoreError> {
        tally.scanned += changes.len() as u64;
        if options.dry_run {
            self.classify(kind, &changes, tally).await?;
            let seen: Vec<&str> = changes.iter().filter_map(Change::clerk_id).collect();
            return self.db.backfill_page(dry_run_name(kind), &seen, None).await;
        }
        let page = Page {
            walk: walk_name(kind),
            keeps_seen,
            checkpoint: checkpoint.cloned(),
        };
        let (changes, outcomes) = write_page(self.db.clone(), page, changes, self.store_payload).await?;
        self.account(kind, &changes, outcomes, tally).await
    }

    /// Counts a written page's outcomes and drops the cache entries of the records it changed.
    pub(super) async fn account(
        &self,
        kind: Kind,
        changes: &[Change],
        outcomes: Vec<Result<Outcome, StoreError>>,
        tally: &mut Tally,
    ) -> Result<(), StoreError> {
        for (change, outcome) in changes.iter().zip(outcomes) {
            let id = change.clerk_id().unwrap_or_default();
            let label = match &outcome {
                Ok(o) => {
                    count_created(change, o);
                    count(tally, o)
                }
                Err(e) if e.is_unavailable() => return Err(StoreError::Closed),
                Err(e) => {
                    tracing::error!(error = %e, clerk_id = id, kind = kind.as_str(), "backfill: record not written");
                    tally.failed += 1;
                    "failed"
                }
            };
            // `clerk_sync_backfill_users_total` is the users walk's; the other walks are logged and summarized.
            if kind == Kind::User {
                ::metrics::counter!(metrics::BACKFILL_USERS, "outcome" => label).increment(1);
            }
            if let (Some(cache), "created" | "updated") = (&self.cache, label) {
                cache.invalidate(id).await;
            }
        }
        Ok(())
    }

    /// A dry run's classification of one page against what the database holds.
    pub(super) async fn classify(&self, kind: Kind, changes: &[Change], tally: &mut Tally) -> Result<(), StoreError> {
        let ids: Vec<&str> = changes.iter().filter_map(Change::clerk_id).collect();
        let known = self.db.known(kind, &ids).await?;
        for change in changes {
            let Change::Upsert { entity, .. } = change else {
                continue;
            };
            match known.get(entity.clerk_id()) {
                None => tally.created += 1,
                Some(Known::Deleted) => tally.skipped_tombstoned += 1,
                Some(Known::Live { clerk_updated_at })
                    if clerk_updated_at.is_none_or(|t| t < entity.clerk_updated_at()) =>
                {
                    tally.updated += 1
                }
                Some(Known::Live { .. }) => tally.unchanged += 1,
            }
        }
        Ok(())
    }
}

/// Where a page goes: its walk, whether the walk records the ids it sees, and the checkpoint to move the walk's
/// cursor to in the page's own transaction (a walk writing one page at a time).
pub(super) struct Page {
    pub walk: &'static str,
    pub keeps_seen: bool,
    pub checkpoint: Option<Checkpoint>,
}

/// Writes one page (its ids as seen, its checkpoint) in one transaction. A page the database refuses is applied
/// one record at a time, so one refused record does not stop the walk.
pub(super) async fn write_page(db: Arc<Db>, page: Page, mut changes: Vec<Change>, store_payload: bool) -> PageResult {
    changes.iter_mut().for_each(|c| c.prepare(store_payload));
    let checkpoint = page.checkpoint.as_ref();
    match db
        .backfill_apply_page(page.walk, page.keeps_seen, &changes, checkpoint)
        .await
    {
        Ok(outcomes) => {
            let outcomes = outcomes.into_iter().map(Ok).collect();
            Ok((changes, outcomes))
        }
        Err(e) if e.is_unavailable() => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, walk = page.walk, "backfill page failed; applying its records one by one");
            let mut each = Vec::with_capacity(changes.len());
            for change in &changes {
                each.push(db.apply(std::slice::from_ref(change)).await.map(|mut o| o.remove(0)));
            }
            let seen: Vec<&str> = match page.keeps_seen {
                true => changes.iter().filter_map(Change::clerk_id).collect(),
                false => Vec::new(),
            };
            db.backfill_page(page.walk, &seen, checkpoint).await?;
            Ok((changes, each))
        }
    }
}

/// Adds an outcome to the tally; returns its label.
fn count(tally: &mut Tally, outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Created => {
            tally.created += 1;
            "created"
        }
        Outcome::Updated => {
            tally.updated += 1;
            "updated"
        }
        Outcome::Tombstoned => {
            tally.skipped_tombstoned += 1;
            "tombstoned"
        }
        _ => {
            tally.unchanged += 1;
            "unchanged"
        }
    }
}
