//! `POST /v1/users/{clerk_id}/sync`: re-fetch from Clerk under the ordering guard and the tombstone rule.

use reqwest::StatusCode;

use crate::api_checks::{assert_error, assert_matches_row, assert_user_json};
use crate::clerk::{not_found_mock, now_ms, svix_id, user_id, user_mock, ClerkUser};
use crate::helpers::{spawn_app_with_clerk, SERVICE_TOKEN};

both_backends!(sync_applies_a_newer_clerk_user, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let t = now_ms() - 60_000;
    let user = ClerkUser::new(t);
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    // Cached before the sync: the sync must refresh it.
    let before = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);

    let mut newer = user
        .at(t + 5_000)
        .with_primary_email_second("grace@example.com", "ada@example.com");
    newer.first_name = Some("Grace".into());
    newer.last_name = Some("Hopper".into());
    user_mock(&newer).expect(1).mount(app.clerk()).await;

    let synced = app.sync_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(synced.status, StatusCode::OK, "sync: {}", synced.body);
    assert_user_json(&synced.json, &newer, "webhook", "fallback");
    let row = app.db.user(&user.id).await.expect("row missing");
    assert_eq!(row.clerk_updated_at, Some(t + 5_000));
    assert_eq!(row.first_name.as_deref(), Some("Grace"));
    assert_eq!(row.email.as_deref(), Some("grace@example.com"));
    assert_eq!(row.created_via, "webhook", "a sync must not change created_via");
    assert_matches_row(&synced.json, &row);
    assert_eq!(synced.json["id"], before.json["id"], "the row's id changed");

    let after = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
    assert_eq!(after.json, synced.json, "GET after the sync serves stale data");
    assert_eq!(app.db.count_users(&user.id).await, 1);
    assert_eq!(app.clerk_requests("/v1/users/").await, 1);
    app.clerk().verify().await;
});

both_backends!(sync_keeps_the_stored_user_when_clerk_is_older, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let t = now_ms() - 60_000;
    let user = ClerkUser::new(t);
    let mut stored = user.at(t + 5_000);
    stored.first_name = Some("Stored".into());
    app.expect_outcome(&stored.created(), &svix_id(), "applied").await;
    let row_before = app.db.user(&user.id).await.expect("row missing");

    let mut older = user.at(t);
    older.first_name = Some("Older".into());
    user_mock(&older).expect(1).mount(app.clerk()).await;

    let synced = app.sync_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(synced.status, StatusCode::OK, "sync: {}", synced.body);
    assert_user_json(&synced.json, &stored, "webhook", "webhook");
    assert_eq!(
        app.db.user(&user.id).await.as_ref(),
        Some(&row_before),
        "an older Clerk user changed the row"
    );
    let after = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.json["first_name"].as_str(), Some("Stored"), "{}", after.body);
    app.clerk().verify().await;
});

both_backends!(
    sync_of_a_deleted_user_clerk_no_longer_knows_is_gone,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let t = now_ms() - 60_000;
        // Deleted after being stored; Clerk (realistically) no longer knows it.
        let user = ClerkUser::new(t);
        app.expect_outcome(&user.created(), &svix_id(), "applied").await;
        app.expect_outcome(&user.deleted(t + 1_000), &svix_id(), "applied")
            .await;
        not_found_mock(&user.id).mount(app.clerk()).await;
        let row_before = app.db.user(&user.id).await.expect("soft-deleted row missing");

        let synced = app.sync_user(&user.id, SERVICE_TOKEN).await;
        let read = app.get_user(&user.id, SERVICE_TOKEN).await;
        // Both answers first, so a failure shows what each said.
        assert_eq!(
            (synced.status, read.status),
            (StatusCode::GONE, StatusCode::GONE),
            "a deleted user must be 410 on sync and on the GET after it; sync said {}, GET said {}",
            synced.body,
            read.body
        );
        assert_error(&synced, StatusCode::GONE, "gone", "sync of a deleted user");
        assert_error(&read, StatusCode::GONE, "gone", "GET of a deleted user after a sync");
        assert_eq!(app.db.user(&user.id).await.as_ref(), Some(&row_before));
    }
);

both_backends!(
    sync_of_a_tombstoned_user_clerk_still_returns_is_gone,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let t = now_ms() - 60_000;
        // Only a tombstone; Clerk still answers the user (a lagging read), even a newer version.
        let user = ClerkUser::new(t);
        app.expect_outcome(&user.deleted(t + 1_000), &svix_id(), "applied")
            .await;
        user_mock(&user.at(t + 2_000)).mount(app.clerk()).await;

        let answer = app.sync_user(&user.id, SERVICE_TOKEN).await;
        assert_error(
            &answer,
            StatusCode::GONE,
            "gone",
            "sync of a tombstoned user Clerk still returns",
        );
        let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
        assert_error(
            &answer,
            StatusCode::GONE,
            "gone",
            "GET of a tombstoned user after a sync",
        );
        assert_eq!(
            app.db.count_users(&user.id).await,
            0,
            "a sync re-created a deleted user"
        );
    }
);

both_backends!(sync_of_a_user_clerk_does_not_know_is_404, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let id = user_id();
    not_found_mock(&id).expect(1).mount(app.clerk()).await;
    let answer = app.sync_user(&id, SERVICE_TOKEN).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found", "sync of an unknown user");
    assert_eq!(app.db.count_users(&id).await, 0);
    app.clerk().verify().await;
});

both_backends!(sync_of_a_missing_user_creates_it, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let user = ClerkUser::new(now_ms() - 60_000);
    user_mock(&user).expect(1).mount(app.clerk()).await;
    let answer = app.sync_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "sync of a missing user: {}",
        answer.body
    );
    assert_user_json(&answer.json, &user, "fallback", "fallback");
    let row = app.db.user(&user.id).await.expect("row missing");
    assert_matches_row(&answer.json, &row);
    let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    app.clerk().verify().await;
});

both_backends!(sync_404_for_a_stored_user_keeps_it_readable, |backend| async move {
    // Clerk already forgot the user but its user.deleted has not arrived: the row stays until it does.
    let app = spawn_app_with_clerk(backend, &[]).await;
    let user = ClerkUser::new(now_ms() - 60_000);
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    not_found_mock(&user.id).expect(1).mount(app.clerk()).await;

    let synced = app.sync_user(&user.id, SERVICE_TOKEN).await;
    assert_error(
        &synced,
        StatusCode::NOT_FOUND,
        "not_found",
        "sync of a user Clerk no longer knows",
    );

    let after = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(after.status, StatusCode::OK, "GET after the sync: {}", after.body);
    assert_user_json(&after.json, &user, "webhook", "webhook");
    assert_eq!(app.db.count_users(&user.id).await, 1);
    app.clerk().verify().await;
});
