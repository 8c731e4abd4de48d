//! A real Prometheus scrapes a real daemon on a fresh PostgreSQL database through a realistic scenario; every
//! dashboard expression must then return data, the created counters must match the `users` table, and the
//! alerting rules must be loaded.

use std::collections::BTreeMap;
use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use wiremock::MockServer;

use crate::common::{
    clerk_knows, clerk_lacks, clerk_rate_limits_once, clerk_user, deleted_data, envelope, free_port, log_tail, now_ms,
    repo_path, require_tool, svix_id, user_id,
};
use crate::daemon::{Daemon, PgDatabase, Process};
use crate::dashboards::{alert_exprs, created_via_sql, dashboard, prometheus_exprs, substitute};

struct Prometheus {
    process: Process,
    url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(metrics_port: u16) -> Prometheus {
        let binary = require_tool("prometheus", "prometheus");
        let dir = tempfile::TempDir::new().expect("temporary directory");
        let rules = repo_path("dashboards/alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: clerk-sync\n    static_configs:\n      - targets: [\"127.0.0.1:{metrics_port}\"]\n",
            rules = rules.display().to_string()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("cannot write prometheus.yml");
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path());
        let mut process = Process::spawn("prometheus", command, dir.path().join("prometheus.log"));
        let (url, client) = (format!("http://127.0.0.1:{port}"), crate::common::http_client());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            process.assert_running();
            let ready = client.get(format!("{url}/-/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready in 30 s:\n{}",
                log_tail(&process.log, 8000)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Prometheus {
            process,
            url,
            client,
            _dir: dir,
        }
    }

    /// `data` of a successful `/api/v1/…` answer.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let response = self
            .client
            .get(format!("{}/api/v1/{path}", self.url))
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Prometheus /api/v1/{path} {query:?}: {e}"));
        let body: Value = response.json().await.expect("Prometheus answered non-JSON");
        assert_eq!(body["status"], "success", "Prometheus /api/v1/{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// The instant vector of `query`.
    async fn query(&self, query: &str) -> Vec<Value> {
        let data = self.api("query", &[("query", query)]).await;
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// `sum by (source) (clerk_sync_users_created_total)` as source → value.
    async fn created_by_source(&self) -> BTreeMap<String, f64> {
        let result = self.query("sum by (source) (clerk_sync_users_created_total)").await;
        result
            .iter()
            .map(|s| {
                let source = s["metric"]["source"].as_str().unwrap_or_default().to_owned();
                let value = s["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
                (source, value)
            })
            .collect()
    }
}

/// Runs the scenario's requests: 5 created, 1 duplicate, 1 applied update, 1 stale update, 1 delete, 2 bad
/// signatures, 3 fallback creations, 1 cache hit, 1 Clerk 404, 1 fallback creation after a 429.
async fn scenario(daemon: &Daemon, clerk: &MockServer) {
    let expect = |what: &str, got: (StatusCode, String), status: StatusCode, outcome: &str| {
        assert!(
            got.0 == status && got.1.contains(outcome),
            "{what}: expected {status} {outcome:?}, got {} {}",
            got.0,
            got.1
        );
    };
    let t0 = now_ms() - 10_000;
    let users: Vec<String> = (0..5).map(|_| user_id()).collect();
    let mut first_delivery = None;
    for (i, id) in users.iter().enumerate() {
        let (body, msg) = (envelope("user.created", clerk_user(id, t0 + i as i64)), svix_id());
        expect(
            "user.created",
            daemon.post_webhook(&body, &msg).await,
            StatusCode::OK,
            "applied",
        );
        first_delivery.get_or_insert((body, msg));
    }
    let (body, msg) = first_delivery.expect("five deliveries");
    expect(
        "redelivery",
        daemon.post_webhook(&body, &msg).await,
        StatusCode::OK,
        "duplicate",
    );
    let update = envelope("user.updated", clerk_user(&users[0], t0 + 5_000));
    expect(
        "user.updated",
        daemon.post_webhook(&update, &svix_id()).await,
        StatusCode::OK,
        "applied",
    );
    let stale = envelope("user.updated", clerk_user(&users[1], t0 - 5_000));
    expect(
        "stale user.updated",
        daemon.post_webhook(&stale, &svix_id()).await,
        StatusCode::OK,
        "stale",
    );
    let delete = envelope("user.deleted", deleted_data(&users[2]));
    expect(
        "user.deleted",
        daemon.post_webhook(&delete, &svix_id()).await,
        StatusCode::OK,
        "applied",
    );
    for _ in 0..2 {
        let body = envelope("user.created", clerk_user(&user_id(), now_ms()));
        let wrong = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let got = daemon
            .post_webhook_with(&body, &svix_id(), now_ms() / 1000, wrong)
            .await;
        expect("bad signature", got, StatusCode::UNAUTHORIZED, "invalid_signature");
    }

    let fallback: Vec<String> = (0..3).map(|_| user_id()).collect();
    for id in &fallback {
        clerk_knows(clerk, &clerk_user(id, now_ms())).await;
        assert_eq!(
            daemon.get_user(id).await.status(),
            StatusCode::CREATED,
            "fallback GET of {id}"
        );
    }
    assert_eq!(
        daemon.get_user(&fallback[0]).await.status(),
        StatusCode::OK,
        "repeat GET (cache hit)"
    );
    let unknown = user_id();
    clerk_lacks(clerk, &unknown).await;
    assert_eq!(
        daemon.get_user(&unknown).await.status(),
        StatusCode::NOT_FOUND,
        "GET of a user Clerk lacks"
    );
    let limited = user_id();
    clerk_rate_limits_once(clerk, &clerk_user(&limited, now_ms())).await;
    let response = daemon.get_user(&limited).await;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(
        status,
        StatusCode::CREATED,
        "GET after one Clerk 429 (Retry-After: 1): {text}"
    );
}

async fn within<F: Future<Output = ()>>(limit: Duration, what: &str, body: F) {
    if tokio::time::timeout(limit, body).await.is_err() {
        panic!("{what} took longer than {limit:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_daemon_and_every_panel_has_data() {
    let started = Instant::now();
    let database = PgDatabase::create().await;
    let clerk = MockServer::start().await;
    within(Duration::from_secs(85), "the Prometheus integration test", async {
        let daemon = Daemon::start(&database.url, &clerk.uri(), &[]).await;
        let mut prometheus = Prometheus::start(daemon.metrics_port).await;
        // A first scrape before the scenario, so rates and increases see the counters grow.
        let deadline = Instant::now() + Duration::from_secs(15);
        while prometheus.query("up{job=\"clerk-sync\"} == 1").await.is_empty() {
            assert!(
                Instant::now() < deadline,
                "Prometheus did not scrape clerk-sync within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        scenario(&daemon, &clerk).await;

        let expected = BTreeMap::from([
            ("backfill".to_owned(), 0.0),
            ("fallback".into(), 4.0),
            ("webhook".into(), 5.0),
        ]);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut created = prometheus.created_by_source().await;
        while created.get("webhook") != Some(&5.0) || created.get("fallback") != Some(&4.0) {
            assert!(
                Instant::now() < deadline,
                "after 30 s Prometheus shows users created {created:?}, expected webhook=5 and fallback=4"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            created = prometheus.created_by_source().await;
        }
        assert_eq!(created, expected, "sum by (source) (clerk_sync_users_created_total)");

        // rate() needs two scrapes inside its window: poll until every panel has data (at most 20 s).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut empty = Vec::new();
            for (title, expr) in prometheus_exprs(&dashboard()) {
                let query = substitute(&expr, "1m", "5m");
                if prometheus.query(&query).await.is_empty() {
                    empty.push(format!("panel {title:?}: {query}"));
                }
            }
            if empty.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dashboard expressions without any sample after 20 s:\n{}",
                empty.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        // The dashboard's own SQL, on the daemon's database, against the counters.
        let sql = created_via_sql(&dashboard());
        let pool = sqlx::PgPool::connect(&database.url)
            .await
            .expect("connect to the test database");
        let rows: Vec<(String, i64)> = sqlx::query_as(&sql)
            .fetch_all(&pool)
            .await
            .expect("the table panel's rawSql");
        pool.close().await;
        let in_db: BTreeMap<String, f64> = rows.into_iter().map(|(via, n)| (via, n as f64)).collect();
        let counted: BTreeMap<String, f64> = created.into_iter().filter(|(_, n)| *n > 0.0).collect();
        assert_eq!(
            in_db, counted,
            "users by created_via (table panel's SQL) vs clerk_sync_users_created_total"
        );

        let rules = prometheus.api("rules", &[]).await;
        let mut loaded: Vec<String> = rules["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["type"] == "alerting")
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect();
        loaded.sort();
        let mut expected: Vec<String> = alert_exprs().into_iter().map(|(name, _)| name).collect();
        expected.sort();
        assert_eq!(expected.len(), 9, "alerts.yml should define 9 alerts: {expected:?}");
        assert!(expected.iter().all(|n| n.starts_with("ClerkSync")), "{expected:?}");
        assert_eq!(loaded, expected, "alerting rules Prometheus loaded from alerts.yml");

        let _ = prometheus.process.terminate(Duration::from_secs(10)).await;
        daemon.stop().await;
    })
    .await;
    drop(database);
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}
