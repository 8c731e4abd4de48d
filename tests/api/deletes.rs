//! user.deleted: soft and hard deletes, tombstones, and that nothing brings a deleted user back.

use crate::clerk::{deleted, now_ms, svix_id, user_id, ClerkUser};
use crate::helpers::{spawn_app, spawn_app_with};

both_backends!(soft_delete_is_final, |backend| async move {
    let app = spawn_app(backend).await;
    let t = now_ms() - 60_000;
    let user = ClerkUser::new(t);
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;

    let delete_id = svix_id();
    app.expect_outcome(&user.deleted(t + 1_000), &delete_id, "applied")
        .await;
    let row = app.db.user(&user.id).await.expect("a soft delete must keep the row");
    assert!(row.deleted_at.is_some(), "deleted_at must be set: {row:?}");
    assert_eq!(row.email, user.primary_email(), "a soft delete keeps the data");
    assert_eq!(app.db.tombstone(&user.id).await, Some(t + 1_000));
    let delivery = app.db.delivery(&delete_id).await.expect("delete not recorded");
    assert_eq!(delivery.event_type, "user.deleted");
    assert_eq!(delivery.clerk_id.as_deref(), Some(user.id.as_str()));
    assert_eq!(delivery.outcome, "applied");

    let mut later = user.at(t + 60_000);
    later.first_name = Some("Zombie".into());
    for (body, what) in [
        (later.updated(), "newer user.updated"),
        (later.created(), "newer user.created"),
        (user.at(t + 500).updated(), "older user.updated"),
        (user.created(), "replayed user.created"),
    ] {
        let id = svix_id();
        app.expect_outcome(&body, &id, "tombstoned").await;
        assert_eq!(
            app.db.user(&user.id).await.as_ref(),
            Some(&row),
            "{what} changed the deleted row"
        );
        assert_eq!(
            app.db.delivery(&id).await.map(|d| d.outcome).as_deref(),
            Some("tombstoned")
        );
    }
    assert_eq!(app.db.count_users(&user.id).await, 1);
});

both_backends!(hard_delete_removes_the_row_for_good, |backend| async move {
    let app = spawn_app_with(backend, &[("CLERK_SYNC_WEBHOOKS__DELETE_MODE", "hard")]).await;
    let t = now_ms() - 60_000;
    let user = ClerkUser::new(t);
    let bystander = ClerkUser::new(t);
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    app.expect_outcome(&bystander.created(), &svix_id(), "applied").await;

    app.expect_outcome(&user.deleted(t + 1_000), &svix_id(), "applied")
        .await;
    assert_eq!(app.db.count_users(&user.id).await, 0, "hard delete must remove the row");
    assert!(
        app.db.tombstone(&user.id).await.is_some(),
        "hard delete must keep a tombstone"
    );
    assert_eq!(app.db.count_users(&bystander.id).await, 1, "another user was deleted");

    app.expect_outcome(&user.at(t + 60_000).created(), &svix_id(), "tombstoned")
        .await;
    app.expect_outcome(&user.at(t + 61_000).updated(), &svix_id(), "tombstoned")
        .await;
    assert_eq!(app.db.count_users(&user.id).await, 0, "a deleted user came back");
});

both_backends!(delete_before_create_still_wins, |backend| async move {
    let app = spawn_app(backend).await;
    let t = now_ms() - 60_000;
    let user = ClerkUser::new(t);

    let (status, json) = app.deliver(&user.deleted(t + 1_000), &svix_id()).await;
    assert_eq!(status, reqwest::StatusCode::OK, "delete of an unknown user: {json}");
    assert!(
        app.db.tombstone(&user.id).await.is_some(),
        "the delete must leave a tombstone"
    );

    app.expect_outcome(&user.created(), &svix_id(), "tombstoned").await;
    app.expect_outcome(&user.at(t + 2_000).updated(), &svix_id(), "tombstoned")
        .await;
    let live = app
        .db
        .int(&format!(
            "SELECT count(*) FROM users WHERE clerk_id = '{}' AND deleted_at IS NULL",
            user.id
        ))
        .await;
    assert_eq!(live, 0, "a user deleted before it was created must not appear as live");
});

both_backends!(delete_timestamp_in_seconds_or_milliseconds, |backend| async move {
    let app = spawn_app(backend).await;
    let now = now_ms();
    let in_ms = ClerkUser::new(now - 60_000);
    let in_secs = ClerkUser::new(now - 60_000);
    app.expect_outcome(&in_ms.created(), &svix_id(), "applied").await;
    app.expect_outcome(&in_secs.created(), &svix_id(), "applied").await;

    let secs = now / 1000;
    app.expect_outcome(&in_ms.deleted(now), &svix_id(), "applied").await;
    app.expect_outcome(&in_secs.deleted(secs), &svix_id(), "applied").await;

    assert_eq!(app.db.tombstone(&in_ms.id).await, Some(now));
    assert_eq!(
        app.db.tombstone(&in_secs.id).await,
        Some(secs * 1000),
        "an envelope timestamp under 10^12 is in seconds"
    );
    for id in [&in_ms.id, &in_secs.id] {
        let row = app.db.user(id).await.expect("soft-deleted row missing");
        assert!(row.deleted_at.is_some(), "{row:?}");
    }
    // Both stay deleted for a newer update.
    app.expect_outcome(&in_secs.at(now + 1_000).updated(), &svix_id(), "tombstoned")
        .await;
});

both_backends!(repeated_delete_is_harmless, |backend| async move {
    let app = spawn_app(backend).await;
    let t = now_ms() - 60_000;
    let user = ClerkUser::new(t);
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    app.expect_outcome(&user.deleted(t + 1_000), &svix_id(), "applied")
        .await;
    let row = app.db.user(&user.id).await.expect("row missing");

    let again = svix_id();
    let (status, json) = app.deliver(&user.deleted(t + 2_000), &again).await;
    assert_eq!(status, reqwest::StatusCode::OK, "second delete: {json}");
    let outcome = json["outcome"].as_str().unwrap_or_default().to_string();
    assert!(
        ["applied", "tombstoned"].contains(&outcome.as_str()),
        "second delete outcome: {json}"
    );
    assert_eq!(app.db.count_users(&user.id).await, 1);
    assert!(app.db.user(&user.id).await.is_some_and(|r| r.deleted_at.is_some()));
    assert_eq!(app.db.user(&user.id).await.map(|r| r.email), Some(row.email));

    // Deleting one user never touches another.
    let other = user_id();
    let (status, _) = app.deliver(&deleted(&other, t), &svix_id()).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let live = app.db.int("SELECT count(*) FROM users WHERE deleted_at IS NULL").await;
    assert_eq!(live, 0, "a delete of an unknown user created a live row");
    assert!(app.db.user(&user.id).await.is_some_and(|r| r.deleted_at.is_some()));
});
