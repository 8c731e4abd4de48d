//! Logs as shipped (`RUST_LOG` and `NO_COLOR` unset, output to a file as a service manager would take it): one
//! plain line per webhook naming the event type, the record and what happened to it, nothing more per request
//! at `info`, no colour escapes into a file; JSON logs carry the same as fields; the request span at `debug`.

use reqwest::StatusCode;
use serde_json::Value;
use wiremock::MockServer;

use crate::common::{clerk_user, envelope, log_tail, now_ms, svix_id, user_id};
use crate::daemon::{Daemon, PgDatabase};

/// A created, an updated and a redelivered webhook for one fresh user, then a lookup of it and a `/livez`.
/// Returns the user's id.
async fn traffic(daemon: &Daemon) -> String {
    let id = user_id();
    let t = now_ms();
    let created = svix_id();
    let body = envelope("user.created", clerk_user(&id, t - 1_000));
    let (status, text) = daemon.post_webhook(&body, &created).await;
    assert_eq!(status, StatusCode::OK, "user.created: {text}");
    let (status, text) = daemon.post_webhook(&body, &created).await;
    assert_eq!(status, StatusCode::OK, "the same delivery again: {text}");
    let body = envelope("user.updated", clerk_user(&id, t));
    let (status, text) = daemon.post_webhook(&body, &svix_id()).await;
    assert_eq!(status, StatusCode::OK, "user.updated: {text}");
    assert_eq!(daemon.get_user(&id).await.status(), StatusCode::OK, "GET the user");
    let livez = daemon.client.get(format!("{}/livez", daemon.url)).send().await;
    assert!(livez.is_ok_and(|r| r.status() == StatusCode::OK), "GET /livez");
    id
}

async fn default_logs_have_one_plain_line_per_webhook(database_url: &str) {
    let clerk = MockServer::start().await;
    let daemon = Daemon::start_as_shipped(database_url, &clerk.uri(), &[]).await;
    let id = traffic(&daemon).await;
    // Each line is written before its response is sent; the log goes with the daemon's directory on stop.
    let path = daemon.process.log.clone();
    let log = std::fs::read_to_string(&path).expect("the daemon's log");
    assert!(
        !log.contains('\u{1b}'),
        "colour escapes in a log written to a file:\n{}",
        log_tail(&path, 2000)
    );
    daemon.stop().await;
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&id)).collect();
    let expected = [
        ("user.created", "outcome=created"),
        ("user.created", "outcome=duplicate"),
        ("user.updated", "outcome=updated"),
    ];
    assert_eq!(
        lines.len(),
        expected.len(),
        "one line per webhook (and none for the lookup) naming {id}; got:\n{}",
        lines.join("\n")
    );
    for (line, (event_type, outcome)) in lines.iter().zip(expected) {
        assert!(
            line.contains(" INFO ")
                && line.contains("webhook")
                && line.contains(&format!("event_type={event_type}"))
                && line.contains(&format!("clerk_id={id}"))
                && line.contains(outcome),
            "expected an INFO line saying the webhook {event_type} for {id} gave {outcome}, got: {line}"
        );
        // The request span is debug: its fields do not ride on every line.
        assert!(
            !line.contains("http_request") && !line.contains("request_id"),
            "the per-request span shows at info: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_logs_have_one_plain_line_per_webhook_sqlite() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("clerk-sync.db").display());
    default_logs_have_one_plain_line_per_webhook(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_logs_have_one_plain_line_per_webhook_postgres() {
    let db = PgDatabase::create().await;
    default_logs_have_one_plain_line_per_webhook(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_record_and_outcome_as_fields() {
    let clerk = MockServer::start().await;
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("clerk-sync.db").display());
    let daemon = Daemon::start_as_shipped(&url, &clerk.uri(), &[("CLERK_SYNC_LOG_FORMAT", "json")]).await;
    let id = traffic(&daemon).await;
    // Each line is written before its response is sent; the log goes with the daemon's directory on stop.
    let path = daemon.process.log.clone();
    let log = std::fs::read_to_string(&path).expect("the daemon's log");
    daemon.stop().await;
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["fields"]["clerk_id"].as_str() == Some(id.as_str()))
        .collect();
    let got: Vec<(&str, &str, &str)> = mine
        .iter()
        .map(|e| {
            (
                e["level"].as_str().unwrap_or_default(),
                e["fields"]["event_type"].as_str().unwrap_or_default(),
                e["fields"]["outcome"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("INFO", "user.created", "created"),
            ("INFO", "user.created", "duplicate"),
            ("INFO", "user.updated", "updated")
        ],
        "one JSON line per webhook with its record and outcome as fields; lines naming {id}: {mine:?}"
    );
    assert!(
        mine.iter().all(|e| e["fields"]["svix_id"].is_string()),
        "each webhook line names its delivery: {mine:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_show_each_request_span_with_its_request_id() {
    let clerk = MockServer::start().await;
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("clerk-sync.db").display());
    let daemon = Daemon::start_as_shipped(&url, &clerk.uri(), &[("RUST_LOG", "debug,sqlx=warn")]).await;
    let id = user_id();
    let body = envelope("user.created", clerk_user(&id, now_ms()));
    let response = daemon
        .client
        .post(format!("{}/webhooks/clerk", daemon.url))
        .header("x-request-id", "obs-logs-request-7")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("POST /webhooks/clerk");
    // Unsigned: refused, but the request span still names the request id on the warning.
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Each line is written before its response is sent; the log goes with the daemon's directory on stop.
    let path = daemon.process.log.clone();
    let log = std::fs::read_to_string(&path).expect("the daemon's log");
    assert!(
        log.lines()
            .any(|l| l.contains("http_request") && l.contains("obs-logs-request-7") && l.contains("refused")),
        "at debug, the refusal's line carries the request span and its request id:\n{}",
        log_tail(&path, 4000)
    );
    daemon.stop().await;
}
