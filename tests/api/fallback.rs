//! `GET /v1/users/{clerk_id}`: get-or-create from the (fake) Clerk Backend API, the cache, not-found memory,
//! tombstones, invalid ids and Clerk failures.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::api_checks::{assert_error, assert_matches_row, assert_unavailable, assert_user_json};
use crate::clerk::{failing_mock, not_found_mock, now_ms, svix_id, user_id, user_mock, ClerkUser};
use crate::helpers::{spawn_app_with_clerk, OTHER_SERVICE_TOKEN, SERVICE_TOKEN};

both_backends!(missing_user_is_created_from_clerk_once, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let user = ClerkUser::new(now_ms() - 60_000);
    user_mock(&user).expect(1).mount(app.clerk()).await;

    let first = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(first.status, StatusCode::CREATED, "first GET: {}", first.body);
    assert_user_json(&first.json, &user, "fallback", "fallback");
    assert_eq!(app.db.count_users(&user.id).await, 1);
    let row = app
        .db
        .user(&user.id)
        .await
        .expect("the fallback did not insert the row");
    assert_eq!(row.created_via, "fallback");
    assert_eq!(row.updated_via.as_deref(), Some("fallback"));
    assert_eq!(row.clerk_updated_at, Some(user.updated_at));
    assert!(row.deleted_at.is_none());
    assert_matches_row(&first.json, &row);

    let second = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(second.status, StatusCode::OK, "second GET: {}", second.body);
    assert_eq!(second.json, first.json, "the second answer differs from the first");
    let third = app.get_user(&user.id, OTHER_SERVICE_TOKEN).await;
    assert_eq!(
        third.status,
        StatusCode::OK,
        "GET with the second token: {}",
        third.body
    );
    assert_eq!(third.json, first.json);

    assert_eq!(app.db.count_users(&user.id).await, 1);
    assert_eq!(app.clerk_requests("/v1/users/").await, 1, "Clerk must be called once");
    app.clerk().verify().await;
});

both_backends!(fallback_row_reads_back_the_same_after_restart, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let user = ClerkUser::new(now_ms() - 60_000);
    user_mock(&user).expect(1).mount(app.clerk()).await;
    let created = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    // A new process: empty cache, so the row is read from the database.
    let app = app.restart().await;
    let read = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(
        read.json, created.json,
        "the user read from the database differs from the one the fallback returned"
    );
    assert_eq!(
        app.clerk_requests("/v1/users/").await,
        1,
        "an existing row must not call Clerk"
    );
    app.clerk().verify().await;
});

both_backends!(webhook_user_is_answered_without_clerk, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let user = ClerkUser::new(now_ms() - 60_000);
    user_mock(&user).expect(0).mount(app.clerk()).await;
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;

    for i in 0..3 {
        let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
        assert_eq!(answer.status, StatusCode::OK, "GET #{i}: {}", answer.body);
        assert_user_json(&answer.json, &user, "webhook", "webhook");
        let row = app.db.user(&user.id).await.expect("row missing");
        assert_matches_row(&answer.json, &row);
    }
    assert_eq!(app.db.count_users(&user.id).await, 1);
    assert_eq!(
        app.clerk_requests("/").await,
        0,
        "Clerk must not be called for a stored user"
    );
    app.clerk().verify().await;
});

both_backends!(unknown_user_is_404_and_remembered, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let id = user_id();
    not_found_mock(&id).expect(1).mount(app.clerk()).await;

    for i in 0..4 {
        let answer = app.get_user(&id, SERVICE_TOKEN).await;
        assert_error(
            &answer,
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("GET #{i} of an unknown user"),
        );
    }
    assert_eq!(app.db.count_users(&id).await, 0, "a 404 must not create a row");
    assert_eq!(
        app.clerk_requests("/v1/users/").await,
        1,
        "within the not-found TTL Clerk must be asked once"
    );
    app.clerk().verify().await;
});

both_backends!(not_found_is_forgotten_after_its_ttl, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[("CLERK_SYNC_CACHE__NOT_FOUND_TTL_SECS", "1")]).await;
    let user = ClerkUser::new(now_ms() - 60_000);
    // Clerk does not know the user at first, then does (signed up meanwhile).
    not_found_mock(&user.id)
        .up_to_n_times(1)
        .with_priority(1)
        .mount(app.clerk())
        .await;
    user_mock(&user).mount(app.clerk()).await;

    let first = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_error(&first, StatusCode::NOT_FOUND, "not_found", "first GET");
    let again = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_error(&again, StatusCode::NOT_FOUND, "not_found", "GET within the TTL");
    assert_eq!(app.clerk_requests("/v1/users/").await, 1);

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let later = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(later.status, StatusCode::CREATED, "GET after the TTL: {}", later.body);
    assert_user_json(&later.json, &user, "fallback", "fallback");
    assert_eq!(app.clerk_requests("/v1/users/").await, 2);
    assert_eq!(app.db.count_users(&user.id).await, 1);
});

both_backends!(webhook_after_not_found_makes_the_user_visible, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let user = ClerkUser::new(now_ms() - 60_000);
    not_found_mock(&user.id).expect(1).mount(app.clerk()).await;

    let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found", "GET before the webhook");

    // The webhook arrives within the not-found TTL: the committed row must win over the remembered 404.
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "GET after user.created was committed: {}",
        answer.body
    );
    assert_user_json(&answer.json, &user, "webhook", "webhook");
    assert_eq!(app.clerk_requests("/v1/users/").await, 1);
    app.clerk().verify().await;
});

both_backends!(tombstoned_user_is_gone_and_never_fetched, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let t = now_ms() - 60_000;
    let user = ClerkUser::new(t);
    // Clerk would still answer the user (e.g. a lagging read): the tombstone must win without asking.
    user_mock(&user).expect(0).mount(app.clerk()).await;
    app.expect_outcome(&user.deleted(t + 1_000), &svix_id(), "applied")
        .await;

    for i in 0..2 {
        let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
        assert_error(
            &answer,
            StatusCode::GONE,
            "gone",
            &format!("GET #{i} of a deleted user"),
        );
    }
    assert_eq!(app.db.count_users(&user.id).await, 0, "a deleted user was re-created");
    assert_eq!(app.clerk_requests("/").await, 0);
    app.clerk().verify().await;
});

both_backends!(soft_deleted_cached_user_is_gone, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let t = now_ms() - 60_000;
    let user = ClerkUser::new(t);
    user_mock(&user).expect(0).mount(app.clerk()).await;
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // The user is now in the cache; the delete must not leave it served from there.
    app.expect_outcome(&user.deleted(t + 1_000), &svix_id(), "applied")
        .await;
    let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_error(&answer, StatusCode::GONE, "gone", "GET after user.deleted (soft)");
    let row = app.db.user(&user.id).await.expect("a soft delete keeps the row");
    assert!(row.deleted_at.is_some(), "{row:?}");
    assert_eq!(app.db.count_users(&user.id).await, 1);
    assert_eq!(app.clerk_requests("/").await, 0);
    app.clerk().verify().await;
});

both_backends!(hard_deleted_user_is_gone_and_not_recreated, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[("CLERK_SYNC_WEBHOOKS__DELETE_MODE", "hard")]).await;
    let t = now_ms() - 60_000;
    let user = ClerkUser::new(t);
    let never_seen = ClerkUser::new(t);
    user_mock(&user).expect(0).mount(app.clerk()).await;
    user_mock(&never_seen).expect(0).mount(app.clerk()).await;
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    app.expect_outcome(&user.deleted(t + 1_000), &svix_id(), "applied")
        .await;
    app.expect_outcome(&never_seen.deleted(t + 1_000), &svix_id(), "applied")
        .await;
    for id in [&user.id, &never_seen.id] {
        for i in 0..2 {
            let answer = app.get_user(id, SERVICE_TOKEN).await;
            assert_error(
                &answer,
                StatusCode::GONE,
                "gone",
                &format!("GET #{i} of hard-deleted {id}"),
            );
        }
        assert_eq!(app.db.count_users(id).await, 0, "a hard-deleted user came back");
    }
    assert_eq!(app.clerk_requests("/").await, 0);
    app.clerk().verify().await;
});

both_backends!(invalid_ids_are_400_without_calling_clerk, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    for id in [
        "not_a_user",
        "user_..%2Fx",
        "sess_123",
        "user_",
        "user_abc%20def",
        "user_%00abc",
    ] {
        let answer = app.get_user(id, SERVICE_TOKEN).await;
        assert_error(
            &answer,
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
            &format!("GET {id}"),
        );
        let answer = app.sync_user(id, SERVICE_TOKEN).await;
        assert_error(
            &answer,
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
            &format!("POST {id}/sync"),
        );
    }
    assert_eq!(app.clerk_requests("/").await, 0, "Clerk was called for an invalid id");
    assert_eq!(app.db.count_all_users().await, 0);
});

both_backends!(clerk_failing_is_503_and_nothing_is_stored, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[("CLERK_SYNC_CLERK__RETRY_BUDGET_MS", "1000")]).await;
    let id = user_id();
    failing_mock(&id, 500).mount(app.clerk()).await;

    let started = Instant::now();
    let answer = app.get_user(&id, SERVICE_TOKEN).await;
    assert_unavailable(&answer, "GET while Clerk answers 500");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the retry budget of 1 s was not respected: {:?}",
        started.elapsed()
    );
    let calls = app.clerk_requests("/v1/users/").await;
    assert!(
        (1..=6).contains(&calls),
        "a 5xx is retried a bounded number of times, got {calls} calls"
    );
    assert_eq!(app.db.count_users(&id).await, 0);

    // A 503 is not remembered as "not found": the next request asks Clerk again.
    let answer = app.get_user(&id, SERVICE_TOKEN).await;
    assert_unavailable(&answer, "second GET while Clerk answers 500");
    assert!(app.clerk_requests("/v1/users/").await > calls, "the 503 was cached");
    assert_eq!(app.db.count_users(&id).await, 0);
});

both_backends!(clerk_timeout_is_503, |backend| async move {
    let app = spawn_app_with_clerk(
        backend,
        &[
            ("CLERK_SYNC_CLERK__REQUEST_TIMEOUT_MS", "300"),
            ("CLERK_SYNC_CLERK__RETRY_BUDGET_MS", "1000"),
        ],
    )
    .await;
    let user = ClerkUser::new(now_ms() - 60_000);
    let slow = wiremock::ResponseTemplate::new(200)
        .set_body_json(user.data())
        .set_delay(Duration::from_secs(5));
    wiremock::Mock::given(wiremock::matchers::path(format!("/v1/users/{}", user.id)))
        .respond_with(slow)
        .mount(app.clerk())
        .await;

    let started = Instant::now();
    let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
    let elapsed = started.elapsed();
    assert_unavailable(&answer, "GET while Clerk does not answer in time");
    assert!(
        elapsed < Duration::from_secs(4),
        "the request timeout (300 ms) and retry budget (1 s) were not respected: {elapsed:?}"
    );
    assert!(app.clerk_requests("/v1/users/").await >= 1);
    assert_eq!(app.db.count_users(&user.id).await, 0);
});

both_backends!(clerk_failing_once_is_retried, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let user = ClerkUser::new(now_ms() - 60_000);
    failing_mock(&user.id, 500)
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(app.clerk())
        .await;
    user_mock(&user).expect(1).mount(app.clerk()).await;

    let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_user_json(&answer.json, &user, "fallback", "fallback");
    assert_eq!(app.clerk_requests("/v1/users/").await, 2);
    assert_eq!(app.db.count_users(&user.id).await, 1);
    app.clerk().verify().await;
});

both_backends!(no_secret_key_is_503_for_missing_users_only, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[("CLERK_SECRET_KEY", "")]).await;
    let t = now_ms() - 60_000;
    let missing = ClerkUser::new(t);
    let stored = ClerkUser::new(t);
    user_mock(&missing).expect(0).mount(app.clerk()).await;
    app.expect_outcome(&stored.created(), &svix_id(), "applied").await;

    let answer = app.get_user(&missing.id, SERVICE_TOKEN).await;
    assert_unavailable(&answer, "GET of a missing user without CLERK_SECRET_KEY");
    assert_eq!(app.db.count_users(&missing.id).await, 0);

    let answer = app.get_user(&stored.id, SERVICE_TOKEN).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "a stored user needs no Clerk: {}",
        answer.body
    );
    assert_user_json(&answer.json, &stored, "webhook", "webhook");
    assert_eq!(app.clerk_requests("/").await, 0);
    app.clerk().verify().await;
});

both_backends!(database_down_is_503_without_leaking, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[("CLERK_SYNC_CLERK__RETRY_BUDGET_MS", "1000")]).await;
    let user = ClerkUser::new(now_ms() - 60_000);
    user_mock(&user).mount(app.clerk()).await;

    let block = app.block_database().await;
    let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_unavailable(&answer, "GET of a missing user while the database is down");
    block.release().await;
    app.wait_ready(Duration::from_secs(15)).await;
    assert_eq!(app.db.count_users(&user.id).await, 0, "a 503 stored the user");

    let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "GET after recovery: {}",
        answer.body
    );
    assert_user_json(&answer.json, &user, "fallback", "fallback");
    assert_eq!(app.db.count_users(&user.id).await, 1);
});

both_backends!(delete_after_not_found_is_gone, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let id = user_id();
    not_found_mock(&id).expect(1).mount(app.clerk()).await;
    let answer = app.get_user(&id, SERVICE_TOKEN).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found", "GET before the delete");

    // Within the not-found TTL the user's deletion is committed: it is now known to be deleted.
    app.expect_outcome(&crate::clerk::deleted(&id, now_ms()), &svix_id(), "applied")
        .await;
    let answer = app.get_user(&id, SERVICE_TOKEN).await;
    assert_error(
        &answer,
        StatusCode::GONE,
        "gone",
        "GET after user.deleted was committed",
    );
    assert_eq!(app.db.count_users(&id).await, 0);
    app.clerk().verify().await;
});
