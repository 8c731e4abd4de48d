//! The organizations walk (`GET /v1/organizations`) and the memberships walk
//! (`GET /v1/organizations/{id}/memberships` for each organization), a page at a time.
//!
//! Both lists page by offset only: Clerk offers no `starting_after` for them (tests/fixtures/clerk/SOURCES.md).
//! In `+created_at` order what is created during a walk lands at its end; what is deleted shifts the rest back
//! by one, so a walk may miss a record. The upsert shrugs that off (the next walk, or the record's webhooks,
//! brings it) and `--prune` asks Clerk about every unseen record before tombstoning it (see `prune.rs`).
//! Organizations are usually few, so their pages are written one after the other, without the users walk's
//! pipelining.

use super::page::dry_run_name;
use super::{walk_name, Backfill, BackfillError, Options, Progress, Tally};
use crate::clerk::{ClerkError, PAGE_SIZE};
use crate::store::{Change, Entity, Kind, Source};

/// Organizations read from the database per query of the memberships walk.
const ORGANIZATIONS_PER_READ: i64 = 100;

/// What Clerk said when it turned a walk down because the instance has organizations off (`None`: walked).
pub(super) type Off = Option<String>;

impl Backfill {
    /// Walks Clerk's organizations; `Some(what Clerk said)` when the instance has organizations turned off.
    pub(super) async fn organizations(
        &self,
        options: Options,
        run: Option<&str>,
        progress: &mut dyn Progress,
        tally: &mut Tally,
    ) -> Result<Off, BackfillError> {
        const KIND: Kind = Kind::Organization;
        // `scanned` is also the offset to continue at.
        let mut checkpoint = self.begin(KIND, options, tally).await?;
        let mut first = true;
        loop {
            let offset = checkpoint.scanned.max(0) as u64;
            let (page, total) = match self.clerk.list_organizations(offset, PAGE_SIZE).await {
                Ok(answer) => answer,
                Err(e) => match e.organizations_off(first && offset == 0) {
                    Some(said) => {
                        self.end(KIND, options).await?;
                        return Ok(Some(said));
                    }
                    None => return Err(e.into()),
                },
            };
            if std::mem::take(&mut first) {
                tally.clerk_count = Some(total);
                progress.start(KIND, Some(total));
            }
            let Some(last) = page.last().map(|o| o.id.clone()) else {
                break;
            };
            let full = page.len() == PAGE_SIZE;
            checkpoint.cursor = Some(last);
            checkpoint.scanned += page.len() as i64;
            let changes: Vec<Change> = page
                .into_iter()
                .map(|o| Change::Upsert {
                    entity: Entity::Organization(o.into_data()),
                    via: Source::Backfill,
                    delivery: None,
                })
                .collect();
            self.apply_page(KIND, changes, checkpoint.keeps_seen, Some(&checkpoint), options, tally)
                .await?;
            progress.page(KIND, tally);
            if !full {
                break;
            }
        }
        if options.prune {
            tally.pruned = self.prune(KIND, options, run, tally).await?;
        }
        self.end(KIND, options).await?;
        Ok(None)
    }

    /// The memberships of every organization, a second pass after the organizations walk rather than nested in
    /// it: the database gives a stable order to resume in (by id; Clerk's offsets shift between runs), the
    /// checkpoint is one organization id, and `--only memberships` needs no walk of Clerk's organizations. The
    /// organizations are those the database holds live (the organizations walk just brought them up to date)
    /// and, in a dry run, which creates none, those its organizations walk listed.
    pub(super) async fn memberships(
        &self,
        options: Options,
        run: Option<&str>,
        progress: &mut dyn Progress,
        tally: &mut Tally,
    ) -> Result<Off, BackfillError> {
        const KIND: Kind = Kind::Membership;
        let mut checkpoint = self.begin(KIND, options, tally).await?;
        let estimate = self.db.backfill_members_estimate().await?;
        progress.start(KIND, Some(estimate.max(0) as u64));
        // Clerk's counts of the members of each organization walked, summed (`members_of`).
        tally.clerk_count = Some(0);
        let also_seen_by = if options.dry_run {
            dry_run_name(Kind::Organization)
        } else {
            ""
        };
        let mut after = checkpoint.cursor.clone().unwrap_or_default();
        loop {
            let organizations = self
                .db
                .backfill_organizations(&after, also_seen_by, ORGANIZATIONS_PER_READ)
                .await?;
            let Some(last) = organizations.last().cloned() else {
                break;
            };
            for organization in organizations {
                let keeps_seen = checkpoint.keeps_seen;
                if let Some(said) = self
                    .members_of(&organization, keeps_seen, options, progress, tally)
                    .await?
                {
                    // Organizations turned off since they were stored: nothing of them can be read.
                    self.end(KIND, options).await?;
                    return Ok(Some(said));
                }
                checkpoint.cursor = Some(organization);
                checkpoint.scanned = tally.scanned as i64;
                if !options.dry_run {
                    self.db.backfill_save_cursor(walk_name(KIND), &checkpoint).await?;
                }
            }
            after = last;
        }
        if options.prune {
            tally.pruned = self.prune(KIND, options, run, tally).await?;
        }
        self.end(KIND, options).await?;
        Ok(None)
    }

    /// Writes the memberships of one organization, a page at a time. The walk's cursor moves past the
    /// organization only once all are written: an interrupted organization is read again from its start
    /// (rewriting a page is harmless), as an offset kept between runs may have shifted. Only the membership is
    /// written: its embedded organization is the organizations walk's, and its `public_user_data` is too little
    /// of the user to make a `users` row of.
    async fn members_of(
        &self,
        organization: &str,
        keeps_seen: bool,
        options: Options,
        progress: &mut dyn Progress,
        tally: &mut Tally,
    ) -> Result<Off, BackfillError> {
        const KIND: Kind = Kind::Membership;
        let mut offset = 0;
        loop {
            let page = match self.clerk.list_memberships(organization, offset, PAGE_SIZE).await {
                Err(ClerkError::NotFound) => {
                    tracing::info!(
                        organization,
                        "backfill: organization gone from Clerk; its memberships are left to --prune"
                    );
                    return Ok(None);
                }
                Err(e) => match e.organizations_off(false) {
                    Some(said) => return Ok(Some(said)),
                    None => return Err(e.into()),
                },
                Ok((page, total)) => {
                    if offset == 0 {
                        tally.clerk_count = Some(tally.clerk_count.unwrap_or(0) + total);
                    }
                    page
                }
            };
            let full = page.len() == PAGE_SIZE;
            offset += page.len() as u64;
            let changes: Vec<Change> = page
                .into_iter()
                .filter_map(|m| {
                    let clerk_id = m.id.clone();
                    let Some((membership, _)) = m.into_data() else {
                        // Not an error of the run (it would fail on every run until Clerk changes): the row, if
                        // any, stays as it is, and --prune keeps it since Clerk still lists it.
                        tracing::warn!(
                            clerk_id,
                            organization,
                            "backfill: membership not written: Clerk names no member (no public_user_data)"
                        );
                        return None;
                    };
                    Some(Change::Upsert {
                        entity: Entity::Membership(membership),
                        via: Source::Backfill,
                        delivery: None,
                    })
                })
                .collect();
            if !changes.is_empty() {
                self.apply_page(KIND, changes, keeps_seen, None, options, tally).await?;
                progress.page(KIND, tally);
            }
            if !full {
                return Ok(None);
            }
        }
    }
}
