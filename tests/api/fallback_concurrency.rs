//! The fallback under concurrency: single flight for one unknown user, and webhooks racing fallbacks.

use std::sync::Arc;

use reqwest::StatusCode;
use tokio::task::JoinSet;

use crate::api_checks::{assert_matches_row, assert_user_json};
use crate::clerk::{now_ms, svix_id, user_mock, ClerkUser};
use crate::helpers::{spawn_app_with_clerk, SERVICE_TOKEN};

both_backends!(two_hundred_concurrent_gets_call_clerk_once, |backend| async move {
    let app = Arc::new(spawn_app_with_clerk(backend, &[]).await);
    let user = ClerkUser::new(now_ms() - 60_000);
    user_mock(&user).expect(1).mount(app.clerk()).await;

    let mut set = JoinSet::new();
    for _ in 0..200 {
        let app = Arc::clone(&app);
        let id = user.id.clone();
        set.spawn(async move { app.get_user(&id, SERVICE_TOKEN).await });
    }
    let mut answers = Vec::new();
    while let Some(answer) = set.join_next().await {
        answers.push(answer.expect("a request task panicked"));
    }

    let bad: Vec<_> = answers
        .iter()
        .filter(|a| a.status != StatusCode::OK && a.status != StatusCode::CREATED)
        .map(|a| (a.status, a.body.clone()))
        .collect();
    assert!(bad.is_empty(), "{} answers were not 200/201: {bad:?}", bad.len());
    let created = answers.iter().filter(|a| a.status == StatusCode::CREATED).count();
    assert_eq!(created, 1, "exactly one request must create the row");
    let row = app.db.user(&user.id).await.expect("row missing");
    for answer in &answers {
        assert_eq!(answer.json["id"].as_str(), row.id.as_deref(), "{}", answer.body);
        assert_eq!(
            answer.json["clerk_id"].as_str(),
            Some(user.id.as_str()),
            "{}",
            answer.body
        );
    }
    assert_user_json(&answers[0].json, &user, "fallback", "fallback");
    assert_eq!(app.db.count_users(&user.id).await, 1);
    assert_eq!(
        app.clerk_requests("/v1/users/").await,
        1,
        "single flight: 200 concurrent requests must cause one Clerk call"
    );
    app.clerk().verify().await;
});

both_backends!(webhook_and_fallback_racing_end_in_one_row, |backend| async move {
    let app = Arc::new(spawn_app_with_clerk(backend, &[]).await);
    let t = now_ms() - 60_000;
    let users: Vec<ClerkUser> = (0..30).map(|_| ClerkUser::new(t)).collect();
    for user in &users {
        user_mock(user).mount(app.clerk()).await;
    }

    let mut set = JoinSet::new();
    for user in &users {
        let (app_w, app_g) = (Arc::clone(&app), Arc::clone(&app));
        let (body, id) = (user.created(), user.id.clone());
        set.spawn(async move {
            let (status, json) = app_w.deliver(&body, &svix_id()).await;
            (
                id,
                "webhook",
                status,
                json.to_string(),
                json["outcome"].as_str().map(String::from),
            )
        });
        let id = user.id.clone();
        set.spawn(async move {
            let answer = app_g.get_user(&id, SERVICE_TOKEN).await;
            (id, "fallback", answer.status, answer.body, None)
        });
    }
    let mut results = Vec::new();
    while let Some(result) = set.join_next().await {
        results.push(result.expect("a task panicked"));
    }

    let errors: Vec<_> = results.iter().filter(|r| r.2.is_server_error()).collect();
    assert!(errors.is_empty(), "5xx during the race: {errors:?}");
    for user in &users {
        assert_eq!(app.db.count_users(&user.id).await, 1, "one row per user");
        let row = app.db.user(&user.id).await.expect("row missing");
        let webhook = results
            .iter()
            .find(|r| r.0 == user.id && r.1 == "webhook")
            .expect("webhook result");
        let fallback = results
            .iter()
            .find(|r| r.0 == user.id && r.1 == "fallback")
            .expect("fallback result");
        assert_eq!(webhook.2, StatusCode::OK, "webhook for {}: {}", user.id, webhook.3);
        let outcome = webhook.4.as_deref().unwrap_or_default();
        assert!(
            ["applied", "stale"].contains(&outcome),
            "webhook outcome for {}: {}",
            user.id,
            webhook.3
        );
        assert!(
            fallback.2 == StatusCode::OK || fallback.2 == StatusCode::CREATED,
            "fallback for {}: {} {}",
            user.id,
            fallback.2,
            fallback.3
        );
        assert!(["webhook", "fallback"].contains(&row.created_via.as_str()), "{row:?}");
        // created_via names whichever committed first, and that one says so in its answer.
        assert_eq!(
            row.created_via == "fallback",
            fallback.2 == StatusCode::CREATED,
            "created_via {} but the GET answered {}",
            row.created_via,
            fallback.2
        );
        assert_eq!(
            row.created_via == "webhook",
            outcome == "applied",
            "created_via {} but the webhook answered {outcome}",
            row.created_via
        );
        let json: serde_json::Value = serde_json::from_str(&fallback.3).expect("GET body is JSON");
        assert_matches_row(&json, &row);
    }
    assert_eq!(app.db.count_all_users().await, 30);
});

both_backends!(webhook_after_fallback_is_applied_and_served, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let t = now_ms() - 60_000;
    let user = ClerkUser::new(t);
    user_mock(&user).expect(1).mount(app.clerk()).await;

    let created = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let cached = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(cached.status, StatusCode::OK, "{}", cached.body);

    let mut newer = user.at(t + 1);
    newer.first_name = Some("Grace".into());
    newer.last_name = Some("Hopper".into());
    app.expect_outcome(&newer.updated(), &svix_id(), "applied").await;

    let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_user_json(&answer.json, &newer, "fallback", "webhook");
    let row = app.db.user(&user.id).await.expect("row missing");
    assert_eq!(row.first_name.as_deref(), Some("Grace"));
    assert_eq!(row.clerk_updated_at, Some(t + 1));
    assert_matches_row(&answer.json, &row);

    // An older webhook is stale and changes neither the row nor the answer.
    app.expect_outcome(&user.updated(), &svix_id(), "stale").await;
    let again = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(again.json, answer.json);
    assert_eq!(app.clerk_requests("/v1/users/").await, 1);
    app.clerk().verify().await;
});
