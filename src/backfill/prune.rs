//! `--prune`: tombstone the live records a complete walk did not see, once Clerk confirms they are gone.

use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use super::page::seen_name;
use super::{Backfill, BackfillError};
use crate::clerk::{ClerkError, PAGE_SIZE};
use crate::store::{Change, Kind, Outcome, Source, Store};
use crate::telemetry::metrics;

impl Backfill {
    /// Tombstones (soft delete) every live record of `kind` the walk did not see; with `dry_run`, only counts
    /// them. Called only after the walk read Clerk's whole list.
    pub(super) async fn prune(&self, kind: Kind, dry_run: bool) -> Result<u64, BackfillError> {
        let name = seen_name(kind, dry_run);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let (mut after, mut pruned) = (String::new(), 0);
        loop {
            let unseen = self.db.backfill_unseen(kind, name, &after, PAGE_SIZE as i64).await?;
            let Some((last, _)) = unseen.last() else { break };
            after = last.clone();
            let absent = self.confirm_absent(kind, unseen).await?;
            if dry_run || absent.is_empty() {
                pruned += if dry_run { absent.len() as u64 } else { 0 };
                continue;
            }
            let changes: Vec<Change> = absent
                .iter()
                .map(|id| Change::Delete {
                    kind,
                    clerk_id: id.clone(),
                    deleted_at_ms: now_ms,
                    via: Source::Backfill,
                    hard: false,
                    delivery: None,
                })
                .collect();
            let outcomes = self.db.apply(&changes).await?;
            for (id, outcome) in absent.iter().zip(outcomes) {
                if outcome != Outcome::Deleted {
                    continue;
                }
                pruned += 1;
                tracing::info!(
                    clerk_id = id,
                    kind = kind.as_str(),
                    "backfill --prune: absent from Clerk; tombstoned"
                );
                if kind == Kind::User {
                    ::metrics::counter!(metrics::BACKFILL_USERS, "outcome" => "pruned").increment(1);
                }
                if let Some(cache) = &self.cache {
                    cache.invalidate(id).await;
                }
            }
        }
        Ok(pruned)
    }

    /// The unseen records Clerk confirms are gone. The users walk follows a cursor and skips no one. The
    /// organization lists page by offset only, so a deletion during the walk shifts a later record past it: as a
    /// tombstone is for ever, each unseen organization (and each organization of an unseen membership) is asked
    /// about once more. Candidates are few (what webhooks missed), so the requests are few.
    async fn confirm_absent(
        &self,
        kind: Kind,
        unseen: Vec<(String, Option<String>)>,
    ) -> Result<Vec<String>, ClerkError> {
        let mut absent = Vec::with_capacity(unseen.len());
        match kind {
            Kind::User => absent.extend(unseen.into_iter().map(|(id, _)| id)),
            Kind::Organization => {
                for (id, _) in unseen {
                    match self.clerk.get_organization(&id).await {
                        Err(ClerkError::NotFound) => absent.push(id),
                        Ok(_) => kept(kind, &id),
                        Err(e) => return Err(e),
                    }
                }
            }
            Kind::Membership => {
                let mut by_organization: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (id, organization) in unseen {
                    match organization {
                        Some(organization) => by_organization.entry(organization).or_default().push(id),
                        // An adopted row without its organization: Clerk cannot be asked about it.
                        None => tracing::warn!(
                            clerk_id = id,
                            "backfill --prune: membership without organization_clerk_id, Clerk cannot confirm it is \
                             gone; not pruned"
                        ),
                    }
                }
                for (organization, ids) in by_organization {
                    let listed = self.member_ids(&organization).await?;
                    for id in ids {
                        match &listed {
                            Some(listed) if listed.contains(&id) => kept(kind, &id),
                            _ => absent.push(id),
                        }
                    }
                }
            }
        }
        Ok(absent)
    }

    /// Every membership id Clerk lists for `organization`; `None` when Clerk has no such organization (its
    /// memberships went with it).
    async fn member_ids(&self, organization: &str) -> Result<Option<HashSet<String>>, ClerkError> {
        let (mut ids, mut offset) = (HashSet::new(), 0);
        loop {
            let (page, _) = match self.clerk.list_memberships(organization, offset, PAGE_SIZE).await {
                Err(ClerkError::NotFound) => return Ok(None),
                answer => answer?,
            };
            let full = page.len() == PAGE_SIZE;
            offset += page.len() as u64;
            ids.extend(page.into_iter().map(|m| m.id));
            if !full {
                return Ok(Some(ids));
            }
        }
    }
}

fn kept(kind: Kind, clerk_id: &str) {
    tracing::warn!(
        clerk_id,
        kind = kind.as_str(),
        "backfill --prune: Clerk still has it though the walk missed it (its list shifted while read); not pruned"
    );
}
