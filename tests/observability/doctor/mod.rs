//! `clerk-sync doctor` as an operator runs it, against the fake Clerk, on both backends: a healthy setup passes
//! (exit 0), and each failure it knows is shown as ✗ with what to do (exit 1) — webhooks refused for their
//! signature or sent by another instance, the fallback doing the webhook's work, drift from Clerk's count, stuck
//! forwarding, a refused reconcile prune (`webhooks.rs`), a key Clerk refuses or of another instance, Clerk
//! unreachable or slow, JWKS failing, the database unreachable, missing or not migrated, and a secret that does not
//! decode (`setup.rs`). This file: the fake Clerk and running the doctor.

mod setup;
mod webhooks;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::{clerk_user, envelope, now_ms, repo_path, svix_id, user_id};
use crate::daemon::Daemon;

/// The instance the daemon pins (its key's, at start).
pub const INSTANCE: &str = "ins_2DoctorDoctorDoctor000000";
pub const OTHER: &str = "ins_2OtherOtherOtherOther0000";

/// A fake Clerk of `instance` with `users` users: `GET /v1/instance`, `/v1/jwks`, `/v1/users/count`, an empty
/// user list and no organizations.
pub async fn fake_clerk(instance: &str, users: u64) -> MockServer {
    let clerk = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/instance"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"object": "instance", "id": instance, "environment_type": "development", "allowed_origins": null}),
        ))
        .mount(&clerk)
        .await;
    let jwks = std::fs::read_to_string(repo_path("tests/fixtures/jwks.json")).expect("tests/fixtures/jwks.json");
    Mock::given(method("GET"))
        .and(path("/v1/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(jwks, "application/json"))
        .mount(&clerk)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/users/count"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"object": "total_count", "total_count": users})))
        .mount(&clerk)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&clerk)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/v1/organizations"))
        .respond_with(ResponseTemplate::new(403).set_body_json(
            json!({"errors": [{"code": "organization_not_enabled_in_instance", "message": "access denied"}]}),
        ))
        .mount(&clerk)
        .await;
    clerk
}

/// A fake Clerk that answers every call `status` (with Clerk's error shape), after `delay`.
pub async fn clerk_answering(status: u16, delay: Duration) -> MockServer {
    let clerk = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(status)
                .set_delay(delay)
                .set_body_json(json!({"errors": [{"code": "authentication_invalid", "message": "invalid"}]})),
        )
        .mount(&clerk)
        .await;
    clerk
}

/// `clerk-sync doctor [--json]` with only these variables: exit code, stdout, stderr.
pub fn doctor(vars: &[(&str, &str)], json: bool) -> (Option<i32>, String, String) {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let mut command = Command::new(env!("CARGO_BIN_EXE_clerk-sync"));
    command.arg("doctor");
    if json {
        command.arg("--json");
    }
    let output = command
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .envs(vars.iter().copied())
        .output()
        .expect("clerk-sync doctor runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The doctor's JSON report, asserting its exit code agrees with it.
pub fn report(vars: &[(&str, &str)]) -> Value {
    let (code, out, err) = doctor(vars, true);
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}\nstderr:\n{err}"));
    let expected = if report["ok"] == true { 0 } else { 1 };
    assert_eq!(
        code,
        Some(expected),
        "exit code against the report:\n{out}\nstderr:\n{err}"
    );
    report
}

/// The check named `name`, with its status and detail, or a panic showing the report.
pub fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["check"] == name))
        .unwrap_or_else(|| panic!("no {name} check in:\n{report:#}"))
}

/// Asserts check `name` has `status` and a detail containing `detail`; returns its hint.
pub fn expect(report: &Value, name: &str, status: &str, detail: &str) -> String {
    let c = check(report, name);
    assert_eq!(c["status"], status, "{name}:\n{report:#}");
    let text = c["detail"].as_str().unwrap_or_default();
    assert!(text.contains(detail), "{name}: {text:?} lacks {detail:?}\n{report:#}");
    c["hint"].as_str().unwrap_or_default().to_owned()
}

pub fn names(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c["check"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A signed `user.created` of a fresh user, of `instance` when given.
pub fn user_created(instance: Option<&str>) -> String {
    let mut event: Value =
        serde_json::from_str(&envelope("user.created", clerk_user(&user_id(), now_ms()))).expect("JSON");
    if let Some(instance) = instance {
        event["instance_id"] = json!(instance);
    }
    event.to_string()
}

pub async fn post_bad_signatures(daemon: &Daemon, n: usize) {
    for _ in 0..n {
        let (status, body) = daemon
            .post_webhook_with(
                &user_created(None),
                &svix_id(),
                now_ms() / 1000,
                "v1,bm90IHRoZSBzaWduYXR1cmU=",
            )
            .await;
        assert_eq!(status.as_u16(), 401, "{body}");
    }
}

/// Runs `sql` on the database (test set-up only: to age rows).
pub async fn execute(database_url: &str, sql: &str) {
    use sqlx::Connection;
    if database_url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(database_url).await.expect("connect");
        sqlx::raw_sql(sql).execute(&mut conn).await.expect(sql);
    } else {
        let mut conn = sqlx::SqliteConnection::connect(database_url).await.expect("connect");
        sqlx::raw_sql(sql).execute(&mut conn).await.expect(sql);
    }
}

pub fn sqlite_url(dir: &tempfile::TempDir, name: &str) -> String {
    format!("sqlite://{}", dir.path().join(name).display())
}
