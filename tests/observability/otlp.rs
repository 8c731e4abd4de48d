//! OTLP/HTTP trace export: spans reach a loopback collector (continuing the caller's `traceparent`) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and nothing is sent — not even to the SDK's default port — when not.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use tokio::net::TcpListener;
use wiremock::MockServer;

use crate::common::{clerk_user, envelope, now_ms, svix_id, user_id};
use crate::daemon::Daemon;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];

#[derive(Debug)]
struct Received {
    method: String,
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// A loopback OTLP/HTTP collector recording every request (any path); answers 200 with an empty body.
struct Collector {
    address: SocketAddr,
    log: Log,
    server: tokio::task::JoinHandle<()>,
}

async fn record(
    State(log): State<Log>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    log.lock().expect("collector log").push(Received {
        method: method.to_string(),
        path: uri.path().to_owned(),
        content_type,
        body: body.to_vec(),
    });
    StatusCode::OK
}

impl Collector {
    async fn start(listener: TcpListener) -> Collector {
        let log: Log = Arc::default();
        let address = listener.local_addr().expect("collector address");
        let app = axum::Router::new().fallback(record).with_state(log.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector { address, log, server }
    }

    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.log.lock().expect("collector log"))
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A webhook and a fallback GET, so there are request, actor, database and Clerk spans.
async fn traffic(daemon: &Daemon, clerk: &MockServer, traceparent: Option<&str>) {
    let body = envelope("user.created", clerk_user(&user_id(), now_ms()));
    let (status, text) = daemon.post_webhook(&body, &svix_id()).await;
    assert_eq!(status, StatusCode::OK, "user.created webhook: {text}");
    let id = user_id();
    crate::common::clerk_knows(clerk, &clerk_user(&id, now_ms())).await;
    let mut request = daemon
        .client
        .get(format!("{}/v1/users/{id}", daemon.url))
        .bearer_auth("tok_test");
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.expect("GET /v1/users/{id}");
    assert_eq!(response.status(), StatusCode::CREATED, "fallback GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_http_continuing_the_callers_trace() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the collector");
    let collector = Collector::start(listener).await;
    let clerk = MockServer::start().await;
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let database_url = format!("sqlite://{}", dir.path().join("clerk-sync.db").display());
    let endpoint = format!("http://{}", collector.address);
    let daemon = Daemon::start(
        &database_url,
        &clerk.uri(),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)],
    )
    .await;
    traffic(&daemon, &clerk, Some(TRACEPARENT)).await;
    daemon.stop().await; // flushes the batch exporter

    let received = collector.take();
    let summary: Vec<String> = received
        .iter()
        .map(|r| format!("{} {} {:?} ({} bytes)", r.method, r.path, r.content_type, r.body.len()))
        .collect();
    let traces: Vec<&Received> = received
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/traces")
        .collect();
    assert!(
        !traces.is_empty(),
        "no POST /v1/traces reached the collector; received: {summary:?}"
    );
    assert!(
        traces
            .iter()
            .all(|r| r.content_type.as_deref() == Some("application/x-protobuf")),
        "OTLP/HTTP export must be protobuf (content-type application/x-protobuf); received: {summary:?}"
    );
    assert!(
        traces.iter().any(|r| contains(&r.body, &TRACE_ID)),
        "no exported span carries trace id 4bf92f3577b34da6a3ce929d0e0e4736 from the request's traceparent \
         (the caller's trace is not continued); received: {summary:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_exported_without_an_otlp_endpoint() {
    let listener = TcpListener::bind("127.0.0.1:4318").await.unwrap_or_else(|e| {
        panic!(
            "cannot bind 127.0.0.1:4318 (the OTLP/HTTP SDK default, where an unconfigured exporter would send): {e}. \
             Stop whatever listens there (an OpenTelemetry collector?) and run the test again."
        )
    });
    let collector = Collector::start(listener).await;
    let clerk = MockServer::start().await;
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let database_url = format!("sqlite://{}", dir.path().join("clerk-sync.db").display());
    let daemon = Daemon::start(&database_url, &clerk.uri(), &[]).await;
    traffic(&daemon, &clerk, Some(TRACEPARENT)).await;
    traffic(&daemon, &clerk, None).await;
    daemon.stop().await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let received = collector.take();
    let summary: Vec<String> = received
        .iter()
        .map(|r| format!("{} {} {:?} ({} bytes)", r.method, r.path, r.content_type, r.body.len()))
        .collect();
    assert!(
        received.is_empty(),
        "without OTEL_EXPORTER_OTLP_ENDPOINT the daemon sent {} request(s) to 127.0.0.1:4318: {summary:?}",
        received.len()
    );
}
