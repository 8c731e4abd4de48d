//! The daemon's background upkeep: sampled gauges, the pin, refusal counts, and pruning old bookkeeping.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::cache::UserCache;
use crate::clerk::pin::InstancePin;
use crate::store::refusals::Refusals;
use crate::store::{Db, Store};

/// Keeps the exporter's histograms bounded and the gauges that are sampled rather than pushed current.
pub(super) async fn upkeep(
    handle: PrometheusHandle,
    cache: UserCache,
    db: Arc<Db>,
    pin: Arc<InstancePin>,
    refusals: Arc<Refusals>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        handle.run_upkeep();
        cache.report().await;
        // `clerk-sync pin --replace` (or another replica's first contact) changes the pin under a running daemon.
        if let Err(e) = pin.refresh().await {
            tracing::debug!(error = %e, "could not read the pinned Clerk instance");
        }
        // At most once a minute, whatever the rate of refusals (see `store::refusals`).
        if let Err(e) = refusals.write(&db, false).await {
            tracing::debug!(error = %e, "could not record refused webhooks");
        }
        let ready = tokio::time::timeout(Duration::from_secs(4), db.check_ready()).await;
        let ready = matches!(ready, Ok(Ok(())));
        metrics::gauge!(crate::telemetry::metrics::READY).set(if ready { 1.0 } else { 0.0 });
    }
}

/// Drops changes older than `changes.retention_hours` from the feed.
pub(super) async fn prune_changes(db: Arc<Db>, retention: Duration, interval: Duration) {
    let mut every = tokio::time::interval(interval);
    loop {
        every.tick().await;
        match db.prune_changes(retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned old changes from the feed"),
            Err(e) => tracing::warn!(error = %e, "could not prune the change feed"),
        }
    }
}

/// Forgets processed svix ids after the retention, keeping the deliveries table small.
pub(super) async fn prune_deliveries(db: Arc<Db>, retention: Duration, interval: Duration) {
    let mut every = tokio::time::interval(interval);
    loop {
        every.tick().await;
        match db.prune_deliveries(retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned old delivery records"),
            Err(e) => tracing::warn!(error = %e, "could not prune delivery records"),
        }
    }
}
