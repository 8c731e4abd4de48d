//! The Clerk client against a fake Clerk (wiremock): status handling, retries, Retry-After, timeouts.

use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{ClerkClient, ClerkError};
use crate::config::{Secret, Settings};

const USER: &str = "user_2abcDEF123";

async fn client(
    server: &MockServer,
    tweak: impl FnOnce(&mut crate::config::ClerkSettings),
) -> std::sync::Arc<ClerkClient> {
    let mut settings = Settings::load(None, &|_| None).expect("defaults").clerk;
    settings.api_url = server.uri().parse().expect("url");
    settings.secret_key = Secret::new("sk_test_abc");
    settings.request_timeout_ms = 300;
    settings.retry_budget_ms = 3000;
    tweak(&mut settings);
    ClerkClient::new(&settings).expect("client")
}

fn user_json() -> serde_json::Value {
    json!({
        "id": USER, "object": "user", "first_name": "Ada", "last_name": "Lovelace", "username": null,
        "image_url": "https://img.clerk.com/x", "primary_email_address_id": "idn_2",
        "email_addresses": [{"id": "idn_1", "email_address": "old@example.com"},
                            {"id": "idn_2", "email_address": "ada@example.com"}],
        "created_at": 1_700_000_000_000_i64, "updated_at": 1_700_000_000_500_i64
    })
}

/// Clerk answers `failure` to the first request and the user to the second (each exactly once).
async fn fails_once_then_ok(server: &MockServer, failure: ResponseTemplate) {
    Mock::given(path(user_path()))
        .respond_with(failure)
        .up_to_n_times(1)
        .expect(1)
        .mount(server)
        .await;
    Mock::given(path(user_path()))
        .respond_with(ResponseTemplate::new(200).set_body_json(user_json()))
        .expect(1)
        .mount(server)
        .await;
}

fn user_path() -> String {
    format!("/v1/users/{USER}")
}

#[tokio::test]
async fn ok_sends_key_and_version() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(user_path()))
        .and(header("authorization", "Bearer sk_test_abc"))
        .and(header("clerk-api-version", "2025-04-10"))
        .respond_with(ResponseTemplate::new(200).set_body_json(user_json()))
        .expect(1)
        .mount(&server)
        .await;
    let user = client(&server, |_| {}).await.get_user(USER).await.expect("found");
    assert_eq!(user.primary_email(), Some("ada@example.com"));
}

#[tokio::test]
async fn not_found_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(path(user_path()))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "errors": [{"code": "resource_not_found", "message": "not found", "long_message": "User not found"}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        client(&server, |_| {}).await.get_user(USER).await.unwrap_err(),
        ClerkError::NotFound
    );
}

#[tokio::test]
async fn other_4xx_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(path(user_path()))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"errors": [{"code": "authentication_invalid"}]})))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        client(&server, |_| {}).await.get_user(USER).await.unwrap_err(),
        ClerkError::Refused {
            status: 401,
            code: Some("authentication_invalid".into())
        }
    );
}

#[tokio::test]
async fn server_error_then_success_is_retried() {
    let server = MockServer::start().await;
    fails_once_then_ok(&server, ResponseTemplate::new(500)).await;
    assert_eq!(
        client(&server, |_| {}).await.get_user(USER).await.expect("retried").id,
        USER
    );
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let server = MockServer::start().await;
    fails_once_then_ok(&server, ResponseTemplate::new(429).insert_header("retry-after", "1")).await;
    let started = Instant::now();
    client(&server, |_| {})
        .await
        .get_user(USER)
        .await
        .expect("retried after the wait");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn retry_after_beyond_the_budget_gives_up() {
    let server = MockServer::start().await;
    Mock::given(path(user_path()))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "60"))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server, |_| {}).await.get_user(USER).await.unwrap_err();
    assert_eq!(err, ClerkError::RateLimited(Some(Duration::from_secs(60))));
}

#[tokio::test]
async fn timeouts_are_retried_within_the_budget() {
    let server = MockServer::start().await;
    Mock::given(path(user_path()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(user_json())
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&server)
        .await;
    let started = Instant::now();
    let err = client(&server, |s| s.retry_budget_ms = 1500)
        .await
        .get_user(USER)
        .await
        .unwrap_err();
    assert!(matches!(err, ClerkError::Unavailable(_)), "{err:?}");
    let calls = server.received_requests().await.expect("recorded").len();
    assert!(calls >= 2, "retried after a timeout ({calls} calls)");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn malformed_json_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(path(user_path()))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"id\": "))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server, |_| {}).await.get_user(USER).await.unwrap_err();
    assert!(matches!(err, ClerkError::Malformed(_)), "{err:?}");
}

#[tokio::test]
async fn the_request_budget_caps_calls_per_window() {
    let server = MockServer::start().await;
    Mock::given(path(user_path()))
        .respond_with(ResponseTemplate::new(200).set_body_json(user_json()))
        .mount(&server)
        .await;
    let client = client(&server, |s| {
        s.requests_per_10s = 2;
        s.retry_budget_ms = 200;
    })
    .await;
    client.get_user(USER).await.expect("first");
    client.get_user(USER).await.expect("second");
    let err = client.get_user(USER).await.unwrap_err();
    assert!(matches!(err, ClerkError::RateLimited(_)), "{err:?}");
    assert_eq!(server.received_requests().await.expect("recorded").len(), 2);
}

#[tokio::test]
async fn without_a_secret_key_nothing_is_sent() {
    let server = MockServer::start().await;
    let client = client(&server, |s| s.secret_key = Secret::default()).await;
    assert_eq!(client.get_user(USER).await.unwrap_err(), ClerkError::NotConfigured);
    assert!(server.received_requests().await.expect("recorded").is_empty());
}

/// A 429 whose `Retry-After` is `value`, twice: the client must neither panic nor pass the value on unclamped.
async fn absurd_retry_after(value: &str) -> ClerkError {
    let server = MockServer::start().await;
    Mock::given(path(user_path()))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", value))
        .mount(&server)
        .await;
    client(&server, |_| {}).await.get_user(USER).await.unwrap_err()
}

#[tokio::test]
async fn retry_after_of_u64_max_is_clamped_without_overflow() {
    let err = absurd_retry_after("18446744073709551615").await;
    assert_eq!(err, ClerkError::RateLimited(Some(super::client::MAX_RETRY_AFTER)));
}

#[tokio::test]
async fn huge_retry_after_is_clamped_before_reaching_callers() {
    let err = absurd_retry_after("100000000000").await;
    assert_eq!(err.retry_after(), Some(Duration::from_secs(60)));
    // More digits than a u64 holds is just as long.
    let err = absurd_retry_after("99999999999999999999999").await;
    assert_eq!(err.retry_after(), Some(Duration::from_secs(60)));
}
