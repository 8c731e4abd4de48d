//! Reconciliation inside `serve`: the backfill of every walk (users, organizations, memberships), run every
//! `reconcile.interval` by one replica at a time.

use std::time::Duration;

use super::{walk_name, Backfill, Options, Quiet, Walked, WALKS};

/// The advisory lock every replica competes for.
const LOCK: &str = "clerk-sync reconcile";

/// Runs forever (the caller aborts it on shutdown): one reconcile every `every`, the first one `every` after
/// start, so a fleet restart does not walk Clerk's list at once.
pub async fn every(backfill: Backfill, every: Duration, prune: bool) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let lock = match backfill.db.try_exclusive(LOCK).await {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                tracing::info!("reconcile: another replica is running it");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reconcile: cannot take its lock; trying at the next interval");
                continue;
            }
        };
        let options = Options {
            prune,
            ..Options::default()
        };
        match backfill.run(options, &mut Quiet).await {
            Ok(summary) => {
                for kind in WALKS {
                    let t = summary.of(kind);
                    if t.created + t.updated + t.pruned > 0 {
                        tracing::warn!(
                            walk = walk_name(kind),
                            created = t.created,
                            updated = t.updated,
                            pruned = t.pruned,
                            scanned = t.scanned,
                            "reconcile fixed records that webhooks missed: check the webhook endpoint (and its \
                             subscribed events) in Clerk's dashboard"
                        );
                    } else if matches!(t.walked, Walked::Fresh | Walked::Resumed) {
                        tracing::info!(
                            walk = walk_name(kind),
                            scanned = t.scanned,
                            "reconcile: the table matches Clerk"
                        );
                    }
                }
            }
            Err(super::BackfillError::PruneRefused(why)) => {
                tracing::error!(
                    refusal = why.as_str(),
                    "reconcile.prune refused: nothing was tombstoned (clerk_sync_prune_refused_total, alert \
                     ClerkSyncPruneRefused); every reconcile refuses until the cause is gone or a backfill --prune \
                     --max-prune N run allows it"
                );
                // For `clerk-sync doctor`: one row per refused run, which comes at most once per interval.
                if let Err(e) = backfill.db.add_refusals(crate::store::refusals::PRUNE_REFUSED, 1).await {
                    tracing::warn!(error = %e, "could not record the refused prune");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconcile failed; the next one continues where it stopped"),
        }
        lock.release().await;
    }
}
