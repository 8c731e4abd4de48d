//! The subcommands behind `main`: each returns the process exit code.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::backfill::BackfillError;
use crate::config::Settings;
use crate::store::{Db, Kind};
use crate::webhook::sample::{self, SampleType};
use crate::Application;

/// Exit code for configuration errors (sysexits EX_CONFIG).
pub const EX_CONFIG: i32 = 78;
/// Exit code for an unreachable dependency (sysexits EX_UNAVAILABLE).
pub const EX_UNAVAILABLE: i32 = 69;

/// `clerk-sync serve`: migrate, then serve until SIGTERM / ctrl-c.
pub async fn serve(settings: Settings) -> i32 {
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => return fail(&e.to_string(), e.exit_code()),
    };
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => 0,
        Err(e) => fail(&e.to_string(), e.exit_code()),
    }
}

/// `clerk-sync migrate`: apply pending migrations and exit.
pub async fn migrate(settings: Settings) -> i32 {
    let db = match Db::connect(&settings.database).await {
        Ok(db) => db,
        Err(e) => return fail(&format!("database.url (DATABASE_URL): {e}"), EX_UNAVAILABLE),
    };
    let code = match db.migrate(settings.supabase.rls).await {
        Ok(()) => {
            println!("migrations applied ({})", settings.database.backend());
            0
        }
        Err(crate::store::StoreError::Adopt(msg)) => fail(&msg, EX_CONFIG),
        Err(e) => fail(&format!("migrations failed: {e}"), 70),
    };
    db.close().await;
    code
}

/// `clerk-sync check-config`: print the effective configuration (secrets redacted) and check the database.
pub async fn check_config(settings: Settings) -> i32 {
    match toml::to_string_pretty(&settings) {
        Ok(text) => println!("{text}"),
        Err(e) => return fail(&format!("cannot print the configuration: {e}"), 70),
    }
    if settings.clerk.webhook_signing_secret.is_set() {
        println!("webhook signing secret: decodes");
    } else {
        println!("webhook signing secret: not set (webhooks will be answered with 503)");
    }
    let db = match Db::connect(&settings.database).await {
        Ok(db) => db,
        Err(e) => return fail(&format!("database.url (DATABASE_URL): {e}"), EX_UNAVAILABLE),
    };
    let ready = crate::store::Store::check_ready(&db).await;
    db.close().await;
    match ready {
        Ok(()) => println!(
            "database: reachable ({}), migrations applied",
            settings.database.backend()
        ),
        Err(e) => println!(
            "database: reachable ({}), {e}; `clerk-sync migrate` or `clerk-sync serve` applies them",
            settings.database.backend()
        ),
    }
    0
}

/// `clerk-sync send-test-event`: sign a realistic Clerk event with the configured secret and POST it.
pub async fn send_test_event(
    settings: Settings,
    kind: SampleType,
    user_id: Option<String>,
    url: Option<String>,
) -> i32 {
    let secret = &settings.clerk.webhook_signing_secret;
    if !secret.is_set() {
        return fail(
            "clerk.webhook_signing_secret (CLERK_WEBHOOK_SIGNING_SECRET): not set; send-test-event signs with it",
            EX_CONFIG,
        );
    }
    let webhook = match svix::webhooks::Webhook::new(secret.expose()) {
        Ok(w) => w,
        Err(e) => return fail(&format!("clerk.webhook_signing_secret: {e}"), EX_CONFIG),
    };
    if let Some(given) = user_id.as_deref().filter(|id| !kind.fits(id)) {
        eprintln!(
            "clerk-sync: {given:?} is not a Clerk {} id; {} needs one, so a fresh id is used",
            kind.noun(),
            kind.as_str()
        );
    }
    let id = sample::record_id(kind, user_id);
    let event = sample::event(kind, &id);
    let subject = sample::describe(kind, &event);
    let body = event.to_string();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default() as i64;
    let msg_id = format!("msg_test_{}_{}", now, std::process::id());
    let signature = match webhook.sign(&msg_id, now, body.as_bytes()) {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot sign: {e}"), 70),
    };
    let url = match url {
        Some(given) => webhook_url(&given),
        None => format!("http://{}/webhooks/clerk", settings.server.listen),
    };
    println!("POST {url}\n{} for {subject} (svix-id {msg_id})", kind.as_str());
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("svix-id", &msg_id)
        .header("svix-timestamp", now.to_string())
        .header("svix-signature", signature)
        .body(body)
        .send()
        .await;
    match response {
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            println!("{} {}", status.as_u16(), text);
            if status.is_success() {
                if kind != kind.deletion() {
                    println!(
                        "to delete it: clerk-sync send-test-event --type {} --id {id}",
                        kind.deletion().as_str()
                    );
                }
                0
            } else {
                fail(&format!("POST {url} answered {status}: {}", explain(status)), 1)
            }
        }
        Err(e) => fail(
            &format!("could not reach {url}: {e} (is `clerk-sync serve` running?)"),
            EX_UNAVAILABLE,
        ),
    }
}

/// The webhook endpoint for a `--url`: a base URL (`http://host:3000` or `http://host:3000/`) gets the daemon's
/// webhook path; any other path is used as given (a proxy may mount the daemon elsewhere).
fn webhook_url(given: &str) -> String {
    match url::Url::parse(given) {
        Ok(mut url) if url.path().is_empty() || url.path() == "/" => {
            url.set_path("/webhooks/clerk");
            url.to_string()
        }
        _ => given.to_string(),
    }
}

/// What a non-2xx answer to a test event most likely means.
fn explain(status: reqwest::StatusCode) -> &'static str {
    match status.as_u16() {
        404 | 405 => "nothing handles webhooks at that URL; clerk-sync's endpoint is <base URL>/webhooks/clerk",
        401 => {
            "the signature was refused: the daemon must use the same CLERK_WEBHOOK_SIGNING_SECRET as this command, \
             and both clocks must agree within 5 minutes"
        }
        503 => "the daemon cannot take webhooks now: no signing secret configured, or its database is unavailable (see its logs and /readyz)",
        400 | 413 => "the daemon refused the event's payload",
        _ => "unexpected answer; see the daemon's logs",
    }
}

/// `clerk-sync openapi`: print the OpenAPI document (`openapi.json` at the repository root is this output).
pub fn openapi() -> i32 {
    use std::io::Write;
    let json = crate::http::openapi_json();
    match std::io::stdout().lock().write_all(json.as_bytes()) {
        Ok(()) => 0,
        Err(e) => fail(&format!("cannot write the document: {e}"), 74),
    }
}

fn fail(message: &str, code: i32) -> i32 {
    eprintln!("clerk-sync: {message}");
    code
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// `clerk-sync backfill`: walk Clerk's users, organizations and memberships into the tables (`--only` picks);
/// non-zero exit on failure, or when the database refused any record.
pub async fn backfill(settings: Settings, options: crate::backfill::Options) -> i32 {
    use crate::backfill::Backfill;
    let backfill = match Backfill::connect(&settings).await {
        Ok(b) => b,
        Err(BackfillError::Setup(msg)) => return fail(&msg, EX_CONFIG),
        Err(e) => return fail(&format!("database.url (DATABASE_URL): {e}"), EX_UNAVAILABLE),
    };
    let mut progress = crate::backfill::progress::for_terminal(options.dry_run);
    let result = backfill.run(options, progress.as_mut()).await;
    progress.finish();
    backfill.db.close().await;
    match result {
        Ok(summary) => {
            println!("{}", crate::backfill::progress::describe(&summary, options.dry_run));
            if let Some(run) = summary.prune_run.as_deref() {
                let pruned: u64 = crate::backfill::WALKS.iter().map(|k| summary.of(*k).pruned).sum();
                if pruned > 0 {
                    println!("prune run {run}: {pruned} tombstoned; to take it back: clerk-sync undo-prune {run}");
                }
            }
            if summary.failed() > 0 {
                1
            } else {
                0
            }
        }
        Err(BackfillError::PruneRefused(why)) => fail(&format!("backfill: {why}"), 1),
        Err(BackfillError::Pin(why)) => fail(
            &format!("backfill: clerk.secret_key (CLERK_SECRET_KEY): {why}"),
            EX_CONFIG,
        ),
        Err(BackfillError::NotEnabled(why)) => fail(&format!("backfill: {why}"), 1),
        Err(e) => fail(
            &format!("backfill stopped: {e}; run it again to continue where it stopped (--restart starts over)"),
            1,
        ),
    }
}

/// `clerk-sync undo-prune [RUN]`: take back a prune run, or list them.
pub async fn undo_prune(settings: Settings, run: Option<String>) -> i32 {
    let db = match Db::connect(&settings.database).await {
        Ok(db) => db,
        Err(e) => return fail(&format!("database.url (DATABASE_URL): {e}"), EX_UNAVAILABLE),
    };
    let mut db = db;
    db.set_feed(settings.changes.enabled);
    let code = match db.migrate(settings.supabase.rls).await {
        Err(e) => fail(&format!("migrations failed: {e}"), 70),
        Ok(()) => match run {
            None => match db.prune_runs().await {
                Ok(runs) if runs.is_empty() => {
                    println!("no prune run has tombstones standing");
                    0
                }
                Ok(runs) => {
                    for r in runs {
                        println!("{}  {} tombstones  since {}", r.run, r.tombstones, r.at);
                    }
                    println!("to take one back: clerk-sync undo-prune RUN");
                    0
                }
                Err(e) => fail(&format!("cannot list prune runs: {e}"), 70),
            },
            Some(run)
                if !db
                    .prune_runs()
                    .await
                    .is_ok_and(|runs| runs.iter().any(|r| r.run == run.trim())) =>
            {
                fail(
                    &format!(
                    "undo-prune {run}: no tombstone of that run stands (an unknown id, a run taken back already, or \
                     deletions Clerk announced since); `clerk-sync undo-prune` lists the runs"
                ),
                    1,
                )
            }
            Some(run) => match db.undo_prune(run.trim()).await {
                Ok(restored) => {
                    let count = |kind| restored.iter().filter(|id| Kind::of(id) == Some(kind)).count();
                    println!(
                        "{}: {} users, {} organizations, {} memberships restored",
                        run.trim(),
                        count(Kind::User),
                        count(Kind::Organization),
                        count(Kind::Membership)
                    );
                    0
                }
                Err(e) => fail(&format!("undo-prune {run}: {e}"), 70),
            },
        },
    };
    db.close().await;
    code
}

/// `clerk-sync pin [--replace]`: the pinned instance and the key's; `--replace` re-pins to the key's.
pub async fn pin(settings: Settings, replace: bool) -> i32 {
    let mut db = match Db::connect(&settings.database).await {
        Ok(db) => db,
        Err(e) => return fail(&format!("database.url (DATABASE_URL): {e}"), EX_UNAVAILABLE),
    };
    db.set_feed(settings.changes.enabled);
    let code = pin_with(&settings, &db, replace).await;
    db.close().await;
    code
}

async fn pin_with(settings: &Settings, db: &Db, replace: bool) -> i32 {
    if let Err(e) = db.migrate(settings.supabase.rls).await {
        return fail(&format!("migrations failed: {e}"), 70);
    }
    let pinned = match db.pinned_instance().await {
        Ok(pinned) => pinned,
        Err(e) => return fail(&format!("cannot read the pinned instance: {e}"), 70),
    };
    match &pinned {
        Some(p) => println!(
            "pinned: {} ({}), by {} at {}",
            p.instance_id,
            p.environment.as_deref().unwrap_or("environment not known yet"),
            p.pinned_by,
            p.pinned_at
        ),
        None => println!("pinned: nothing yet (the first key check or webhook pins its instance)"),
    }
    if !settings.clerk.secret_key.is_set() {
        println!("key: CLERK_SECRET_KEY is not set");
        return if replace {
            fail("pin --replace pins the instance of CLERK_SECRET_KEY: set it", EX_CONFIG)
        } else {
            0
        };
    }
    let clerk = match crate::clerk::ClerkClient::new(&settings.clerk) {
        Ok(clerk) => clerk,
        Err(e) => return fail(&format!("clerk: {e}"), 70),
    };
    let instance = match clerk.instance().await {
        Ok(instance) => instance,
        Err(e) => {
            return fail(
                &format!("cannot ask Clerk which instance CLERK_SECRET_KEY belongs to: {e}"),
                EX_UNAVAILABLE,
            )
        }
    };
    println!("key: {} ({})", instance.id, instance.environment_type);
    let same = pinned.as_ref().is_some_and(|p| p.instance_id == instance.id);
    if !replace {
        if !same && pinned.is_some() {
            println!(
                "the key belongs to another instance: serve, backfill and reconcile refuse it; to mirror {} from now on: \
                 clerk-sync pin --replace",
                instance.id
            );
            return 1;
        }
        return 0;
    }
    match db.replace_pin(&instance.id, Some(&instance.environment_type)).await {
        Ok(previous) => {
            match previous.filter(|p| p.instance_id != instance.id) {
                Some(p) => println!(
                    "re-pinned from {} to {}: run `clerk-sync backfill` to bring this instance's records in; those of {} \
                     stay until `backfill --prune` removes them (under its brake)",
                    p.instance_id, instance.id, p.instance_id
                ),
                None => println!("pinned to {}", instance.id),
            }
            0
        }
        Err(e) => fail(&format!("cannot re-pin: {e}"), 70),
    }
}
