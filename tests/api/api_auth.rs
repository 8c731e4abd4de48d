//! Who may call the `/v1` API: service tokens on the service routes, session tokens on `/v1/me`, nothing else.

use reqwest::StatusCode;

use crate::api_checks::{assert_error, assert_user_json};
use crate::clerk::{jwks_mock, now_ms, session_token, svix_id, user_mock, ClerkUser};
use crate::helpers::{spawn_app_with_clerk, OTHER_SERVICE_TOKEN, SERVICE_TOKEN};

both_backends!(
    every_route_refuses_missing_wrong_and_wrong_kind_tokens,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let user = ClerkUser::new(now_ms() - 60_000);
        let stored = ClerkUser::new(now_ms() - 60_000);
        jwks_mock().mount(app.clerk()).await;
        // A request let through would fetch and create this user, or answer the stored one.
        user_mock(&user).expect(0).mount(app.clerk()).await;
        user_mock(&stored).expect(0).mount(app.clerk()).await;
        app.expect_outcome(&stored.created(), &svix_id(), "applied").await;
        let jwt = session_token(&user.id);
        let stored_jwt = session_token(&stored.id);

        let mut cases: Vec<(&str, String, Option<String>, &str)> = Vec::new();
        for id in [&user.id, &stored.id] {
            for (method, path) in [
                ("GET", format!("/v1/users/{id}")),
                ("POST", format!("/v1/users/{id}/sync")),
            ] {
                cases.push((method, path.clone(), None, "no Authorization"));
                cases.push((method, path.clone(), Some("Bearer tok_wrong".into()), "wrong token"));
                cases.push((method, path.clone(), Some("Bearer tok_".into()), "prefix of a token"));
                cases.push((
                    method,
                    path.clone(),
                    Some("Bearer tok_ab".into()),
                    "extension of a token",
                ));
                cases.push((method, path.clone(), Some("Bearer TOK_A".into()), "token in other case"));
                cases.push((method, path.clone(), Some("Bearer ".into()), "empty bearer"));
                cases.push((method, path.clone(), Some(SERVICE_TOKEN.into()), "token without scheme"));
                cases.push((method, path.clone(), Some("Basic dG9rX2E6".into()), "basic auth"));
                cases.push((method, path.clone(), Some(format!("Bearer {jwt}")), "session JWT"));
                cases.push((
                    method,
                    path.clone(),
                    Some(format!("Bearer {stored_jwt}")),
                    "session JWT of this user",
                ));
            }
        }
        for (label, value) in [
            ("no Authorization", None),
            ("wrong token", Some("Bearer tok_wrong".to_string())),
            ("empty bearer", Some("Bearer ".into())),
            ("service token tok_a", Some(format!("Bearer {SERVICE_TOKEN}"))),
            ("service token tok_b", Some(format!("Bearer {OTHER_SERVICE_TOKEN}"))),
            ("JWT without scheme", Some(jwt.clone())),
        ] {
            cases.push(("GET", "/v1/me".into(), value, label));
        }

        for (method, path, authorization, what) in &cases {
            let answer = app.api(method, path, authorization.as_deref()).await;
            assert_error(
                &answer,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &format!("{method} {path} with {what}"),
            );
        }
        assert_eq!(
            app.clerk_requests("/v1/users/").await,
            0,
            "an unauthorized request reached Clerk"
        );
        assert_eq!(app.db.count_users(&user.id).await, 0);
        app.clerk().verify().await;
    }
);

both_backends!(both_service_tokens_work, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let user = ClerkUser::new(now_ms() - 60_000);
    // One fallback fetch, then one per sync.
    user_mock(&user).expect(3).mount(app.clerk()).await;

    let created = app.get_user(&user.id, OTHER_SERVICE_TOKEN).await;
    assert_eq!(created.status, StatusCode::CREATED, "GET with tok_b: {}", created.body);
    assert_user_json(&created.json, &user, "fallback", "fallback");
    let read = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(read.status, StatusCode::OK, "GET with tok_a: {}", read.body);
    assert_eq!(read.json, created.json);
    for token in [SERVICE_TOKEN, OTHER_SERVICE_TOKEN] {
        let synced = app.sync_user(&user.id, token).await;
        assert_eq!(synced.status, StatusCode::OK, "sync with {token}: {}", synced.body);
        assert_eq!(synced.json, created.json);
    }
    // "bearer" in any case is the same scheme.
    let answer = app
        .api(
            "GET",
            &format!("/v1/users/{}", user.id),
            Some(&format!("bearer {SERVICE_TOKEN}")),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "lower-case scheme: {}", answer.body);
    app.clerk().verify().await;
});

both_backends!(no_configured_tokens_refuses_every_service_call, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[("CLERK_SYNC_API_TOKENS", "")]).await;
    let user = ClerkUser::new(now_ms() - 60_000);
    user_mock(&user).expect(0).mount(app.clerk()).await;
    for authorization in [None, Some("Bearer "), Some("Bearer tok_a"), Some("Bearer")] {
        for (method, path) in [
            ("GET", format!("/v1/users/{}", user.id)),
            ("POST", format!("/v1/users/{}/sync", user.id)),
        ] {
            let answer = app.api(method, &path, authorization).await;
            assert_error(
                &answer,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &format!("{method} {path} with {authorization:?} and no tokens configured"),
            );
        }
    }
    app.clerk().verify().await;
});
