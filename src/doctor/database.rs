//! The doctor's database checks: reachable, migrated, `users` adopted, webhooks received and refused, users
//! created by path, the change feed and forwarding, refused prunes. Read-only: a missing SQLite file is not
//! created, nothing is migrated or pinned.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::report::{ago, Check};
use crate::config::Settings;
use crate::store::diagnostics::{self, Migrations};
use crate::store::instance::Pinned;
use crate::store::refusals::{BAD_SIGNATURE, PRUNE_REFUSED};
use crate::store::{Db, Kind, StoreError};

/// The columns clerk-sync writes in `users` (both migrations add them to an adopted table).
const USERS_COLUMNS: &[&str] = &[
    "clerk_id",
    "email",
    "first_name",
    "last_name",
    "name",
    "username",
    "image_url",
    "phone_number",
    "external_id",
    "public_metadata",
    "banned",
    "last_sign_in_at",
    "clerk_created_at",
    "data",
    "created_via",
    "updated_via",
    "clerk_updated_at",
    "deleted_at",
    "created_at",
    "updated_at",
];

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
/// The oldest unforwarded change may wait this long before forwarding counts as stuck (`ClerkSyncForwardingStuck`).
const FORWARD_STUCK_SECS: f64 = 300.0;
/// Changes waiting less than this are in flight, not lag.
const FORWARD_BUSY_SECS: f64 = 60.0;

const MIGRATE: &str = "run `clerk-sync migrate` (`serve` applies them at start) with this DATABASE_URL";
const ENDPOINT: &str = "in Clerk Dashboard → Webhooks, the endpoint's URL must be https://<your host>/webhooks/clerk, \
     subscribed to user.created, user.updated and user.deleted, and its Message Attempts should show 2xx; \
     `clerk-sync send-test-event` checks this daemon's side";

/// What the database showed, for the checks that need it beside Clerk's answers.
#[derive(Debug, Default)]
pub struct Inspection {
    /// Migrations, `users`, webhooks and creations.
    pub tables: Vec<Check>,
    /// The change feed, forwarding and refused prunes.
    pub feed: Vec<Check>,
    /// The pinned instance, when it could be read (`Some(None)`: nothing pinned yet).
    pub pinned: Option<Option<Pinned>>,
    /// Live users in the table, when they could be counted.
    pub live_users: Option<u64>,
}

/// Connects as the daemon would, without creating a missing SQLite file.
pub async fn connect(settings: &Settings, deadline: Instant) -> (Check, Option<Db>) {
    let backend = settings.database.backend();
    if let Some(file) = diagnostics::sqlite_file(&settings.database).filter(|f| !f.exists()) {
        return (
            Check::fail(
                "database",
                format!("the SQLite file {} does not exist", file.display()),
                "check DATABASE_URL and the directory you run this in (a relative path is relative to it); \
                 `clerk-sync migrate` or `serve` creates the file",
            ),
            None,
        );
    }
    match within(deadline, Db::connect(&settings.database)).await {
        Ok(db) => (Check::ok("database", format!("reachable ({backend})")), Some(db)),
        Err(e) => (
            Check::fail(
                "database",
                format!("cannot connect ({backend}): {e}"),
                "check DATABASE_URL (host, port, user, password; `?sslmode=require` for Supabase) and that the \
                 database is up and reachable from here",
            ),
            None,
        ),
    }
}

/// Everything else the database can tell, each query within what is left until `deadline`.
pub async fn inspect(db: &Db, settings: &Settings, deadline: Instant) -> Inspection {
    let mut out = Inspection::default();
    let migrations = within(deadline, db.migrations()).await;
    let columns = within(deadline, db.table_columns("users")).await;
    let migrated = matches!(migrations, Ok(m) if m.applied >= m.expected as i64);
    out.tables.push(migrations_check(migrations));
    out.tables.push(users_check(columns));
    if !migrated {
        // The daemon's own tables may not exist yet: the failed check above says what to do.
        return out;
    }
    out.pinned = within(deadline, db.pinned_instance()).await.ok();
    out.live_users = within(deadline, db.live_count(Kind::User)).await.ok();

    let retention = settings.webhooks.delivery_retention_hours;
    out.tables.push(match within(deadline, db.last_delivery()).await {
        Ok(Some(last)) => Check::ok(
            "last_webhook",
            format!("{}: {} ({})", ago(last.age_secs), last.event_type, last.outcome),
        ),
        Ok(None) => Check::warn(
            "last_webhook",
            format!("none received in the last {retention} h (deliveries are kept that long)"),
            format!("if users signed up or changed since, Clerk is not delivering here: {ENDPOINT}"),
        ),
        Err(e) => read_failed("last_webhook", &e),
    });
    let hour = within(deadline, db.deliveries_by_outcome(HOUR)).await;
    let refused = within(deadline, db.refusals_within(HOUR)).await;
    out.tables.push(bad_signatures(hour, refused));
    let day = within(deadline, db.deliveries_by_outcome(DAY)).await;
    out.tables.push(other_instance(day, out.pinned.as_ref()));
    out.tables
        .push(creations(within(deadline, db.users_created_by_path(DAY)).await));

    if settings.changes.enabled {
        let feed = within(deadline, db.feed_state()).await;
        out.feed.push(match &feed {
            Ok(f) if f.head == 0 => Check::ok("feed", "no change yet"),
            Ok(f) => Check::ok(
                "feed",
                match f.last_age_secs {
                    Some(age) => format!("head seq {}, newest change {}", f.head, ago(age)),
                    None => format!("head seq {} (older changes pruned)", f.head),
                },
            ),
            Err(e) => read_failed("feed", e),
        });
        if settings.forward.url.is_set() {
            let state = within(deadline, db.forward_state(crate::feed::forward::NAME)).await;
            out.feed.push(forwarding(state, feed.ok().map(|f| f.pruned_through)));
        }
    } else if settings.forward.url.is_set() {
        out.feed.push(Check::warn(
            "forwarding",
            "forward.url is set, but changes.enabled = false: nothing is forwarded",
            "set changes.enabled = true (CLERK_SYNC_CHANGES__ENABLED) to forward changes",
        ));
    }
    let refused_prunes = within(deadline, db.refusals_within(DAY)).await;
    if let Some(check) = prune(refused_prunes, settings.reconcile.prune) {
        out.feed.push(check);
    }
    out
}

fn migrations_check(migrations: Result<Migrations, String>) -> Check {
    match migrations {
        Ok(m) if m.applied >= m.expected as i64 => Check::ok("migrations", format!("all {} applied", m.expected)),
        Ok(m) => Check::fail(
            "migrations",
            format!("{} of {} applied", m.applied, m.expected),
            MIGRATE,
        ),
        Err(e) => read_failed("migrations", &e),
    }
}

fn users_check(columns: Result<Vec<String>, String>) -> Check {
    match columns {
        Ok(columns) if columns.is_empty() => Check::fail("users_table", "there is no users table yet", MIGRATE),
        Ok(columns) => {
            let missing: Vec<&str> = USERS_COLUMNS
                .iter()
                .copied()
                .filter(|c| !columns.iter().any(|have| have == c))
                .collect();
            match missing.as_slice() {
                [] => Check::ok("users_table", "has clerk-sync's columns"),
                _ => Check::fail(
                    "users_table",
                    format!("users lacks clerk-sync's columns {}", missing.join(", ")),
                    "`clerk-sync migrate` adopts the table: it adds them and keeps your columns and rows",
                ),
            }
        }
        Err(e) => read_failed("users_table", &e),
    }
}

/// Refused signatures in the last hour: a failure when none verified meanwhile (every delivery is refused: the
/// secret is not the endpoint's), a warning when some did (a probe, or an old secret still in use somewhere).
fn bad_signatures(hour: Result<HashMap<String, i64>, String>, refused: Result<HashMap<String, i64>, String>) -> Check {
    let (verified, refused) = match (hour, refused) {
        (Ok(hour), Ok(refused)) => (
            hour.values().sum::<i64>(),
            refused.get(BAD_SIGNATURE).copied().unwrap_or(0),
        ),
        (Err(e), _) | (_, Err(e)) => return read_failed("bad_signatures", &e),
    };
    let hint = "CLERK_WEBHOOK_SIGNING_SECRET must be the Signing Secret of the Clerk endpoint that points here \
                (Clerk Dashboard → Webhooks → the endpoint; update it after a rotation), and this machine's clock \
                must be right within 5 minutes; else someone without the secret is posting to /webhooks/clerk";
    match (refused, verified) {
        (0, _) => Check::ok("bad_signatures", "none refused in the last hour"),
        (r, 0) => Check::fail(
            "bad_signatures",
            format!("{r} refused for a bad signature in the last hour, none verified"),
            hint,
        ),
        (r, v) => Check::warn(
            "bad_signatures",
            format!("{r} refused for a bad signature in the last hour ({v} verified)"),
            hint,
        ),
    }
}

fn other_instance(day: Result<HashMap<String, i64>, String>, pinned: Option<&Option<Pinned>>) -> Check {
    let count = match day {
        Ok(day) => day.get("wrong_instance").copied().unwrap_or(0),
        Err(e) => return read_failed("other_instance", &e),
    };
    if count == 0 {
        return Check::ok(
            "other_instance",
            "no webhook of another Clerk instance in the last 24 h",
        );
    }
    let mirrors = match pinned {
        Some(Some(p)) => format!(
            "{} ({})",
            p.instance_id,
            p.environment.as_deref().unwrap_or("environment not known yet")
        ),
        _ => "the pinned instance".into(),
    };
    Check::fail(
        "other_instance",
        format!(
            "{count} {} of another Clerk instance in the last 24 h, not applied: this database mirrors {mirrors}",
            if count == 1 { "webhook" } else { "webhooks" }
        ),
        "another instance's endpoint (another environment, say) signs with the secret this daemon holds: give each \
         endpoint its own secret and CLERK_WEBHOOK_SIGNING_SECRET this instance's; if this database should mirror \
         the other instance, `clerk-sync pin --replace` with its key, then `clerk-sync backfill`",
    )
}

/// Users created by path over 24 h; the webhook should create nearly all sign-ups (a backfill is an import).
fn creations(created: Result<HashMap<String, i64>, String>) -> Check {
    let created = match created {
        Ok(created) => created,
        Err(e) => return read_failed("creations", &e),
    };
    let by = |path: &str| created.get(path).copied().unwrap_or(0);
    let (webhook, fallback, backfill) = (by("webhook"), by("fallback"), by("backfill"));
    let detail = format!("users created by webhook {webhook}, fallback {fallback}, backfill {backfill}");
    if fallback > webhook {
        Check::warn(
            "creations",
            format!("{detail}: the fallback created more users than the webhook"),
            format!("the webhook is probably not configured or not reaching this daemon: {ENDPOINT}"),
        )
    } else {
        Check::ok("creations", detail)
    }
}

fn forwarding(state: Result<diagnostics::ForwardState, String>, pruned_through: Option<i64>) -> Check {
    let state = match state {
        Ok(state) => state,
        Err(e) => return read_failed("forwarding", &e),
    };
    let hint = "your application's forward.url must answer 2xx within forward.timeout_ms (the daemon's log and \
                clerk_sync_forward_deliveries_total{outcome} say whether it refuses or does not answer), and \
                `serve` must be running";
    if let Some(pruned) = pruned_through.filter(|p| state.cursor < *p) {
        return Check::fail(
            "forwarding",
            format!(
                "changes up to seq {pruned} were pruned (changes.retention_hours) before they were forwarded \
                 (acknowledged up to seq {})",
                state.cursor
            ),
            hint,
        );
    }
    match (state.behind, state.oldest_age_secs) {
        (0, _) | (_, None) => Check::ok(
            "forwarding",
            format!("caught up (acknowledged up to seq {})", state.cursor),
        ),
        (n, Some(age)) if age < FORWARD_BUSY_SECS => Check::ok("forwarding", format!("{n} changes in flight")),
        (n, Some(age)) => {
            let detail = format!(
                "{n} changes not acknowledged, the oldest written {} (acknowledged up to seq {})",
                ago(age),
                state.cursor
            );
            if age < FORWARD_STUCK_SECS {
                Check::warn("forwarding", detail, hint)
            } else {
                Check::fail("forwarding", detail, hint)
            }
        }
    }
}

/// Refused `reconcile.prune` runs over 24 h: shown when there were some, or when `reconcile.prune` is on.
fn prune(refused: Result<HashMap<String, i64>, String>, configured: bool) -> Option<Check> {
    let count = match refused {
        Ok(refused) => refused.get(PRUNE_REFUSED).copied().unwrap_or(0),
        Err(e) => return Some(read_failed("prune", &e)),
    };
    match count {
        0 if configured => Some(Check::ok("prune", "no prune refused by the brake in the last 24 h")),
        0 => None,
        n => Some(Check::fail(
            "prune",
            format!("reconcile.prune was refused {n} times in the last 24 h; nothing was tombstoned"),
            "the daemon's log says how many it would have removed: usually Clerk answered with another instance's \
             data or an empty list; if Clerk really deleted them, run `clerk-sync backfill --prune --max-prune N` once",
        )),
    }
}

fn read_failed(check: &'static str, e: &str) -> Check {
    Check::fail(
        check,
        format!("cannot read it: {e}"),
        "check that the database is up and DATABASE_URL's user may read clerk-sync's tables",
    )
}

/// `work`, or why it gave no answer before `deadline`.
async fn within<T>(deadline: Instant, work: impl Future<Output = Result<T, StoreError>>) -> Result<T, String> {
    match tokio::time::timeout_at(deadline, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the database did not answer in time".into()),
    }
}
