//! `GET /v1/me` with Clerk session tokens: JWKS from the fake Clerk, networkless PEM mode, refused tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::json;

use crate::api_checks::{assert_error, assert_matches_row, assert_user_json};
use crate::clerk::{
    jwks_mock, now_ms, session_claims, session_token, sign_token, svix_id, user_mock, ClerkUser, AZP, JWT_KEY, JWT_KID,
    JWT_OTHER_KEY, JWT_PUBLIC_KEY,
};
use crate::helpers::spawn_app_with_clerk;

both_backends!(me_with_jwks_gets_or_creates_the_user, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let user = ClerkUser::new(now_ms() - 60_000);
    jwks_mock().expect(1).mount(app.clerk()).await;
    user_mock(&user).expect(1).mount(app.clerk()).await;

    let token = session_token(&user.id);
    let first = app.me(&token).await;
    assert_eq!(first.status, StatusCode::CREATED, "first /v1/me: {}", first.body);
    assert_user_json(&first.json, &user, "fallback", "fallback");
    let row = app.db.user(&user.id).await.expect("row missing");
    assert_eq!(row.created_via, "fallback");
    assert_matches_row(&first.json, &row);

    let second = app.me(&session_token(&user.id)).await;
    assert_eq!(second.status, StatusCode::OK, "second /v1/me: {}", second.body);
    assert_eq!(second.json, first.json);
    assert_eq!(app.db.count_users(&user.id).await, 1);
    assert_eq!(app.clerk_requests("/v1/users/").await, 1);
    assert_eq!(
        app.clerk_requests("/v1/jwks").await,
        1,
        "the JWKS must be fetched once and cached"
    );
    app.clerk().verify().await;
});

both_backends!(me_with_a_pem_key_never_calls_jwks, |backend| async move {
    let app = spawn_app_with_clerk(
        backend,
        &[
            ("CLERK_JWT_KEY", JWT_PUBLIC_KEY),
            ("CLERK_SYNC_AUTHORIZED_PARTIES", AZP),
        ],
    )
    .await;
    let t = now_ms() - 60_000;
    let user = ClerkUser::new(t);
    let stored = ClerkUser::new(t);
    let deleted = ClerkUser::new(t);
    jwks_mock().expect(0).mount(app.clerk()).await;
    user_mock(&user).expect(1).mount(app.clerk()).await;
    user_mock(&stored).expect(0).mount(app.clerk()).await;
    user_mock(&deleted).expect(0).mount(app.clerk()).await;
    app.expect_outcome(&stored.created(), &svix_id(), "applied").await;
    app.expect_outcome(&deleted.deleted(t + 1_000), &svix_id(), "applied")
        .await;

    let first = app.me(&session_token(&user.id)).await;
    assert_eq!(first.status, StatusCode::CREATED, "first /v1/me: {}", first.body);
    assert_user_json(&first.json, &user, "fallback", "fallback");
    let second = app.me(&session_token(&user.id)).await;
    assert_eq!(second.status, StatusCode::OK, "second /v1/me: {}", second.body);
    assert_eq!(second.json, first.json);

    let answer = app.me(&session_token(&stored.id)).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "/v1/me of a webhook user: {}",
        answer.body
    );
    assert_user_json(&answer.json, &stored, "webhook", "webhook");

    let answer = app.me(&session_token(&deleted.id)).await;
    assert_error(&answer, StatusCode::GONE, "gone", "/v1/me of a deleted user");
    assert_eq!(app.db.count_users(&deleted.id).await, 0);

    // A token signed by a key other than CLERK_JWT_KEY.
    let forged = sign_token(JWT_OTHER_KEY, JWT_KID, &session_claims(&user.id, AZP, 60));
    assert_error(
        &app.me(&forged).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "other key",
    );

    assert_eq!(
        app.clerk_requests("/v1/jwks").await,
        0,
        "networkless mode fetched the JWKS"
    );
    assert_eq!(app.clerk_requests("/v1/users/").await, 1);
    app.clerk().verify().await;
});

both_backends!(bad_session_tokens_are_401, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[("CLERK_SYNC_AUTHORIZED_PARTIES", AZP)]).await;
    let user = ClerkUser::new(now_ms() - 60_000);
    jwks_mock().mount(app.clerk()).await;
    user_mock(&user).expect(1).mount(app.clerk()).await;
    let id = user.id.as_str();

    let expired = sign_token(JWT_KEY, JWT_KID, &session_claims(id, AZP, -120));
    let mut not_yet = session_claims(id, AZP, 600);
    not_yet["nbf"] = json!(crate::clerk::now_secs() + 300);
    let not_yet = sign_token(JWT_KEY, JWT_KID, &not_yet);
    let wrong_azp = sign_token(JWT_KEY, JWT_KID, &session_claims(id, "https://evil.example.com", 60));
    let other_key = sign_token(JWT_OTHER_KEY, JWT_KID, &session_claims(id, AZP, 60));
    let unknown_kid = sign_token(JWT_OTHER_KEY, "ins_unknown_key", &session_claims(id, AZP, 60));
    let mut hs256 = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs256.kid = Some(JWT_KID.into());
    let hs256 = jsonwebtoken::encode(
        &hs256,
        &session_claims(id, AZP, 60),
        &jsonwebtoken::EncodingKey::from_secret(JWT_PUBLIC_KEY.as_bytes()),
    )
    .expect("sign HS256");
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": JWT_KID}).to_string()),
        URL_SAFE_NO_PAD.encode(session_claims(id, AZP, 60).to_string())
    );
    let valid = session_token(id);
    let (head, rest) = valid.split_once('.').expect("a JWT");
    let (_, signature) = rest.split_once('.').expect("a JWT");
    let mut tampered_claims = session_claims("user_someoneelse", AZP, 60);
    tampered_claims["sid"] = json!("sess_x");
    let tampered = format!(
        "{head}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(tampered_claims.to_string())
    );

    for (token, what) in [
        (expired, "expired"),
        (not_yet, "not yet valid"),
        (wrong_azp, "wrong azp"),
        (other_key, "signed by an unknown key"),
        (unknown_kid, "unknown kid"),
        (hs256, "HS256 with the public key"),
        (alg_none, "alg none"),
        (tampered, "tampered claims"),
        ("not.a.jwt".to_string(), "garbage"),
    ] {
        let answer = app.me(&token).await;
        assert_error(
            &answer,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            &format!("/v1/me with {what} token"),
        );
    }
    assert_eq!(
        app.clerk_requests("/v1/users/").await,
        0,
        "a refused token reached Clerk's users API"
    );
    assert_eq!(app.db.count_all_users().await, 0);

    // The same user with a good token works: the refusals were about the tokens.
    let answer = app.me(&session_token(id)).await;
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "/v1/me with a valid token: {}",
        answer.body
    );
    app.clerk().verify().await;
});

both_backends!(pending_sessions_are_signed_out, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let user = ClerkUser::new(now_ms() - 60_000);
    jwks_mock().mount(app.clerk()).await;
    user_mock(&user).expect(1).mount(app.clerk()).await;

    // Clerk's SDK treats a pending session (tasks left, such as choosing an organization) as signed out.
    let mut pending = session_claims(&user.id, AZP, 60);
    pending["sts"] = json!("pending");
    let answer = app.me(&sign_token(JWT_KEY, JWT_KID, &pending)).await;
    assert_error(
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "/v1/me with a pending session",
    );
    assert!(
        answer.json["message"].as_str().is_some_and(|m| m.contains("pending")),
        "{}",
        answer.body
    );
    assert_eq!(
        app.clerk_requests("/v1/users/").await,
        0,
        "a pending session reached Clerk"
    );

    let mut active = session_claims(&user.id, AZP, 60);
    active["sts"] = json!("active");
    let answer = app.me(&sign_token(JWT_KEY, JWT_KID, &active)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "an active session: {}", answer.body);
    app.clerk().verify().await;
});

both_backends!(tokens_issued_in_the_future_are_refused, |backend| async move {
    // The default leeway (clerk.jwt_leeway_secs) is 5 s.
    let app = spawn_app_with_clerk(backend, &[]).await;
    let user = ClerkUser::new(now_ms() - 60_000);
    jwks_mock().mount(app.clerk()).await;
    user_mock(&user).expect(1).mount(app.clerk()).await;

    for ahead in [3_600, 30] {
        let mut claims = session_claims(&user.id, AZP, 7_200);
        claims["iat"] = json!(crate::clerk::now_secs() + ahead);
        let answer = app.me(&sign_token(JWT_KEY, JWT_KID, &claims)).await;
        assert_error(
            &answer,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            &format!("/v1/me with iat {ahead} s ahead"),
        );
    }
    assert_eq!(app.clerk_requests("/v1/users/").await, 0);

    // Within the leeway, a clock a little ahead is fine.
    let mut claims = session_claims(&user.id, AZP, 60);
    claims["iat"] = json!(crate::clerk::now_secs() + 2);
    let answer = app.me(&sign_token(JWT_KEY, JWT_KID, &claims)).await;
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "iat within the leeway: {}",
        answer.body
    );
    app.clerk().verify().await;
});
