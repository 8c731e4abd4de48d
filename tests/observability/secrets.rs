//! No secret is ever logged: the real daemon at `RUST_LOG=trace`, every path exercised, all of its output read.

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::{
    clerk_knows, clerk_user, envelope, free_port, log_tail, new_secret, random_hex, repo_path, svix_id, user_id,
};
use crate::daemon::{Daemon, PgDatabase};

/// A JWT-shaped token with an unknown key id: the daemon fetches Clerk's JWKS (with the secret key) to look
/// for it, then refuses it.
fn bad_session_token() -> String {
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        b64(json!({"alg": "RS256", "typ": "JWT", "kid": "ins_unknown_key"})),
        b64(json!({"sub": user_id(), "exp": 4_102_444_800_i64, "iat": 1_700_000_000})),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 256])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_the_logs_at_trace() {
    let database = PgDatabase::create().await;
    let clerk = MockServer::start().await;
    let jwks = std::fs::read_to_string(repo_path("tests/fixtures/jwks.json")).expect("tests/fixtures/jwks.json");
    Mock::given(method("GET"))
        .and(path("/v1/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(jwks, "application/json"))
        .mount(&clerk)
        .await;

    let secret_key = format!("sk_test_{}", random_hex());
    let api_token = format!("tok_{}", random_hex());
    let (userinfo_password, query_password) = (format!("pwUser{}", random_hex()), format!("pwQuery{}", random_hex()));
    let mut db_url = url::Url::parse(&database.url).expect("database url");
    db_url.set_password(Some(&userinfo_password)).expect("set password");
    db_url.set_query(Some(&format!("password={query_password}&application_name=clerk-sync")));
    let db_url = db_url.to_string();
    // Forwarding to an application that is down (nothing listens there): every attempt fails and is logged.
    let (forward_password, forward_token) = (format!("fwdPw{}", random_hex()), format!("fwdTok{}", random_hex()));
    let forward_url = format!(
        "http://hooks:{forward_password}@127.0.0.1:{}/changes?tenant=acme&token={forward_token}",
        free_port()
    );
    let forward_secret = new_secret();
    let env = [
        ("RUST_LOG", "trace"),
        ("CLERK_SECRET_KEY", secret_key.as_str()),
        ("CLERK_SYNC_API_TOKENS", api_token.as_str()),
        ("CLERK_SYNC_FORWARD__URL", forward_url.as_str()),
        ("CLERK_SYNC_FORWARD__SIGNING_SECRET", forward_secret.as_str()),
        ("CLERK_SYNC_FORWARD__MAX_BACKOFF_SECS", "1"),
    ];
    let mut daemon = Daemon::start(&db_url, &clerk.uri(), &env).await;
    let signing_secret = daemon.secret.clone();
    let secret_base64 = signing_secret.trim_start_matches("whsec_").to_string();

    // A valid webhook, then one with a bad signature.
    let known = user_id();
    let body = envelope("user.created", clerk_user(&known, crate::common::now_ms()));
    let (status, answer) = daemon.post_webhook(&body, &svix_id()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _) = daemon
        .post_webhook_with(
            &body,
            &svix_id(),
            crate::common::now_ms() / 1000,
            "v1,bm90IGEgc2lnbmF0dXJl",
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The API: a hit, a miss that falls back to the fake Clerk, a wrong token, a bad session token.
    let get = |id: &str, token: &str| {
        daemon
            .client
            .get(format!("{}/v1/users/{id}", daemon.url))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(get(&known, &api_token).await.expect("GET").status(), StatusCode::OK);
    let unknown = clerk_user(&user_id(), crate::common::now_ms());
    clerk_knows(&clerk, &unknown).await;
    let id = unknown["id"].as_str().expect("id");
    assert_eq!(get(id, &api_token).await.expect("GET").status(), StatusCode::CREATED);
    assert_eq!(
        get(&known, "tok_wrong").await.expect("GET").status(),
        StatusCode::UNAUTHORIZED
    );
    let me = daemon
        .client
        .get(format!("{}/v1/me", daemon.url))
        .bearer_auth(bad_session_token())
        .send()
        .await
        .expect("GET /v1/me");
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    let jwks_calls = clerk
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .filter(|r| r.url.path() == "/v1/jwks")
        .count();
    assert!(
        jwks_calls >= 1,
        "the bad session token should have made the daemon fetch the JWKS"
    );

    // The change the webhook made is forwarded, and fails, a few times.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&daemon.process.log)
        .unwrap_or_default()
        .matches("forwarding a change failed")
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no failed forwarding attempt was logged:\n{}",
            log_tail(&daemon.process.log, 4000)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // check-config, with the same configuration.
    let check = Command::new(env!("CARGO_BIN_EXE_clerk-sync"))
        .arg("check-config")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .env("DATABASE_URL", &db_url)
        .env("CLERK_WEBHOOK_SIGNING_SECRET", &signing_secret)
        .env("CLERK_SECRET_KEY", &secret_key)
        .env("CLERK_SYNC_API_TOKENS", &api_token)
        .env("CLERK_API_URL", clerk.uri())
        .env("CLERK_SYNC_FORWARD__URL", &forward_url)
        .env("CLERK_SYNC_FORWARD__SIGNING_SECRET", &forward_secret)
        .output()
        .expect("cannot run clerk-sync check-config");
    let check_output = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "check-config failed:\n{check_output}");

    let status = daemon.process.terminate(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "the daemon should exit 0 after SIGTERM");
    let log = std::fs::read_to_string(&daemon.process.log).expect("cannot read the daemon's log");
    assert!(
        log.contains("TRACE") || log.contains("trace"),
        "RUST_LOG=trace produced no trace lines:\n{}",
        log_tail(&daemon.process.log, 2000)
    );

    let secrets = [
        ("the webhook signing secret", signing_secret.as_str()),
        ("the base64 part of the signing secret", secret_base64.as_str()),
        ("CLERK_SECRET_KEY", secret_key.as_str()),
        ("the API token", api_token.as_str()),
        ("the database password (userinfo)", userinfo_password.as_str()),
        ("the database password (?password=)", query_password.as_str()),
        ("the forward URL's password", forward_password.as_str()),
        ("the forward URL's ?token=", forward_token.as_str()),
        ("forward.signing_secret", forward_secret.trim_start_matches("whsec_")),
    ];
    let mut leaks = Vec::new();
    for (output, text) in [("the daemon's log", &log), ("check-config's output", &check_output)] {
        for (what, secret) in secrets {
            if let Some(at) = text.find(secret) {
                let line = text[..at].rsplit('\n').next().unwrap_or_default();
                leaks.push(format!("{what} in {output}, after: {line:.200}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets were printed:\n{}", leaks.join("\n"));
}
