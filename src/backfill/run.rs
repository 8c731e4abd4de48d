//! One run: the walks in order, and the record that lets an interrupted run continue without walking again
//! what it completed.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::page::dry_run_name;
use super::{walk_name, Backfill, BackfillError, Options, Progress, Summary, Tally, Walked, WALKS};
use crate::store::{Kind, StoreError};
use crate::telemetry::metrics;

impl Backfill {
    /// Takes the walks `options.only` asks for: users, then organizations, then their memberships.
    pub async fn run(&self, options: Options, progress: &mut dyn Progress) -> Result<Summary, BackfillError> {
        let started = Instant::now();
        // Before anything is read or written: the key must be the pinned instance's.
        self.pin.check_key(&self.clerk).await?;
        let mut summary = Summary {
            prune_run: (options.prune && !options.dry_run).then(super::new_run_id),
            ..Summary::default()
        };
        let run_id = summary.prune_run.clone();
        let run_id = run_id.as_deref();
        let mut run = Run::open(self, options).await?;
        // What Clerk said when it turned the organizations walk down: the memberships walk is then skipped too.
        let mut organizations_off: Option<String> = None;
        for kind in WALKS.into_iter().filter(|k| options.only.contains(*k)) {
            let tally = summary.of_mut(kind);
            if run.done.contains(&kind) {
                tally.walked = Walked::Earlier;
                tracing::info!(
                    walk = walk_name(kind),
                    "backfill: completed by the interrupted run this one continues; not walked again"
                );
                continue;
            }
            let off = match (kind, &organizations_off) {
                (Kind::User, _) => self.users(options, run_id, progress, tally).await.map(|()| None)?,
                (_, Some(said)) => Some(said.clone()),
                (Kind::Organization, None) => self.organizations(options, run_id, progress, tally).await?,
                (Kind::Membership, None) => self.memberships(options, run_id, progress, tally).await?,
            };
            match off {
                Some(said) => {
                    *tally = Tally {
                        walked: Walked::NotEnabled,
                        ..Tally::default()
                    };
                    if options.only.names(kind) {
                        return Err(BackfillError::NotEnabled(format!(
                            "{}: organizations are not enabled on this Clerk instance (Clerk answered {said}); \
                             turn them on in Clerk's dashboard, or leave {} out of --only",
                            walk_name(kind),
                            walk_name(kind)
                        )));
                    }
                    if organizations_off.is_none() {
                        tracing::info!(
                            clerk_said = said.as_str(),
                            "backfill: organizations are not enabled on this Clerk instance; organizations and \
                             memberships skipped"
                        );
                    }
                    organizations_off = Some(said);
                }
                None => log(kind, tally, options.dry_run),
            }
            run.completed(self, kind).await?;
        }
        run.finish(self).await?;
        if !options.dry_run {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            ::metrics::gauge!(metrics::BACKFILL_LAST_SUCCESS).set(now);
        }
        summary.duration = started.elapsed();
        Ok(summary)
    }
}

/// A run's own checkpoint: the walks it completed, under a name made of the walks it takes and `--prune`
/// (`run:users,organizations,memberships:prune`). A complete walk forgets its own checkpoint, so without this a
/// run that failed in its memberships walk would read every user again when run again. A run asking for other
/// walks, or for `--prune` where the failed one did not, is another run: it skips nothing (a walk completed
/// without `--prune` kept no seen ids to prune by). A dry run keeps none.
struct Run {
    name: Option<String>,
    done: Vec<Kind>,
}

impl Run {
    async fn open(backfill: &Backfill, options: Options) -> Result<Run, StoreError> {
        let db = &backfill.db;
        if options.dry_run {
            // Bookkeeping a failed dry run left behind must not count as seen by this one.
            for kind in WALKS {
                db.backfill_finish(dry_run_name(kind)).await?;
            }
            return Ok(Run {
                name: None,
                done: Vec::new(),
            });
        }
        let walks: Vec<&str> = WALKS
            .into_iter()
            .filter(|k| options.only.contains(*k))
            .map(walk_name)
            .collect();
        let name = format!("run:{}{}", walks.join(","), if options.prune { ":prune" } else { "" });
        let done = match db.backfill_checkpoint(&name).await? {
            Some(checkpoint) if !options.restart => checkpoint
                .cursor
                .unwrap_or_default()
                .split(',')
                .filter_map(|walk| WALKS.into_iter().find(|k| walk_name(*k) == walk))
                .collect(),
            _ => {
                db.backfill_start(&name, false).await?;
                Vec::new()
            }
        };
        Ok(Run { name: Some(name), done })
    }

    async fn completed(&mut self, backfill: &Backfill, kind: Kind) -> Result<(), StoreError> {
        self.done.push(kind);
        let Some(name) = &self.name else { return Ok(()) };
        let checkpoint = crate::store::backfill::Checkpoint {
            cursor: Some(self.done.iter().map(|k| walk_name(*k)).collect::<Vec<_>>().join(",")),
            scanned: self.done.len() as i64,
            keeps_seen: false,
        };
        backfill.db.backfill_save_cursor(name, &checkpoint).await
    }

    async fn finish(self, backfill: &Backfill) -> Result<(), StoreError> {
        match &self.name {
            Some(name) => backfill.db.backfill_finish(name).await,
            None => {
                for kind in WALKS {
                    backfill.db.backfill_finish(dry_run_name(kind)).await?;
                }
                Ok(())
            }
        }
    }
}

/// One line per walk, so a run's log tells what each walk did (only the users walk has its own metric).
fn log(kind: Kind, t: &Tally, dry_run: bool) {
    tracing::info!(
        walk = walk_name(kind),
        dry_run,
        resumed = t.resumed(),
        scanned = t.scanned,
        created = t.created,
        updated = t.updated,
        unchanged = t.unchanged,
        pruned = t.pruned,
        skipped_tombstoned = t.skipped_tombstoned,
        failed = t.failed,
        "backfill: walk complete"
    );
}
