//! The doctor's Clerk checks: the secret key accepted and of the pinned instance (`GET /v1/instance`), JWKS
//! reachable (`GET /v1/jwks`), and Clerk's user count against the table's (`GET /v1/users/count`). The three calls
//! run at once, each within a bounded time.

use std::future::Future;
use std::time::Duration;

use super::report::Check;
use crate::clerk::pin::{environment_refusal, instance_refusal, PinError};
use crate::clerk::{ClerkClient, ClerkError, ClerkInstance};
use crate::config::Settings;
use crate::store::instance::Pinned;

/// The retry budget of the doctor's calls: long enough for a retry after a blip, short enough to answer soon.
const RETRY_BUDGET_MS: u64 = 3000;

/// Why a call gave no answer.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Clerk(#[from] ClerkError),
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("cannot build an HTTP client: {0}")]
    Client(String),
}

/// What Clerk answered; `None` where nothing was asked (no secret key).
#[derive(Debug, Default)]
pub struct Answers {
    instance: Option<Result<ClerkInstance, Failure>>,
    jwks: Option<Result<usize, Failure>>,
    count: Option<Result<u64, Failure>>,
    /// The key's environment by its prefix.
    key_env: Option<&'static str>,
}

/// Asks Clerk, when a secret key is configured.
pub async fn ask(settings: &Settings) -> Answers {
    if !settings.clerk.secret_key.is_set() {
        return Answers::default();
    }
    let mut clerk_settings = settings.clerk.clone();
    clerk_settings.retry_budget_ms = clerk_settings.retry_budget_ms.min(RETRY_BUDGET_MS);
    let limit = Duration::from_millis(
        clerk_settings.connect_timeout_ms + clerk_settings.request_timeout_ms + clerk_settings.retry_budget_ms,
    );
    let clerk = match ClerkClient::new(&clerk_settings) {
        Ok(clerk) => clerk,
        Err(e) => {
            let why = Err(Failure::Client(e.to_string()));
            return Answers {
                instance: Some(why),
                ..Answers::default()
            };
        }
    };
    let (instance, jwks, count) = tokio::join!(
        bounded(limit, clerk.instance()),
        bounded(limit, async { clerk.jwks().await.map(|set| set.keys.len()) }),
        bounded(limit, clerk.count_users()),
    );
    Answers {
        instance: Some(instance),
        jwks: Some(jwks),
        count: Some(count),
        key_env: clerk.key_environment(),
    }
}

/// The checks, given what Clerk answered and what the database showed (`pinned`: `None` when it could not be read).
pub fn judge(
    settings: &Settings,
    answers: Answers,
    pinned: Option<&Option<Pinned>>,
    live_users: Option<u64>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let api = settings.clerk.api_url.as_str().trim_end_matches('/');
    let unreachable_hint = format!(
        "check CLERK_API_URL ({api}) and that this machine reaches it (proxy, firewall, DNS); Clerk's status: \
         https://status.clerk.com"
    );
    let Some(instance) = answers.instance else {
        checks.push(Check::warn(
            "clerk_key",
            "CLERK_SECRET_KEY is not set: users missing from the table are not fetched from Clerk, and backfill \
             cannot run",
            "set CLERK_SECRET_KEY to the secret key (sk_live_… or sk_test_…) from Clerk Dashboard → API keys",
        ));
        checks.push(match settings.clerk.jwt_key.trim().is_empty() {
            true => Check::warn(
                "jwks",
                "neither CLERK_JWT_KEY nor CLERK_SECRET_KEY is set: session tokens (/v1/me) cannot be verified",
                "set CLERK_JWT_KEY (Clerk Dashboard → API keys → JWT public key) or CLERK_SECRET_KEY",
            ),
            false => Check::ok(
                "jwks",
                "CLERK_JWT_KEY is set: session tokens are verified without Clerk",
            ),
        });
        return checks;
    };
    let mut same_instance = false;
    checks.push(match instance {
        Err(e) => key_refused(&e, &unreachable_hint),
        Ok(instance) => {
            let pin = pinned.and_then(Option::as_ref);
            let refusal = pin.and_then(|p| {
                environment_refusal(p, answers.key_env).or_else(|| instance_refusal(p, &instance))
            });
            same_instance = refusal.is_none();
            match (refusal, pinned) {
                (Some(refusal), _) => other_instance(refusal),
                (None, Some(Some(_))) => Check::ok(
                    "clerk_key",
                    format!(
                        "accepted: instance {} ({}), the one this database mirrors",
                        instance.id, instance.environment_type
                    ),
                ),
                (None, Some(None)) => Check::ok(
                    "clerk_key",
                    format!(
                        "accepted: instance {} ({}); nothing is pinned yet (the first serve, backfill or webhook pins it)",
                        instance.id, instance.environment_type
                    ),
                ),
                (None, None) => Check::ok(
                    "clerk_key",
                    format!(
                        "accepted: instance {} ({}); the pinned instance could not be read",
                        instance.id, instance.environment_type
                    ),
                ),
            }
        }
    });
    checks.push(match answers.jwks {
        Some(Ok(0)) => Check::fail(
            "jwks",
            "Clerk's JWKS holds no key",
            "session tokens (/v1/me) cannot be verified; set CLERK_JWT_KEY, or ask Clerk's support",
        ),
        Some(Ok(n)) => Check::ok("jwks", format!("reachable, {n} signing key(s)")),
        Some(Err(e)) => Check::fail(
            "jwks",
            format!("GET /v1/jwks failed: {e}"),
            format!("session tokens (/v1/me) cannot be verified unless CLERK_JWT_KEY is set; {unreachable_hint}"),
        ),
        None => Check::warn("jwks", "not asked", unreachable_hint.clone()),
    });
    // Another instance's count says nothing about this table.
    if same_instance {
        if let (Some(count), Some(live)) = (answers.count, live_users) {
            checks.push(drift(count, live));
        }
    }
    checks
}

/// Clerk's count against the table's live users: a difference within a small tolerance is deliveries in flight.
fn drift(count: Result<u64, Failure>, live: u64) -> Check {
    let clerk = match count {
        Ok(clerk) => clerk,
        Err(e) => {
            return Check::fail(
                "user_count",
                format!("GET /v1/users/count failed: {e}"),
                "try again; if it persists, check the key and CLERK_API_URL",
            )
        }
    };
    let tolerance = (clerk / 100).max(2);
    let detail = format!("Clerk has {clerk} users, the table {live} live");
    match clerk.abs_diff(live) {
        0 => Check::ok("user_count", detail),
        d if d <= tolerance => Check::ok(
            "user_count",
            format!("{detail} (within {tolerance}: deliveries in flight)"),
        ),
        _ if clerk > live => Check::fail(
            "user_count",
            format!("{detail}: {} missing", clerk - live),
            "run `clerk-sync backfill` to bring them in, and check the webhook (the `last webhook` and `creations` \
             lines): a working webhook keeps the table complete",
        ),
        _ => Check::fail(
            "user_count",
            format!("{detail}: {} more than Clerk", live - clerk),
            "users deleted in Clerk whose user.deleted never arrived (or rows adopted from before clerk-sync): \
             `clerk-sync backfill --prune` tombstones those Clerk no longer has, under its brake",
        ),
    }
}

fn key_refused(e: &Failure, unreachable_hint: &str) -> Check {
    let hint = match e {
        Failure::Clerk(ClerkError::Refused { status: 401 | 403, .. }) => {
            "copy the secret key of this application's instance (sk_live_… or sk_test_…) from Clerk Dashboard → API \
             keys into CLERK_SECRET_KEY"
        }
        Failure::Clerk(ClerkError::RateLimited(_)) => {
            "the key's rate limit is spent (by this daemon or your application): try again in a minute"
        }
        _ => unreachable_hint,
    };
    Check::fail("clerk_key", format!("GET /v1/instance failed: {e}"), hint)
}

/// A key Clerk accepts, of another instance than the database mirrors.
fn other_instance(refusal: PinError) -> Check {
    let (detail, pinned) = match refusal {
        PinError::OtherInstance {
            pinned,
            pinned_env,
            key_instance,
            key_env,
        } => (
            format!(
                "CLERK_SECRET_KEY belongs to instance {key_instance} ({key_env}), but this database mirrors {pinned} \
                 ({pinned_env})"
            ),
            pinned,
        ),
        PinError::OtherEnvironment {
            pinned,
            pinned_env,
            key_env,
            prefix,
        } => (
            format!(
                "CLERK_SECRET_KEY is a {key_env} key ({prefix}…), but this database mirrors {pinned} ({pinned_env})"
            ),
            pinned,
        ),
        other => {
            return Check::fail(
                "clerk_key",
                other.to_string(),
                "`clerk-sync pin` shows the pin and the key's",
            )
        }
    };
    Check::fail(
        "clerk_key",
        detail,
        format!(
            "serve, backfill and reconcile refuse this key: use the key of {pinned}; or, if this database is to \
             mirror the key's instance from now on, `clerk-sync pin --replace`, then `clerk-sync backfill`"
        ),
    )
}

/// `work`, or why it gave no answer within `limit`.
async fn bounded<T>(limit: Duration, work: impl Future<Output = Result<T, ClerkError>>) -> Result<T, Failure> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Failure::Timeout(limit)),
    }
}
