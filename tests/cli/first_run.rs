//! What a newcomer meets first: a fresh database's log, and `send-test-event` finding the daemon from the same
//! configuration as `serve`.

use std::process::Stdio;

use super::{clerk_sync, free_port, run, secret, sqlite_url, wait_ready, Daemon};

/// The line the SQLite adoption logs when it adds the daemon's columns to a table that was already there.
const ADOPTED: &str = "added clerk-sync's columns";

#[test]
fn a_fresh_database_does_not_log_an_adoption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(dir.path());
    let (code, stdout, stderr) = run(dir.path(), &["migrate"], &[("DATABASE_URL", url.as_str())]);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        !stderr.contains(ADOPTED),
        "a database with no tables of the application's adopts nothing, yet the log says so:\n{stderr}"
    );
}

/// The same on PostgreSQL, where the first migration's `ADD COLUMN IF NOT EXISTS` on the table it has just made
/// answers notices ("column \"id\" of relation \"users\" already exists, skipping") that read like adoption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_postgres_database_does_not_log_an_adoption() {
    let admin =
        std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
        panic!(
            "cannot reach PostgreSQL at TEST_DATABASE_URL ({admin}): {e}; start one (`scripts/test --setup`) or point TEST_DATABASE_URL at one"
        )
    });
    let name = format!("clerk_sync_test_cli_{}", rand::random::<u32>());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .expect("create the database");
    let url = format!(
        "{}/{name}",
        admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stdout, stderr) = run(dir.path(), &["migrate"], &[("DATABASE_URL", url.as_str())]);
    let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&pool)
        .await;
    pool.close().await;
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        !stderr.contains("already exists") && !stderr.contains(ADOPTED),
        "a fresh database adopts nothing, yet the log reads like it:\n{stderr}"
    );
}

#[test]
fn an_application_table_is_still_reported_as_adopted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let options = url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .expect("sqlite URL")
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options)
            .await
            .expect("open the SQLite file");
        sqlx::query("CREATE TABLE organizations (id TEXT PRIMARY KEY, clerk_id TEXT UNIQUE, name TEXT)")
            .execute(&pool)
            .await
            .expect("the application's table");
        pool.close().await;
    });
    let (code, stdout, stderr) = run(dir.path(), &["migrate"], &[("DATABASE_URL", url.as_str())]);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    let adopted: Vec<&str> = stderr.lines().filter(|l| l.contains(ADOPTED)).collect();
    assert_eq!(adopted.len(), 1, "one adoption, of organizations:\n{stderr}");
    assert!(adopted[0].contains("organizations"), "{stderr}");
}

/// `serve` and `send-test-event` take the listen address and the signing secret from the same `--config` file
/// (or `CLERK_SYNC_CONFIG`), wherever `--config` stands on the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_event_reads_the_configuration_serve_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("clerk-sync.toml");
    let file = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:0\"\n\n[database]\nurl = \"{}\"\n\n\
         [clerk]\nwebhook_signing_secret = \"{}\"\n",
        sqlite_url(dir.path()),
        secret()
    );
    std::fs::write(&config, file).expect("write the config file");
    let config = config.to_str().expect("a UTF-8 path");
    let child = clerk_sync(dir.path(), &["--config", config, "serve"], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start clerk-sync serve");
    let mut daemon = Daemon(child);
    wait_ready(port, &mut daemon).await;

    let by_env = [("CLERK_SYNC_CONFIG", config)];
    let ways = [
        (vec!["--config", config, "send-test-event"], &[][..]),
        (vec!["send-test-event", "--config", config], &[][..]),
        (vec!["send-test-event"], &by_env[..]),
    ];
    for (args, vars) in ways {
        let (code, stdout, stderr) = run(dir.path(), &args, vars);
        assert_eq!(code, Some(0), "{args:?} {vars:?}\nstdout: {stdout}\nstderr: {stderr}");
        assert!(
            stdout.contains(&format!("POST http://127.0.0.1:{port}/webhooks/clerk")),
            "the daemon's address comes from the file: {stdout}"
        );
        assert!(
            stdout.contains("200") && stdout.contains("applied"),
            "signed with the file's secret: {stdout}"
        );
    }
}
