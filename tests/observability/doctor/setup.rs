//! The doctor on a broken setup: Clerk refusing the key, another instance's key, Clerk unreachable, slow or
//! failing JWKS; the database unmigrated, unreachable or missing; a configuration that does not load.

use std::process::Command;
use std::time::Duration;

use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use super::{
    clerk_answering, execute, expect, fake_clerk, names, post_bad_signatures, report, sqlite_url, INSTANCE, OTHER,
};
use crate::common::free_port;
use crate::daemon::{Daemon, PgDatabase};

/// Only refused signatures: every delivery fails verification, so it is a failure; then Clerk misbehaves in each
/// way the key and JWKS checks know.
async fn clerk_trouble_is_shown(database_url: &str) {
    let clerk = fake_clerk(INSTANCE, 0).await;
    let daemon = Daemon::start(database_url, &clerk.uri(), &[]).await;
    post_bad_signatures(&daemon, 2).await;
    let secret = daemon.secret.clone();
    daemon.stop().await;
    let vars = |api: &str, key: &'static str| {
        [
            ("DATABASE_URL", database_url.to_owned()),
            ("CLERK_WEBHOOK_SIGNING_SECRET", secret.clone()),
            ("CLERK_SECRET_KEY", key.to_owned()),
            ("CLERK_API_URL", api.to_owned()),
            ("CLERK_SYNC_CLERK__REQUEST_TIMEOUT_MS", "500".to_owned()),
        ]
    };
    let run = |vars: [(&'static str, String); 5]| {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        report(&vars)
    };

    let refused = clerk_answering(401, Duration::ZERO).await;
    let r = run(vars(&refused.uri(), "sk_test_x"));
    expect(
        &r,
        "bad_signatures",
        "fail",
        "2 refused for a bad signature in the last hour, none verified",
    );
    expect(&r, "last_webhook", "warn", "none received");
    let hint = expect(&r, "clerk_key", "fail", "Clerk refused the request with HTTP 401");
    assert!(hint.contains("Clerk Dashboard → API keys"), "{hint}");
    expect(&r, "jwks", "fail", "HTTP 401");
    assert!(
        !names(&r).contains(&"user_count".to_owned()),
        "no count without a key Clerk accepts"
    );

    let other = fake_clerk(OTHER, 0).await;
    let r = run(vars(&other.uri(), "sk_test_x"));
    let hint = expect(
        &r,
        "clerk_key",
        "fail",
        &format!("CLERK_SECRET_KEY belongs to instance {OTHER} (development), but this database mirrors {INSTANCE} (development)"),
    );
    assert!(hint.contains("clerk-sync pin --replace"), "{hint}");
    assert!(
        !names(&r).contains(&"user_count".to_owned()),
        "another instance's count says nothing"
    );

    let r = run(vars(&clerk.uri(), "sk_live_x"));
    expect(
        &r,
        "clerk_key",
        "fail",
        &format!(
            "CLERK_SECRET_KEY is a production key (sk_live_…), but this database mirrors {INSTANCE} (development)"
        ),
    );

    let closed = format!("http://127.0.0.1:{}", free_port());
    let r = run(vars(&closed, "sk_test_x"));
    let hint = expect(&r, "clerk_key", "fail", "could not connect");
    assert!(hint.contains(&closed), "{hint}");

    let slow = clerk_answering(200, Duration::from_secs(30)).await;
    // Not a hang: each call gives up after its timeout and retries within a bounded budget.
    let r = run(vars(&slow.uri(), "sk_test_x"));
    expect(&r, "clerk_key", "fail", "timed out");
    expect(&r, "jwks", "fail", "timed out");

    let working = fake_clerk(INSTANCE, 0).await;
    Mock::given(method("GET"))
        .and(path("/v1/jwks"))
        .respond_with(ResponseTemplate::new(500))
        .with_priority(1)
        .mount(&working)
        .await;
    let r = run(vars(&working.uri(), "sk_test_x"));
    expect(&r, "clerk_key", "ok", "accepted");
    expect(
        &r,
        "jwks",
        "fail",
        "GET /v1/jwks failed: Clerk is unavailable: HTTP 500",
    );
    expect(&r, "user_count", "ok", "Clerk has 0 users, the table 0 live");
}

/// An application's own `users` table, not migrated: both failures say to migrate; after `clerk-sync migrate`
/// both pass.
async fn an_unmigrated_database_is_shown(database_url: &str) {
    execute(database_url, "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT)").await;
    let vars = [("DATABASE_URL", database_url)];
    let r = report(&vars);
    expect(&r, "database", "ok", "reachable");
    let hint = expect(&r, "migrations", "fail", "0 of ");
    assert!(hint.contains("clerk-sync migrate"), "{hint}");
    let hint = expect(
        &r,
        "users_table",
        "fail",
        "users lacks clerk-sync's columns clerk_id, first_name",
    );
    assert!(hint.contains("adopts the table"), "{hint}");
    assert!(
        !names(&r).contains(&"last_webhook".to_owned()),
        "the daemon's tables are not read before migrating"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_clerk-sync"))
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .output()
        .expect("clerk-sync migrate runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let r = report(&vars);
    expect(&r, "migrations", "ok", "applied");
    expect(&r, "users_table", "ok", "has clerk-sync's columns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_clerk_trouble_postgres() {
    let db = PgDatabase::create().await;
    clerk_trouble_is_shown(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_clerk_trouble_sqlite() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    clerk_trouble_is_shown(&sqlite_url(&dir, "c.db")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_an_unmigrated_database_postgres() {
    let db = PgDatabase::create().await;
    an_unmigrated_database_is_shown(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_an_unmigrated_database_sqlite() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let url = sqlite_url(&dir, "m.db");
    std::fs::File::create(dir.path().join("m.db")).expect("an empty SQLite file");
    an_unmigrated_database_is_shown(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_an_unreachable_postgres() {
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    let r = report(&[("DATABASE_URL", url.as_str())]);
    let hint = expect(&r, "database", "fail", "cannot connect (postgres)");
    assert!(hint.contains("DATABASE_URL"), "{hint}");
    assert!(!names(&r).contains(&"migrations".to_owned()), "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_a_missing_sqlite_file_and_does_not_create_it() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let file = dir.path().join("missing.db");
    let url = format!("sqlite://{}", file.display());
    let r = report(&[("DATABASE_URL", url.as_str())]);
    let hint = expect(
        &r,
        "database",
        "fail",
        &format!("the SQLite file {} does not exist", file.display()),
    );
    assert!(hint.contains("clerk-sync migrate"), "{hint}");
    assert!(!file.exists(), "the doctor created the file");
}

/// A secret that does not decode fails its check, and the rest is still checked; any other invalid key is one
/// failed `config` check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_configuration_trouble() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let url = sqlite_url(&dir, "s.db");
    std::fs::File::create(dir.path().join("s.db")).expect("an empty SQLite file");
    let r = report(&[
        ("DATABASE_URL", url.as_str()),
        ("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_!!not-base64!!"),
    ]);
    let hint = expect(&r, "signing_secret", "fail", "does not decode");
    assert!(hint.contains("Signing Secret"), "{hint}");
    expect(&r, "database", "ok", "reachable (sqlite)");
    assert!(
        !r.to_string().contains("not-base64"),
        "the secret is not printed: {r:#}"
    );

    let r = report(&[("DATABASE_URL", url.as_str()), ("CLERK_SYNC_ACTORS__SHARDS", "0")]);
    assert_eq!(names(&r), ["config"]);
    expect(
        &r,
        "config",
        "fail",
        "actors.shards (CLERK_SYNC_ACTORS__SHARDS): must be greater than 0",
    );
}
