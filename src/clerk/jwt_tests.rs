//! Session-token verification: JWKS (served by a fake Clerk) and networkless PEM mode.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use wiremock::matchers::{header, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{AuthError, ClerkClient, JwtVerifier};
use crate::config::{ClerkSettings, Secret, Settings};

const KEY: &str = include_str!("../../tests/fixtures/jwt_test_key.pem");
const PUBLIC_KEY: &str = include_str!("../../tests/fixtures/jwt_test_key.pub.pem");
const OTHER_KEY: &str = include_str!("../../tests/fixtures/jwt_other_key.pem");
const JWKS: &str = include_str!("../../tests/fixtures/jwks.json");
const KID: &str = "ins_test_key_1";

fn now() -> i64 {
    std::time::UNIX_EPOCH.elapsed().expect("clock").as_secs() as i64
}

fn claims(exp_in: i64, nbf_in: i64, azp: &str) -> serde_json::Value {
    let now = now();
    json!({"sub": "user_2abc", "azp": azp, "iat": now, "nbf": now + nbf_in, "exp": now + exp_in,
           "iss": "https://clerk.example.com", "sid": "sess_1"})
}

fn token_with(key: &str, kid: &str, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(key.as_bytes()).expect("key"),
    )
    .expect("sign")
}

fn token(claims: &serde_json::Value) -> String {
    token_with(KEY, KID, claims)
}

fn settings(server: &MockServer, tweak: impl FnOnce(&mut ClerkSettings)) -> ClerkSettings {
    let mut s = Settings::load(None, &|_| None).expect("defaults").clerk;
    s.api_url = server.uri().parse().expect("url");
    s.secret_key = Secret::new("sk_test_abc");
    s.authorized_parties = vec!["https://app.example.com".into()];
    tweak(&mut s);
    s
}

async fn jwks_server(expected_fetches: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/v1/jwks"))
        .and(header("authorization", "Bearer sk_test_abc"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(JWKS, "application/json"))
        .expect(expected_fetches)
        .mount(&server)
        .await;
    server
}

fn verifier(s: &ClerkSettings) -> JwtVerifier {
    JwtVerifier::new(s, ClerkClient::new(s).expect("client")).expect("verifier")
}

fn assert_invalid(result: Result<super::SessionClaims, AuthError>) {
    assert!(matches!(result, Err(AuthError::Invalid(_))), "{result:?}");
}

#[tokio::test]
async fn valid_token_against_jwks_is_accepted_and_keys_are_cached() {
    let server = jwks_server(1).await;
    let v = verifier(&settings(&server, |_| {}));
    let good = token(&claims(60, 0, "https://app.example.com"));
    assert_eq!(v.verify(&good).await.expect("valid").sub, "user_2abc");
    assert_eq!(v.verify(&good).await.expect("valid again").sub, "user_2abc");
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let server = jwks_server(1).await;
    let v = verifier(&settings(&server, |_| {}));
    assert_invalid(v.verify(&token(&claims(-60, -120, "https://app.example.com"))).await);
    assert_invalid(v.verify(&token(&claims(120, 60, "https://app.example.com"))).await);
}

#[tokio::test]
async fn wrong_azp_is_refused() {
    let server = jwks_server(1).await;
    let v = verifier(&settings(&server, |_| {}));
    assert_invalid(v.verify(&token(&claims(60, 0, "https://evil.example.com"))).await);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let server = jwks_server(0).await;
    let v = verifier(&settings(&server, |_| {}));
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": KID}).to_string());
    let body = URL_SAFE_NO_PAD.encode(claims(60, 0, "https://app.example.com").to_string());
    assert_invalid(v.verify(&format!("{header}.{body}.")).await);
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let server = jwks_server(0).await;
    let v = verifier(&settings(&server, |_| {}));
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(KID.into());
    let forged = encode(
        &header,
        &claims(60, 0, "https://app.example.com"),
        &EncodingKey::from_secret(PUBLIC_KEY.as_bytes()),
    )
    .expect("sign");
    assert_invalid(v.verify(&forged).await);
}

#[tokio::test]
async fn unknown_kid_refetches_once_then_refuses() {
    // One fetch for the first (valid) token, one refetch for the unknown kid, none after that.
    let server = jwks_server(2).await;
    let v = verifier(&settings(&server, |_| {}));
    v.verify(&token(&claims(60, 0, "https://app.example.com")))
        .await
        .expect("valid");
    let stranger = token_with(OTHER_KEY, "ins_unknown", &claims(60, 0, "https://app.example.com"));
    assert_invalid(v.verify(&stranger).await);
    assert_invalid(v.verify(&stranger).await);
}

#[tokio::test]
async fn networkless_pem_mode_needs_no_clerk() {
    let server = jwks_server(0).await;
    let s = settings(&server, |s| s.jwt_key = PUBLIC_KEY.into());
    let v = verifier(&s);
    assert_eq!(
        v.verify(&token(&claims(60, 0, "https://app.example.com")))
            .await
            .expect("valid")
            .sub,
        "user_2abc"
    );
    let other = token_with(OTHER_KEY, KID, &claims(60, 0, "https://app.example.com"));
    assert_invalid(v.verify(&other).await);
}

#[tokio::test]
async fn jwks_outage_is_not_the_callers_fault() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/jwks"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let v = verifier(&settings(&server, |s| s.retry_budget_ms = 300));
    let result = v.verify(&token(&claims(60, 0, "https://app.example.com"))).await;
    assert!(matches!(result, Err(AuthError::Keys(_))), "{result:?}");
}

/// How many JWKS fetches the fake Clerk received.
async fn jwks_calls(server: &MockServer) -> usize {
    server.received_requests().await.expect("recorded").len()
}

fn stranger() -> String {
    token_with(OTHER_KEY, "ins_unknown", &claims(60, 0, "https://app.example.com"))
}

#[tokio::test]
async fn unknown_kids_while_clerk_fails_are_401_and_refetch_once() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(JWKS, "application/json"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/jwks"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let v = verifier(&settings(&server, |s| s.retry_budget_ms = 300));
    v.verify(&token(&claims(60, 0, "https://app.example.com")))
        .await
        .expect("valid");
    // The first unknown kid refetches (and Clerk fails, retried within the budget); the next five do not.
    assert_invalid(v.verify(&stranger()).await);
    let after_refetch = jwks_calls(&server).await;
    assert!(after_refetch >= 2, "the unknown kid refetched ({after_refetch} calls)");
    for _ in 0..5 {
        assert_invalid(v.verify(&stranger()).await);
    }
    assert_eq!(jwks_calls(&server).await, after_refetch, "refetches must be throttled");
    // Known keys keep working.
    v.verify(&token(&claims(60, 0, "https://app.example.com")))
        .await
        .expect("still valid");
}

#[tokio::test]
async fn an_empty_key_set_is_not_refetched_for_every_token() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(r#"{"keys": []}"#, "application/json"))
        .mount(&server)
        .await;
    let v = verifier(&settings(&server, |_| {}));
    for _ in 0..6 {
        assert_invalid(v.verify(&stranger()).await);
    }
    // The first load, and one refetch for an unknown kid; then the interval holds.
    assert_eq!(jwks_calls(&server).await, 2);
}

#[tokio::test]
async fn a_failing_first_load_is_not_retried_for_every_token() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/jwks"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
        .mount(&server)
        .await;
    let v = verifier(&settings(&server, |s| s.retry_budget_ms = 300));
    let first = v.verify(&stranger()).await;
    assert!(matches!(first, Err(AuthError::Keys(_))), "{first:?}");
    let calls = jwks_calls(&server).await;
    for _ in 0..5 {
        // No key was ever loaded, so this is still Clerk's outage (503), but Clerk is not called again.
        let result = v.verify(&stranger()).await;
        assert!(matches!(result, Err(AuthError::Keys(_))), "{result:?}");
    }
    assert_eq!(
        jwks_calls(&server).await,
        calls,
        "fetches must be throttled after a failure too"
    );
}

#[tokio::test]
async fn the_refetch_interval_passes() {
    let server = jwks_server(3).await;
    let v = verifier(&settings(&server, |s| s.jwks_refetch_interval_ms = 200));
    v.verify(&token(&claims(60, 0, "https://app.example.com")))
        .await
        .expect("valid");
    assert_invalid(v.verify(&stranger()).await);
    assert_invalid(v.verify(&stranger()).await);
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    assert_invalid(v.verify(&stranger()).await);
}

#[tokio::test]
async fn a_pending_session_is_signed_out() {
    let server = jwks_server(1).await;
    let v = verifier(&settings(&server, |_| {}));
    let mut pending = claims(60, 0, "https://app.example.com");
    pending["sts"] = json!("pending");
    let refused = v.verify(&token(&pending)).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.to_string().contains("pending")),
        "{refused:?}"
    );
    let mut active = claims(60, 0, "https://app.example.com");
    active["sts"] = json!("active");
    assert_eq!(v.verify(&token(&active)).await.expect("active").sub, "user_2abc");
}

#[tokio::test]
async fn iat_past_the_leeway_is_refused() {
    let server = jwks_server(1).await;
    let v = verifier(&settings(&server, |s| s.jwt_leeway_secs = 5));
    for ahead in [3_600, 10] {
        let mut future = claims(7_200, 0, "https://app.example.com");
        future["iat"] = json!(now() + ahead);
        assert_invalid(v.verify(&token(&future)).await);
    }
    let mut close = claims(60, 0, "https://app.example.com");
    close["iat"] = json!(now() + 3);
    assert_eq!(
        v.verify(&token(&close)).await.expect("within the leeway").sub,
        "user_2abc"
    );
    let mut none = claims(60, 0, "https://app.example.com");
    none.as_object_mut().expect("object").remove("iat");
    assert_eq!(v.verify(&token(&none)).await.expect("iat is optional").sub, "user_2abc");
}
