//! Ids, signing, Clerk payloads, the fake Clerk Backend API, free ports and required tools.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub use crate::ids::{new_secret, now_ms, random_tail, sign, svix_id, user_id};

/// 16 random hex digits, for database names.
pub fn random_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The primary email address `clerk_user` gives `id`.
pub fn email_of(id: &str) -> String {
    format!("ada.{}@example.com", id.trim_start_matches("user_").to_lowercase())
}

/// A Clerk Backend API user object (what `GET /v1/users/{id}` returns and webhooks carry in `data`).
pub fn clerk_user(id: &str, updated_at: i64) -> Value {
    let email_id = format!("idn_{}", random_tail(27));
    json!({
        "id": id,
        "object": "user",
        "username": format!("ada_{}", &id[5..13].to_lowercase()),
        "first_name": "Ada",
        "last_name": "Lovelace",
        "image_url": format!("https://img.clerk.com/{}", &id[5..]),
        "has_image": true,
        "primary_email_address_id": email_id,
        "primary_phone_number_id": null,
        "email_addresses": [{
            "id": email_id,
            "object": "email_address",
            "email_address": email_of(id),
            "verification": {"status": "verified", "strategy": "email_code"},
            "linked_to": []
        }],
        "phone_numbers": [],
        "public_metadata": {},
        "private_metadata": {},
        "unsafe_metadata": {},
        "last_sign_in_at": null,
        "created_at": updated_at - 60_000,
        "updated_at": updated_at
    })
}

/// A Clerk webhook envelope around `data`.
pub fn envelope(event_type: &str, data: Value) -> String {
    json!({
        "type": event_type,
        "data": data,
        "object": "event",
        "timestamp": now_ms()
    })
    .to_string()
}

/// `user.deleted`'s data.
pub fn deleted_data(id: &str) -> Value {
    json!({"id": id, "deleted": true, "object": "user"})
}

/// The fake Clerk answers `GET /v1/users/{id}` with `user`.
pub async fn clerk_knows(clerk: &MockServer, user: &Value) {
    let id = user["id"].as_str().expect("user without id");
    Mock::given(method("GET"))
        .and(path(format!("/v1/users/{id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(user))
        .mount(clerk)
        .await;
}

/// The fake Clerk answers 429 (`Retry-After: 1`) once for `user`, then the user.
pub async fn clerk_rate_limits_once(clerk: &MockServer, user: &Value) {
    let id = user["id"].as_str().expect("user without id");
    Mock::given(method("GET"))
        .and(path(format!("/v1/users/{id}")))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_json(json!({"errors": [{"code": "too_many_requests", "message": "slow down"}]})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(clerk)
        .await;
    clerk_knows(clerk, user).await;
}

/// The fake Clerk has no user `id`.
pub async fn clerk_lacks(clerk: &MockServer, id: &str) {
    Mock::given(method("GET"))
        .and(path(format!("/v1/users/{id}")))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"errors": [{"code": "resource_not_found", "message": "not found"}]})),
        )
        .mount(clerk)
        .await;
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot bind 127.0.0.1:0")
        .port()
}

/// An HTTP client that never goes through a proxy (all traffic is loopback).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("reqwest client")
}

/// A file of this repository.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The path of a required executable (`PATH`, then `/usr/bin`); panics saying how to install it.
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    dirs.unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed (neither on PATH nor in /usr/bin). The observability tests need it: \
                 apt-get install {package} (or `scripts/test --setup`, which installs everything the tests need)"
            )
        })
}

/// The last `max` bytes of a log file, for failure messages.
pub fn log_tail(path: &Path, max: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_string()
}
