//! The test harness: spawn the daemon on a fresh Postgres database or SQLite file and talk to it over HTTP.

use std::collections::HashMap;
use std::time::Duration;

use clerk_sync::config::Settings;
use clerk_sync::{Application, StartError};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wiremock::MockServer;

use crate::clerk::{now_secs, CLERK_SECRET_KEY};
pub use crate::ids::{new_secret, sign};
pub use crate::test_db::{DbBlock, TestDatabase, TestDb};

/// Runs one test body on both backends: `both_backends!(name, |backend| async move { ... });` expands to
/// `mod name { async fn postgres() ... async fn sqlite() ... }`.
macro_rules! both_backends {
    ($name:ident, |$backend:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let $backend = $crate::helpers::Backend::Postgres;
                ($body).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $backend = $crate::helpers::Backend::Sqlite;
                ($body).await
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Settings for the daemon on `database`: the base test environment, then `extra_env` (an empty value unsets).
pub fn settings_for(database: &TestDatabase, secret: &str, extra_env: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), database.url().to_string()),
        ("CLERK_WEBHOOK_SIGNING_SECRET".into(), secret.to_string()),
        ("CLERK_SYNC_LISTEN".into(), "127.0.0.1:0".into()),
        ("CLERK_SYNC_METRICS_LISTEN".into(), "127.0.0.1:0".into()),
        ("CLERK_SYNC_DATABASE__ACQUIRE_TIMEOUT_MS".into(), "2000".into()),
        ("CLERK_SYNC_DATABASE__BUSY_TIMEOUT_MS".into(), "300".into()),
        // The fake Clerk has no rate limit; its key is a development one (sk_test_), whose automatic budget
        // (90 per 10 s) would only slow down the tests that walk hundreds of pages.
        ("CLERK_SYNC_CLERK__REQUESTS_PER_10S".into(), "900".into()),
    ]);
    for (key, value) in extra_env {
        env.insert(key.to_string(), value.to_string());
    }
    let lookup = move |key: &str| env.get(key).filter(|v| !v.is_empty()).cloned();
    Settings::load(None, &lookup).expect("test settings do not load")
}

/// `Application::build` on an existing database, for tests that expect it to fail.
pub async fn try_build(database: &TestDatabase, extra_env: &[(&str, &str)]) -> Result<Application, StartError> {
    Application::build(settings_for(database, &new_secret(), extra_env)).await
}

pub struct TestApp {
    pub address: String,
    pub secret: String,
    pub db: TestDb,
    pub client: reqwest::Client,
    /// The fake Clerk Backend API, when spawned with [`spawn_app_with_clerk`].
    pub clerk: Option<MockServer>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), StartError>>>,
    extra_env: Vec<(String, String)>,
    // Last: dropped after the daemon was told to stop.
    database: TestDatabase,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

pub async fn spawn_app_with(backend: Backend, extra_env: &[(&str, &str)]) -> TestApp {
    let database = TestDatabase::create(backend).await;
    spawn_app_on(database, extra_env).await
}

/// The service tokens [`spawn_app_with_clerk`] configures (two, for rotation).
pub const SERVICE_TOKEN: &str = "tok_a";
pub const OTHER_SERVICE_TOKEN: &str = "tok_b";

/// Spawns the daemon with a fake Clerk (a fresh `MockServer`, kept in `TestApp::clerk`): `CLERK_API_URL`,
/// `CLERK_SECRET_KEY` and `CLERK_SYNC_API_TOKENS=tok_a,tok_b` are set; `extra_env` comes after (an empty value
/// unsets). Only `GET /v1/instance` is mounted (the tests' instance, which the daemon checks its key against at
/// start-up); each test mounts what else Clerk should answer.
pub async fn spawn_app_with_clerk(backend: Backend, extra_env: &[(&str, &str)]) -> TestApp {
    let server = MockServer::start().await;
    crate::clerk::instance_mock(crate::clerk::INSTANCE, "development")
        .mount(&server)
        .await;
    let uri = server.uri();
    let tokens = format!("{SERVICE_TOKEN},{OTHER_SERVICE_TOKEN}");
    let mut env: Vec<(&str, &str)> = vec![
        ("CLERK_API_URL", uri.as_str()),
        ("CLERK_SECRET_KEY", CLERK_SECRET_KEY),
        ("CLERK_SYNC_API_TOKENS", tokens.as_str()),
    ];
    env.extend_from_slice(extra_env);
    let mut app = spawn_app_with(backend, &env).await;
    app.clerk = Some(server);
    app
}

/// An answer of the `/v1` API.
#[derive(Debug)]
pub struct ApiAnswer {
    pub status: StatusCode,
    /// The body as JSON (`null` when it is not JSON).
    pub json: Value,
    /// The raw body, for checks that nothing internal leaks.
    pub body: String,
    pub retry_after: Option<String>,
}

/// Spawns the daemon on a database the test prepared (e.g. with an app-made `users` table).
pub async fn spawn_app_on(database: TestDatabase, extra_env: &[(&str, &str)]) -> TestApp {
    spawn_with_secret(database, new_secret(), extra_env).await
}

/// With `TEST_LOG` set, the daemon's logs go to the test output (shown for failing tests).
fn init_test_logging() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug,sqlx=warn,hyper=info"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

async fn spawn_with_secret(database: TestDatabase, secret: String, extra_env: &[(&str, &str)]) -> TestApp {
    init_test_logging();
    let settings = settings_for(&database, &secret, extra_env);
    let app = Application::build(settings)
        .await
        .unwrap_or_else(|e| panic!("Application::build failed on {:?}: {e}", database.backend()));
    let port = app.port();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let db = database.connect().await;
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        secret,
        db,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client"),
        clerk: None,
        shutdown: Some(tx),
        server: Some(server),
        extra_env: extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        database,
    }
}

/// A second daemon on a [`TestApp`]'s database, as another replica would be. Stops when dropped.
pub struct Replica {
    pub address: String,
    _shutdown: oneshot::Sender<()>,
}

impl TestApp {
    /// Starts another daemon on the same database with the same settings.
    pub async fn spawn_replica(&self) -> Replica {
        let extra: Vec<(&str, &str)> = self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let app = Application::build(settings_for(&self.database, &self.secret, &extra))
            .await
            .unwrap_or_else(|e| panic!("the replica did not build: {e}"));
        let address = format!("http://127.0.0.1:{}", app.port());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Replica { address, _shutdown: tx }
    }

    /// Signs and POSTs a webhook to `address` (this app's or a replica's).
    pub async fn deliver_to(&self, address: &str, body: &str, svix_id: &str) -> (StatusCode, Value) {
        let timestamp = now_secs();
        let response = self
            .client
            .post(format!("{address}/webhooks/clerk"))
            .header("content-type", "application/json")
            .header("svix-id", svix_id)
            .header("svix-timestamp", timestamp.to_string())
            .header(
                "svix-signature",
                sign(&self.secret, svix_id, timestamp, body.as_bytes()),
            )
            .body(body.to_string())
            .send()
            .await
            .expect("POST /webhooks/clerk failed to send");
        into_json(response).await
    }

    /// Signs `body` with the app's secret and a fresh timestamp, and POSTs it with `svix-*` headers.
    pub async fn post_webhook(&self, body: &str, svix_id: &str) -> reqwest::Response {
        let timestamp = now_secs();
        let signature = sign(&self.secret, svix_id, timestamp, body.as_bytes());
        self.post_webhook_raw(
            body.as_bytes().to_vec(),
            &[
                ("svix-id", svix_id.to_string()),
                ("svix-timestamp", timestamp.to_string()),
                ("svix-signature", signature),
            ],
        )
        .await
    }

    /// POSTs exactly these bytes and headers (plus `content-type: application/json`).
    pub async fn post_webhook_raw(&self, body: Vec<u8>, headers: &[(&str, String)]) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/webhooks/clerk", self.address))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.expect("POST /webhooks/clerk failed to send")
    }

    /// Posts a signed webhook and returns the status and JSON body.
    pub async fn deliver(&self, body: &str, svix_id: &str) -> (StatusCode, Value) {
        into_json(self.post_webhook(body, svix_id).await).await
    }

    /// Posts a signed webhook and asserts `200 {"outcome": expected}`.
    pub async fn expect_outcome(&self, body: &str, svix_id: &str, expected: &str) {
        let (status, json) = self.deliver(body, svix_id).await;
        assert_eq!(
            (status, json["outcome"].as_str()),
            (StatusCode::OK, Some(expected)),
            "delivery {svix_id}: expected 200 {{\"outcome\":\"{expected}\"}}, got {status} {json}"
        );
    }

    pub async fn livez(&self) -> reqwest::Response {
        self.get("/livez").await
    }

    pub async fn readyz(&self) -> reqwest::Response {
        self.get("/readyz").await
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} failed to send: {e}"))
    }

    /// `GET /v1/users/{clerk_id}` with `Authorization: Bearer <token>` (`clerk_id` is put in the path as is).
    pub async fn get_user(&self, clerk_id: &str, token: &str) -> ApiAnswer {
        self.api(
            "GET",
            &format!("/v1/users/{clerk_id}"),
            Some(&format!("Bearer {token}")),
        )
        .await
    }

    /// `POST /v1/users/{clerk_id}/sync` with `Authorization: Bearer <token>`.
    pub async fn sync_user(&self, clerk_id: &str, token: &str) -> ApiAnswer {
        self.api(
            "POST",
            &format!("/v1/users/{clerk_id}/sync"),
            Some(&format!("Bearer {token}")),
        )
        .await
    }

    /// `GET /v1/me` with `Authorization: Bearer <jwt>`.
    pub async fn me(&self, jwt: &str) -> ApiAnswer {
        self.api("GET", "/v1/me", Some(&format!("Bearer {jwt}"))).await
    }

    /// Any request to the API, with exactly this `Authorization` header value (or none).
    pub async fn api(&self, method: &str, path: &str, authorization: Option<&str>) -> ApiAnswer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("bad method");
        let mut request = self.client.request(method.clone(), format!("{}{path}", self.address));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} failed to send: {e}"));
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or("<not ascii>").to_string());
        let body = response.text().await.expect("cannot read the response body");
        ApiAnswer {
            status,
            json: serde_json::from_str(&body).unwrap_or(Value::Null),
            body,
            retry_after,
        }
    }

    /// The fake Clerk (panics when the app was not spawned with one).
    pub fn clerk(&self) -> &MockServer {
        self.clerk.as_ref().expect("spawn the app with spawn_app_with_clerk")
    }

    /// How many requests the fake Clerk received whose path starts with `prefix` (e.g. `/v1/users/`), leaving out
    /// the key check (`GET /v1/instance`) made at start-up and before a backfill.
    pub async fn clerk_requests(&self, prefix: &str) -> usize {
        self.clerk()
            .received_requests()
            .await
            .expect("wiremock request recording is disabled")
            .iter()
            .filter(|r| r.url.path().starts_with(prefix) && r.url.path() != "/v1/instance")
            .count()
    }

    /// Polls `/readyz` until it answers 200, failing after `within`.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let status = self.readyz().await.status();
            if status == StatusCode::OK {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/readyz still answers {status} after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Makes the database unavailable (see [`TestDatabase::block`]).
    pub async fn block_database(&self) -> DbBlock {
        self.database.block().await
    }

    /// Stops the daemon gracefully (asserting it stops cleanly) and starts a new one on the same database.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        self.db.close().await;
        let extra: Vec<(String, String)> = std::mem::take(&mut self.extra_env);
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let secret = self.secret.clone();
        let clerk = self.clerk.take();
        // Move the database out: replace it with a throwaway SQLite one, which cleans up after itself.
        let database = std::mem::replace(&mut self.database, TestDatabase::create(Backend::Sqlite).await);
        let mut app = spawn_with_secret(database, secret, &extra).await;
        app.clerk = clerk;
        app
    }

    /// The daemon's own database handle type, opened on this app's database.
    pub async fn connect_db(&self) -> clerk_sync::store::Db {
        let extra: Vec<(&str, &str)> = self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let settings = settings_for(&self.database, &self.secret, &extra);
        clerk_sync::store::Db::connect(&settings.database)
            .await
            .expect("connect")
    }

    /// Runs `clerk-sync backfill` in this process against the app's database and fake Clerk.
    pub async fn backfill(
        &self,
        options: clerk_sync::backfill::Options,
    ) -> Result<clerk_sync::backfill::Summary, clerk_sync::backfill::BackfillError> {
        let extra: Vec<(&str, &str)> = self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let settings = settings_for(&self.database, &self.secret, &extra);
        let backfill = clerk_sync::backfill::Backfill::connect(&settings).await?;
        let summary = backfill.run(options, &mut clerk_sync::backfill::Quiet).await;
        backfill.db.close().await;
        summary
    }

    /// Sends the shutdown signal and waits (at most 15 s) for `run_until_stopped` to return `Ok(())`.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let result = tokio::time::timeout(Duration::from_secs(15), server)
                .await
                .expect("run_until_stopped did not return within 15 s of the shutdown signal")
                .expect("the server task panicked");
            if let Err(e) = result {
                panic!("run_until_stopped returned an error: {e}");
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Status and JSON body of a response (JSON `null` when the body is not JSON).
pub async fn into_json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("cannot read the response body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

// ---------------------------------------------------------------------------------------------------------------
// A Server-Sent Events client for `GET /v1/changes` (tests/api/feed.rs).

/// One Server-Sent Event as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// An open event stream: bytes are read as they arrive and split into events at blank lines.
pub struct SseStream {
    response: reqwest::Response,
    buffer: String,
    /// Comment lines (`: ...`, keep-alives) seen so far.
    pub comments: usize,
    ended: bool,
}

impl SseStream {
    /// The next event, or `None` when none arrives within `within` or the stream ended.
    pub async fn next_event(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(event) = self.parse_one() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(bytes))) => {
                    let text = std::str::from_utf8(&bytes).expect("the event stream is not UTF-8");
                    self.buffer.push_str(&text.replace("\r\n", "\n"));
                }
                Ok(Ok(None)) => self.ended = true,
                Ok(Err(e)) => panic!("the event stream failed: {e}"),
            }
        }
    }

    /// Exactly `n` events, each within `within` of the previous one (panics otherwise).
    pub async fn take(&mut self, n: usize, within: Duration) -> Vec<SseEvent> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            match self.next_event(within).await {
                Some(event) => events.push(event),
                None => panic!(
                    "the event stream gave {} of {n} events, then nothing for {within:?}: {events:?}",
                    events.len()
                ),
            }
        }
        events
    }

    /// Whether the server closed the stream.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Takes one complete event block off the buffer (blocks holding only comments are counted and skipped).
    fn parse_one(&mut self) -> Option<SseEvent> {
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let mut event = SseEvent {
                id: None,
                event: None,
                data: String::new(),
            };
            let mut data_lines: Vec<&str> = Vec::new();
            let mut fields = 0;
            for line in block.lines().filter(|l| !l.is_empty()) {
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                fields += 1;
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match name {
                    "id" => event.id = Some(value.to_string()),
                    "event" => event.event = Some(value.to_string()),
                    "data" => data_lines.push(value),
                    other => panic!("unexpected SSE field {other:?} in {block:?}"),
                }
            }
            if fields > 0 {
                event.data = data_lines.join("\n");
                return Some(event);
            }
        }
        None
    }
}

impl TestApp {
    /// Opens `GET {address}/v1/changes{query}` with `Accept: text/event-stream`, the service token and, when
    /// given, `Last-Event-ID`; asserts 200 with an event-stream content type.
    pub async fn changes_stream(&self, address: &str, query: &str, last_event_id: Option<&str>) -> SseStream {
        let mut request = self
            .client
            .get(format!("{address}/v1/changes{query}"))
            .header("accept", "text/event-stream")
            .header("authorization", format!("Bearer {SERVICE_TOKEN}"))
            // Longer than any test keeps a stream open; the client's default would cut it at 30 s.
            .timeout(Duration::from_secs(300));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("GET /v1/changes (SSE) failed to send");
        assert_eq!(response.status(), StatusCode::OK, "GET /v1/changes{query} (SSE)");
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("text/event-stream"),
            "content-type of the stream: {content_type:?}"
        );
        SseStream::from_response(response)
    }
}

impl SseStream {
    /// Reads the events of a response already checked to be a stream.
    pub fn from_response(response: reqwest::Response) -> SseStream {
        SseStream {
            response,
            buffer: String::new(),
            comments: 0,
            ended: false,
        }
    }
}
