//! Every metric name and label value, in one place. These names are a public interface: the dashboards in
//! `dashboards/`, the alerts and users' own queries depend on them (a test checks the dashboards against them).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const USERS_CREATED: &str = "clerk_sync_users_created_total";
pub const ORGANIZATIONS_CREATED: &str = "clerk_sync_organizations_created_total";
pub const MEMBERSHIPS_CREATED: &str = "clerk_sync_memberships_created_total";
pub const WEBHOOK_EVENTS: &str = "clerk_sync_webhook_events_total";
pub const FALLBACK_REQUESTS: &str = "clerk_sync_fallback_requests_total";
pub const CLERK_API_REQUESTS: &str = "clerk_sync_clerk_api_requests_total";
pub const CLERK_API_DURATION: &str = "clerk_sync_clerk_api_request_duration_seconds";
pub const WEBHOOK_LAG: &str = "clerk_sync_webhook_lag_seconds";
pub const USER_ACTORS: &str = "clerk_sync_user_actors";
pub const USER_ACTOR_FAILURES: &str = "clerk_sync_user_actor_failures_total";
pub const CACHE_ENTRIES: &str = "clerk_sync_cache_entries";
pub const DB_QUERY_DURATION: &str = "clerk_sync_db_query_duration_seconds";
pub const HTTP_DURATION: &str = "http_server_request_duration_seconds";
pub const BUILD_INFO: &str = "clerk_sync_build_info";
pub const READY: &str = "clerk_sync_ready";
pub const HARD_DELETE_REFUSED: &str = "clerk_sync_hard_delete_refused_total";
pub const BACKFILL_USERS: &str = "clerk_sync_backfill_users_total";
pub const BACKFILL_LAST_SUCCESS: &str = "clerk_sync_backfill_last_success_timestamp_seconds";
pub const FORWARD_DELIVERIES: &str = "clerk_sync_forward_deliveries_total";
pub const FORWARD_LAG: &str = "clerk_sync_forward_lag_seconds";
pub const PRUNE_REFUSED: &str = "clerk_sync_prune_refused_total";

/// Every exported metric name (histograms export `_bucket`, `_sum` and `_count` series).
pub const ALL: &[&str] = &[
    USERS_CREATED,
    ORGANIZATIONS_CREATED,
    MEMBERSHIPS_CREATED,
    WEBHOOK_EVENTS,
    FALLBACK_REQUESTS,
    CLERK_API_REQUESTS,
    CLERK_API_DURATION,
    WEBHOOK_LAG,
    USER_ACTORS,
    USER_ACTOR_FAILURES,
    CACHE_ENTRIES,
    DB_QUERY_DURATION,
    HTTP_DURATION,
    BUILD_INFO,
    READY,
    HARD_DELETE_REFUSED,
    BACKFILL_USERS,
    BACKFILL_LAST_SUCCESS,
    FORWARD_DELIVERIES,
    FORWARD_LAG,
    PRUNE_REFUSED,
];

/// Label values of `clerk_sync_webhook_events_total{outcome}`.
pub mod outcome {
    pub const APPLIED: &str = "applied";
    pub const DUPLICATE: &str = "duplicate";
    pub const STALE: &str = "stale";
    pub const IGNORED: &str = "ignored";
    pub const INVALID_SIGNATURE: &str = "invalid_signature";
    pub const INVALID_PAYLOAD: &str = "invalid_payload";
    pub const FAILED: &str = "failed";
    /// Sent by another Clerk instance than the one the database mirrors: recorded, not applied.
    pub const WRONG_INSTANCE: &str = "wrong_instance";
}

/// Label values of `clerk_sync_fallback_requests_total{result}`.
pub mod fallback {
    pub const CACHE_HIT: &str = "cache_hit";
    pub const DB_HIT: &str = "db_hit";
    pub const CREATED: &str = "created";
    pub const NOT_FOUND: &str = "not_found";
    pub const GONE: &str = "gone";
    pub const ERROR: &str = "error";
}

/// Event types that may appear as a label: the three user events, `unknown` when the type could not be read
/// (or the signature did not verify), and `other` for any other type, so a sender cannot create unbounded
/// series.
/// The event types clerk-sync applies (every other type is recorded as ignored).
pub const SYNCED_EVENT_TYPES: &[&str] = &[
    "user.created",
    "user.updated",
    "user.deleted",
    "organization.created",
    "organization.updated",
    "organization.deleted",
    "organizationMembership.created",
    "organizationMembership.updated",
    "organizationMembership.deleted",
];

pub fn event_type_label(event_type: &str) -> &'static str {
    match event_type {
        "user.created" => "user.created",
        "user.updated" => "user.updated",
        "user.deleted" => "user.deleted",
        "organization.created" => "organization.created",
        "organization.updated" => "organization.updated",
        "organization.deleted" => "organization.deleted",
        "organizationMembership.created" => "organizationMembership.created",
        "organizationMembership.updated" => "organizationMembership.updated",
        "organizationMembership.deleted" => "organizationMembership.deleted",
        "unknown" => "unknown",
        _ => "other",
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const LAG_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process (the `metrics` facade is process-wide) and returns its
/// handle. Histograms get explicit buckets, so they render as histograms, not summaries.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(WEBHOOK_LAG.into()), LAG_BUCKETS)
                .and_then(|b| b.set_buckets(LATENCY_BUCKETS));
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                // Only reachable with an empty bucket list, which the constants above are not.
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; clerk-sync metrics go to it");
            }
            describe();
            zero_series();
            gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

/// Registers the known label sets at 0, so dashboards and `rate()` see a series before its first event.
fn zero_series() {
    for source in ["webhook", "fallback", "backfill"] {
        for name in [USERS_CREATED, ORGANIZATIONS_CREATED, MEMBERSHIPS_CREATED] {
            counter!(name, "source" => source).increment(0);
        }
    }
    use fallback::*;
    for result in [CACHE_HIT, DB_HIT, CREATED, NOT_FOUND, GONE, ERROR] {
        counter!(FALLBACK_REQUESTS, "result" => result).increment(0);
    }
    use outcome::*;
    for event_type in SYNCED_EVENT_TYPES.iter().copied().chain(["other"]) {
        for outcome in [
            APPLIED,
            DUPLICATE,
            STALE,
            IGNORED,
            INVALID_PAYLOAD,
            FAILED,
            WRONG_INSTANCE,
        ] {
            counter!(WEBHOOK_EVENTS, "event_type" => event_type, "outcome" => outcome).increment(0);
        }
    }
    counter!(WEBHOOK_EVENTS, "event_type" => "unknown", "outcome" => INVALID_SIGNATURE).increment(0);
    counter!(WEBHOOK_EVENTS, "event_type" => "unknown", "outcome" => INVALID_PAYLOAD).increment(0);
    counter!(HARD_DELETE_REFUSED).increment(0);
    counter!(USER_ACTOR_FAILURES).increment(0);
    for outcome in ["created", "updated", "unchanged", "tombstoned", "pruned", "failed"] {
        counter!(BACKFILL_USERS, "outcome" => outcome).increment(0);
    }
    for outcome in ["delivered", "rejected", "unreachable"] {
        counter!(FORWARD_DELIVERIES, "outcome" => outcome).increment(0);
    }
    gauge!(FORWARD_LAG).set(0.0);
    for kind in ["user", "organization", "membership"] {
        counter!(PRUNE_REFUSED, "kind" => kind).increment(0);
    }
    // 0 until a walk of the whole list succeeds in this process.
    gauge!(BACKFILL_LAST_SUCCESS).set(0.0);
}

fn describe() {
    describe_counter!(
        USERS_CREATED,
        "Users rows created, by the path that created them (webhook, fallback, backfill)."
    );
    describe_counter!(
        ORGANIZATIONS_CREATED,
        "Organizations rows created, by the path that created them (webhook, fallback, backfill)."
    );
    describe_counter!(
        MEMBERSHIPS_CREATED,
        "Organization membership rows created, by the path that created them (webhook, backfill)."
    );
    describe_counter!(WEBHOOK_EVENTS, "Clerk webhook deliveries, by event type and outcome.");
    describe_counter!(
        FALLBACK_REQUESTS,
        "API user lookups, by result (cache_hit, db_hit, created, not_found, gone, error)."
    );
    describe_counter!(
        CLERK_API_REQUESTS,
        "Requests to Clerk's Backend API, by operation and HTTP status (or error)."
    );
    describe_histogram!(
        CLERK_API_DURATION,
        Unit::Seconds,
        "Duration of Clerk Backend API requests, by operation."
    );
    describe_histogram!(
        WEBHOOK_LAG,
        Unit::Seconds,
        "Commit time minus the Clerk event's timestamp."
    );
    describe_gauge!(USER_ACTORS, "Live user actors: users with work running or queued.");
    describe_counter!(
        USER_ACTOR_FAILURES,
        "User actors that failed (a panic in a job); their queued jobs were answered 503."
    );
    describe_counter!(
        BACKFILL_USERS,
        "Users read by backfill or reconciliation, by outcome (created, updated, unchanged, tombstoned, pruned, failed)."
    );
    describe_gauge!(
        BACKFILL_LAST_SUCCESS,
        "Unix time of the last backfill or reconciliation that read Clerk's whole user list."
    );
    describe_counter!(
        FORWARD_DELIVERIES,
        "Attempts to forward a change to the application, by outcome (delivered, rejected: non-2xx, unreachable)."
    );
    describe_gauge!(
        FORWARD_LAG,
        Unit::Seconds,
        "How long the oldest change not yet acknowledged by the application has waited (0 when caught up)."
    );
    describe_counter!(
        PRUNE_REFUSED,
        "Prunes (backfill --prune, reconcile.prune) held back by the brake or by a walk shorter than Clerk's count, \
         by kind (user, organization, membership): nothing of that kind was tombstoned."
    );
    describe_counter!(
        HARD_DELETE_REFUSED,
        "Hard deletes refused by a foreign key of the application; those rows were soft-deleted instead."
    );
    describe_gauge!(CACHE_ENTRIES, "Users held in the in-memory cache.");
    describe_histogram!(
        DB_QUERY_DURATION,
        Unit::Seconds,
        "Duration of database operations, by operation."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Duration of HTTP server requests (OpenTelemetry semantic conventions)."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version label names the running build.");
    describe_gauge!(
        READY,
        "1 when the database is reachable and migrated (what /readyz answers), else 0."
    );
}

/// Seconds as f64 for histograms.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
