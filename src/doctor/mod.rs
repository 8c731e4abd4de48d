//! `clerk-sync doctor`: walks the troubleshooting list for the operator — is the webhook configured, did it
//! fire, is the fallback doing all the work, is the Clerk key right, how far apart are Clerk and the table — and
//! prints one line per check with what to do. It reads the configuration as `serve` does, writes nothing, and
//! answers in bounded time: every database query shares one deadline, every Clerk call has its own.

mod clerk;
mod database;
mod load;
pub mod report;

use std::time::Duration;

pub use load::{load, Loaded};
use report::{Check, Report};

use crate::config::Settings;

/// How long the database checks may take together (a connection that stalls fails them, it does not hang).
const DATABASE_DEADLINE: Duration = Duration::from_secs(20);

/// Runs the checks, prints them (text, or one JSON document with `json`) and returns the exit code: 0 when none
/// failed (warnings allowed), 1 otherwise.
pub async fn run(loaded: Loaded, json: bool) -> i32 {
    let report = match loaded.settings {
        Ok(settings) => diagnose(&settings, loaded.secret_problem).await,
        Err(e) => Report::new(vec![Check::fail(
            "config",
            e.to_string(),
            "fix the key it names (config/default.toml documents each); `clerk-sync check-config` prints the \
             effective configuration",
        )]),
    };
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    report.exit_code()
}

/// Every check, in the order they are shown.
pub async fn diagnose(settings: &Settings, secret_problem: Option<String>) -> Report {
    let mut checks = vec![signing_secret(settings, secret_problem)];
    let deadline = tokio::time::Instant::now() + DATABASE_DEADLINE;
    // Clerk is asked while the database is read.
    let database = async {
        let (reachable, db) = database::connect(settings, deadline).await;
        let inspection = match &db {
            Some(db) => database::inspect(db, settings, deadline).await,
            None => database::Inspection::default(),
        };
        if let Some(db) = db {
            db.close().await;
        }
        (reachable, inspection)
    };
    let ((reachable, inspection), answers) = tokio::join!(database, clerk::ask(settings));
    checks.push(reachable);
    checks.extend(inspection.tables);
    checks.extend(clerk::judge(
        settings,
        answers,
        inspection.pinned.as_ref(),
        inspection.live_users,
    ));
    checks.extend(inspection.feed);
    Report::new(checks)
}

fn signing_secret(settings: &Settings, problem: Option<String>) -> Check {
    let dashboard = "Clerk Dashboard → Webhooks → your endpoint → Signing Secret (whsec_…)";
    match problem {
        Some(problem) => Check::fail(
            "signing_secret",
            format!("the webhook signing secret {problem}"),
            format!("copy it again from {dashboard}, whole"),
        ),
        None if !settings.clerk.webhook_signing_secret.is_set() => Check::fail(
            "signing_secret",
            "CLERK_WEBHOOK_SIGNING_SECRET is not set: every webhook is answered 503",
            format!("set it to the endpoint's secret: {dashboard}"),
        ),
        None => Check::ok("signing_secret", "set, and it decodes"),
    }
}
