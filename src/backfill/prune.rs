//! `--prune`: tombstone the live records a complete walk did not see, once Clerk confirms they are gone — and
//! never many at once.
//!
//! Three rails stand between an answer of Clerk's and a tombstone, because an empty or short answer (an outage, a
//! key of another instance, a proxy) must not delete users:
//!
//! - only rows that existed when the walk started are candidates (one made since, a user signing up during the
//!   walk, may be missing from pages read before it existed), and a walk that read clearly fewer records than
//!   Clerk counted at its start prunes nothing;
//! - the brake: a run that would tombstone more than `prune.max_share` of a kind's live rows (or more than
//!   `prune.max_count`, or all of them) tombstones none and fails, saying how to allow it for one run
//!   (`--max-prune N`);
//! - every candidate is asked about once more: users a hundred per request (`GET /v1/users?user_id=…`),
//!   organizations one by one, memberships by their organization's list.
//!
//! And a prune's tombstone is not final: it names its run, is lifted when Clerk shows the record alive, and
//! `clerk-sync undo-prune RUN` takes a whole run back (`store::sql::lift`).

use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use super::page::seen_name;
use super::{walk_name, Backfill, BackfillError, Options, Tally};
use crate::clerk::{ClerkError, BY_ID, PAGE_SIZE};
use crate::store::{Change, Kind, Outcome, Source, Store};
use crate::telemetry::metrics;

/// How much one prune run may tombstone (`[prune]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Brake {
    /// At most this share of a kind's live rows (rounded up).
    pub max_share: f64,
    /// And at most this many.
    pub max_count: u64,
}

impl From<&crate::config::PruneSettings> for Brake {
    fn from(s: &crate::config::PruneSettings) -> Self {
        Brake {
            max_share: s.max_share,
            max_count: s.max_count,
        }
    }
}

impl Brake {
    /// How many of `live` rows a run may tombstone: `max_share` of them rounded up, at most `max_count`, and
    /// never all of them.
    pub fn allows(self, live: u64) -> u64 {
        let share = (live as f64 * self.max_share.clamp(0.0, 1.0)).ceil() as u64;
        share.min(self.max_count).min(live.saturating_sub(1))
    }
}

/// A run's prune id: when it started, and a few digits that tell two runs of the same second apart.
pub fn new_run_id() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil(days as i64);
    let tail = (now.subsec_nanos() ^ std::process::id().rotate_left(16)) & 0xffff;
    format!(
        "prune-{year:04}{month:02}{day:02}-{:02}{:02}{:02}-{tail:04x}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic Gregorian; Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

impl Backfill {
    /// Tombstones (soft delete) the live records of `kind` the walk did not see and Clerk confirms gone, under
    /// run `run`; with `dry_run`, only counts them. Called only after the walk read Clerk's whole list.
    pub(super) async fn prune(
        &self,
        kind: Kind,
        options: Options,
        run: Option<&str>,
        tally: &Tally,
    ) -> Result<u64, BackfillError> {
        let name = seen_name(kind, options.dry_run);
        self.may_prune(kind, name, options, tally).await?;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let (mut after, mut pruned) = (String::new(), 0);
        loop {
            let unseen = self.db.prune_candidates(kind, name, &after, PAGE_SIZE as i64).await?;
            let Some((last, _)) = unseen.last() else { break };
            after = last.clone();
            let absent = self.confirm_absent(kind, unseen).await?;
            if options.dry_run || absent.is_empty() {
                pruned += if options.dry_run { absent.len() as u64 } else { 0 };
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
                    pruned_by: run.map(str::to_owned),
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
                    prune_run = run,
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

    /// Refuses a prune the walk cannot vouch for (it read clearly fewer records than Clerk counted) or the brake
    /// holds back; `--max-prune N` allows up to N candidates for this run instead.
    async fn may_prune(&self, kind: Kind, name: &str, options: Options, tally: &Tally) -> Result<(), BackfillError> {
        let candidates = self.db.prune_candidates_count(kind, name).await?;
        let walk = walk_name(kind);
        let again = format!(
            "if Clerk really deleted them, allow it for one run: clerk-sync backfill --prune --max-prune {candidates}{}",
            if options.only.names(kind) {
                format!(" --only {walk}")
            } else {
                String::new()
            }
        );
        if let Some(allowed) = options.max_prune {
            return match candidates <= allowed {
                true => Ok(()),
                false => Err(refused(
                    kind,
                    format!(
                        "{candidates} {walk} are absent from Clerk's list, more than --max-prune {allowed}; nothing \
                         was tombstoned; {again}"
                    ),
                )),
            };
        }
        if let Some(counted) = tally.clerk_count {
            // Records deleted during the walk shorten the list, but not by this much.
            if tally.scanned + (counted / 100).max(10) < counted {
                return Err(refused(
                    kind,
                    format!(
                        "the walk read {} {walk} where Clerk counted {counted} at its start, so it cannot tell who is \
                         gone; nothing was tombstoned; run it again, or {again}",
                        tally.scanned
                    ),
                ));
            }
        }
        let live = self.db.live_count(kind).await?;
        let allowed = self.brake.allows(live);
        if candidates > allowed {
            return Err(refused(
                kind,
                format!(
                    "would tombstone {candidates} of {live} live {walk} ({:.0} %), more than the brake allows ({allowed}: \
                     prune.max_share {}, prune.max_count {}, never all); nothing was tombstoned; {again}",
                    candidates as f64 * 100.0 / live.max(1) as f64,
                    self.brake.max_share,
                    self.brake.max_count
                ),
            ));
        }
        Ok(())
    }

    /// The candidates Clerk confirms are gone: a list read whole can still miss a record (a cursor or an offset
    /// shifted by a deletion, a proxy), and a tombstone must never hit one Clerk has.
    async fn confirm_absent(
        &self,
        kind: Kind,
        unseen: Vec<(String, Option<String>)>,
    ) -> Result<Vec<String>, ClerkError> {
        let mut absent = Vec::with_capacity(unseen.len());
        match kind {
            Kind::User => {
                for chunk in unseen.chunks(BY_ID) {
                    let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
                    let present: HashSet<String> =
                        self.clerk.users_by_id(&ids).await?.into_iter().map(|u| u.id).collect();
                    for id in ids {
                        match present.contains(id) {
                            true => kept(kind, id),
                            false => absent.push(id.to_owned()),
                        }
                    }
                }
            }
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

fn refused(kind: Kind, why: String) -> BackfillError {
    ::metrics::counter!(metrics::PRUNE_REFUSED, "kind" => kind.as_str()).increment(1);
    BackfillError::PruneRefused(format!("--prune of {}: {why}", walk_name(kind)))
}

fn kept(kind: Kind, clerk_id: &str) {
    tracing::warn!(
        clerk_id,
        kind = kind.as_str(),
        "backfill --prune: Clerk still has it though the walk missed it (its list shifted while read); not pruned"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_brake_allows_a_share_never_all() {
        let brake = Brake {
            max_share: 0.1,
            max_count: 1000,
        };
        assert_eq!(brake.allows(0), 0);
        assert_eq!(brake.allows(1), 0, "never all of them");
        assert_eq!(brake.allows(3), 1, "a tenth, rounded up");
        assert_eq!(brake.allows(100), 10);
        assert_eq!(brake.allows(1_000_000), 1000, "at most max_count");
    }

    #[test]
    fn run_ids_name_their_start() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_428), (2025, 12, 6));
        assert_eq!(civil(11_016), (2000, 2, 29));
        let id = new_run_id();
        assert!(
            id.starts_with("prune-20") && id.len() == "prune-20261206-143000-abcd".len(),
            "{id}"
        );
    }
}
