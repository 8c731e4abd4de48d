//! `clerk-sync backfill`, `--prune` and `undo-prune` as their users run them, on both backends, the daemon as a
//! real process: on a Clerk instance without organizations, `backfill` exits 0 and says organizations were
//! skipped, `--only organizations` exits non-zero with the reason, and `serve` with `reconcile.interval` records
//! its reconciles as successful; an empty answer from Clerk makes `--prune` refuse with exit 1 and no one lost; a
//! prune run is listed, taken back, and not taken back twice.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::common::{clerk_user, now_ms, user_id};
use crate::daemon::{Daemon, PgDatabase};

/// The Clerk instance of these tests' fake.
const INSTANCE: &str = "ins_2TVSvGyJmr9BVgqmuPrXpQ5qK8a";

/// Clerk's user list: pages as Clerk answers them (one page here), and the `user_id` filter honoured.
struct Users(Vec<serde_json::Value>);

impl Respond for Users {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let ids: Vec<String> = request
            .url
            .query_pairs()
            .filter(|(k, _)| k == "user_id")
            .map(|(_, v)| v.into_owned())
            .collect();
        let page: Vec<&serde_json::Value> = self
            .0
            .iter()
            .filter(|u| ids.is_empty() || ids.iter().any(|id| u["id"] == id.as_str()))
            .collect();
        ResponseTemplate::new(200).set_body_json(page)
    }
}

/// A fake Clerk with `n` users and organizations turned off (Clerk's own answer: 403
/// `organization_not_enabled_in_instance` on every organizations endpoint).
async fn instance_without_organizations(n: usize) -> MockServer {
    let users: Vec<_> = (0..n)
        .map(|i| clerk_user(&user_id(), now_ms() - 60_000 + i as i64))
        .collect();
    instance_with(users).await
}

/// A fake Clerk with these users and organizations turned off.
async fn instance_with(users: Vec<serde_json::Value>) -> MockServer {
    instance_of(INSTANCE, users).await
}

/// A fake Clerk of instance `id` with these users and organizations turned off.
async fn instance_of(id: &str, users: Vec<serde_json::Value>) -> MockServer {
    let clerk = MockServer::start().await;
    let n = users.len();
    Mock::given(method("GET"))
        .and(path("/v1/instance"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"object": "instance", "id": id, "environment_type": "development", "allowed_origins": null}),
        ))
        .mount(&clerk)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/users/count"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"object": "total_count", "total_count": n})))
        .mount(&clerk)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/users"))
        .respond_with(Users(users))
        .mount(&clerk)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/v1/organizations"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({"errors": [{
            "message": "access denied",
            "long_message": "The organizations feature is not enabled for this instance.",
            "code": "organization_not_enabled_in_instance"
        }]})))
        .mount(&clerk)
        .await;
    clerk
}

/// `clerk-sync backfill <args>` on `database_url` against `clerk_url`: exit code, stdout, stderr.
fn backfill(database_url: &str, clerk_url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let output = Command::new(env!("CARGO_BIN_EXE_clerk-sync"))
        .arg("backfill")
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("DATABASE_URL", database_url)
        .env("CLERK_API_URL", clerk_url)
        .env("CLERK_SECRET_KEY", "sk_test_x")
        .output()
        .expect("clerk-sync backfill runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn backfill_exits_0_and_only_organizations_exits_1(database_url: &str) {
    let clerk = instance_without_organizations(3).await;
    let (code, out, err) = backfill(database_url, &clerk.uri(), &["--prune"]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("3 scanned; 3 created"), "{out}");
    assert!(
        out.contains("organizations: skipped: organizations are not enabled on this Clerk instance"),
        "{out}"
    );
    assert!(
        err.contains("organizations are not enabled on this Clerk instance; organizations and memberships skipped"),
        "one log line says why: {err}"
    );

    let (code, out, err) = backfill(database_url, &clerk.uri(), &["--only", "organizations"]);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("organizations are not enabled on this Clerk instance (Clerk answered HTTP 403 organization_not_enabled_in_instance)"),
        "{err}"
    );
}

/// The repro of the safety-rails issue: users synced, then `--prune` against a Clerk that answers an empty list.
async fn an_empty_clerk_loses_no_one_and_a_run_can_be_taken_back(database_url: &str) {
    let users: Vec<_> = (0..30)
        .map(|i| clerk_user(&user_id(), now_ms() - 60_000 + i as i64))
        .collect();
    let full = instance_with(users.clone()).await;
    let (code, out, err) = backfill(database_url, &full.uri(), &[]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");

    let empty = instance_with(Vec::new()).await;
    let (code, out, err) = backfill(database_url, &empty.uri(), &["--prune"]);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("would tombstone 30 of 30 live users (100 %)"), "{err}");
    assert!(err.contains("clerk-sync backfill --prune --max-prune 30"), "{err}");
    let (_, out, _) = run(database_url, &["undo-prune"]);
    assert!(
        out.contains("no prune run has tombstones standing"),
        "nothing was tombstoned: {out}"
    );

    // One user really gone: pruned under the brake, listed, taken back, and not twice.
    let fewer = instance_with(users[1..].to_vec()).await;
    let (code, out, err) = backfill(database_url, &fewer.uri(), &["--prune"]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("prune run "))
        .unwrap_or_else(|| panic!("{out}"));
    let id = line["prune run ".len()..].split(':').next().expect("run id").to_owned();
    assert!(
        line.ends_with(&format!("1 tombstoned; to take it back: clerk-sync undo-prune {id}")),
        "{line}"
    );
    let (code, out, _) = run(database_url, &["undo-prune"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(&format!("{id}  1 tombstones")), "{out}");
    let (code, out, err) = run(database_url, &["undo-prune", &id]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("1 users, 0 organizations, 0 memberships restored"),
        "{out}"
    );
    let (code, _, err) = run(database_url, &["undo-prune", &id]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no tombstone of that run stands"), "{err}");
}

/// A key of another instance: backfill refuses it (78) naming both, `pin` says so, `pin --replace` re-pins.
async fn a_key_of_another_instance_until_it_is_pinned(database_url: &str) {
    let users: Vec<_> = (0..3)
        .map(|i| clerk_user(&user_id(), now_ms() - 60_000 + i as i64))
        .collect();
    let ours = instance_with(users.clone()).await;
    let (code, out, err) = backfill(database_url, &ours.uri(), &[]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let theirs = instance_of("ins_2TheirsTheirsTheirs000000", users).await;
    let (code, out, err) = backfill(database_url, &theirs.uri(), &["--prune"]);
    assert_eq!(code, Some(78), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains(&format!("mirrors Clerk instance {INSTANCE} (development)"))
            && err.contains("belongs to instance ins_2TheirsTheirsTheirs000000"),
        "{err}"
    );
    let pin = |clerk: &str, args: &[&str]| {
        let mut all = vec!["pin"];
        all.extend_from_slice(args);
        run_with(
            database_url,
            &all,
            &[("CLERK_API_URL", clerk), ("CLERK_SECRET_KEY", "sk_test_x")],
        )
    };
    let (code, out, _) = pin(&theirs.uri(), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("pinned: {INSTANCE} (development), by key")),
        "{out}"
    );
    assert!(
        out.contains("key: ins_2TheirsTheirsTheirs000000 (development)"),
        "{out}"
    );
    let (code, out, err) = pin(&theirs.uri(), &["--replace"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("re-pinned from {INSTANCE} to ins_2TheirsTheirsTheirs000000")),
        "{out}"
    );
    let (code, out, err) = backfill(database_url, &theirs.uri(), &[]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
}

/// `clerk-sync <args>` on `database_url`: exit code, stdout, stderr.
fn run(database_url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    run_with(database_url, args, &[])
}

/// [`run`] with more variables.
fn run_with(database_url: &str, args: &[&str], vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_clerk-sync"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("DATABASE_URL", database_url)
        .envs(vars.iter().copied())
        .output()
        .expect("clerk-sync runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn reconcile_records_its_success(database_url: &str) {
    let clerk = instance_without_organizations(2).await;
    let daemon = Daemon::start(
        database_url,
        &clerk.uri(),
        &[
            ("CLERK_SYNC_RECONCILE__INTERVAL", "1s"),
            ("CLERK_SYNC_RECONCILE__PRUNE", "true"),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = daemon.metrics().await;
        let last_success = text
            .lines()
            .find_map(|l| l.strip_prefix("clerk_sync_backfill_last_success_timestamp_seconds "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if last_success > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no successful reconcile recorded within 30 s; metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_on_an_instance_without_organizations_postgres() {
    let db = PgDatabase::create().await;
    backfill_exits_0_and_only_organizations_exits_1(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_on_an_instance_without_organizations_sqlite() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    backfill_exits_0_and_only_organizations_exits_1(&format!("sqlite://{}", dir.path().join("b.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_without_organizations_succeeds_postgres() {
    let db = PgDatabase::create().await;
    reconcile_records_its_success(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_without_organizations_succeeds_sqlite() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    reconcile_records_its_success(&format!("sqlite://{}", dir.path().join("r.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_and_undo_from_the_command_line_postgres() {
    let db = PgDatabase::create().await;
    an_empty_clerk_loses_no_one_and_a_run_can_be_taken_back(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_and_undo_from_the_command_line_sqlite() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    an_empty_clerk_loses_no_one_and_a_run_can_be_taken_back(&format!("sqlite://{}", dir.path().join("p.db").display()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_another_instance_from_the_command_line_postgres() {
    let db = PgDatabase::create().await;
    a_key_of_another_instance_until_it_is_pinned(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_another_instance_from_the_command_line_sqlite() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    a_key_of_another_instance_until_it_is_pinned(&format!("sqlite://{}", dir.path().join("k.db").display())).await;
}
