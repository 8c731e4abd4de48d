//! Reconciliation inside `serve`: the backfill, run every `reconcile.interval` by one replica at a time.

use std::time::Duration;

use super::{Backfill, Options, Quiet};

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
            Ok(s) if s.created + s.updated + s.pruned > 0 => tracing::warn!(
                created = s.created,
                updated = s.updated,
                pruned = s.pruned,
                scanned = s.scanned,
                "reconcile fixed users that webhooks missed: check the webhook endpoint in Clerk's dashboard"
            ),
            Ok(s) => tracing::info!(scanned = s.scanned, "reconcile: the table matches Clerk"),
            Err(e) => tracing::warn!(error = %e, "reconcile failed; the next one continues where it stopped"),
        }
        lock.release().await;
    }
}
