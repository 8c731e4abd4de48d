//! A fast local fake of Clerk's user list for the backfill benchmark: users generated from their index (no
//! memory per user), pages of up to 500 in `created_at` order after a `starting_after` cursor, and Clerk's
//! production rate limit enforced (1000 requests per 10 s, 429 with `Retry-After`). It is an instance without
//! organizations (most B2C apps): every organizations endpoint answers Clerk's 403
//! `organization_not_enabled_in_instance`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::Uri;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub struct FakeClerk {
    pub users: u64,
    pub requests: AtomicU64,
    pub limited: AtomicU64,
    /// Request times within the last 10 s.
    window: Mutex<std::collections::VecDeque<Instant>>,
    base_ms: i64,
}

fn user_json(out: &mut String, i: u64, base_ms: i64) {
    use std::fmt::Write;
    let t = base_ms + i as i64;
    let _ = write!(
        out,
        r#"{{"id":"user_bf{i:010}","object":"user","first_name":"Fill","last_name":"User{i}","username":null,"image_url":"https://img.clerk.com/x","primary_email_address_id":"idn_{i}","email_addresses":[{{"id":"idn_{i}","object":"email_address","email_address":"bf{i}@example.org"}}],"phone_numbers":[],"external_id":null,"public_metadata":{{}},"banned":false,"created_at":{t},"updated_at":{t}}}"#
    );
}

impl FakeClerk {
    /// Starts the fake on a loopback port; returns it and its base URL.
    pub async fn start(users: u64) -> (Arc<FakeClerk>, String) {
        let fake = Arc::new(FakeClerk {
            users,
            requests: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            window: Mutex::new(Default::default()),
            base_ms: std::time::UNIX_EPOCH.elapsed().expect("clock").as_millis() as i64 - 86_400_000,
        });
        let app = Router::new()
            .route("/v1/users", get(list))
            .route("/v1/users/count", get(count))
            .route("/v1/instance", get(instance))
            .route("/v1/organizations", get(organizations_off))
            .route("/v1/organizations/{*rest}", get(organizations_off))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (fake, url)
    }

    /// Clerk's production limit: 1000 requests in any 10 s window.
    fn admit(&self) -> bool {
        let now = Instant::now();
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(10))
        {
            window.pop_front();
        }
        if window.len() >= 1000 {
            return false;
        }
        window.push_back(now);
        true
    }
}

async fn count(State(fake): State<Arc<FakeClerk>>) -> Response {
    axum::Json(serde_json::json!({"object": "total_count", "total_count": fake.users})).into_response()
}

async fn instance(State(fake): State<Arc<FakeClerk>>) -> Response {
    fake.requests.fetch_add(1, Ordering::Relaxed);
    let body = serde_json::json!({"object": "instance", "id": "ins_bench", "environment_type": "production"});
    axum::Json(body).into_response()
}

async fn organizations_off(State(fake): State<Arc<FakeClerk>>) -> Response {
    fake.requests.fetch_add(1, Ordering::Relaxed);
    let body = serde_json::json!({"errors": [{
        "message": "access denied",
        "long_message": "The organizations feature is not enabled for this instance.",
        "code": "organization_not_enabled_in_instance"
    }]});
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

async fn list(State(fake): State<Arc<FakeClerk>>, uri: Uri) -> Result<Response, Infallible> {
    let (mut limit, mut after) = (10_u64, None::<String>);
    for (key, value) in url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "limit" => limit = value.parse().unwrap_or(10),
            "starting_after" => after = Some(value.into_owned()),
            _ => {}
        }
    }
    fake.requests.fetch_add(1, Ordering::Relaxed);
    if !fake.admit() {
        fake.limited.fetch_add(1, Ordering::Relaxed);
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "rate limited",
        )
            .into_response());
    }
    let start = match after.as_deref().and_then(|s| s.strip_prefix("user_bf")) {
        Some(n) => n.parse::<u64>().map_or(fake.users, |n| n + 1),
        None => 0,
    };
    let end = (start + limit.min(500)).min(fake.users);
    let mut body = String::with_capacity(((end - start) * 400) as usize + 2);
    body.push('[');
    for i in start..end {
        if i > start {
            body.push(',');
        }
        user_json(&mut body, i, fake.base_ms);
    }
    body.push(']');
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from(body)).into_response())
}
