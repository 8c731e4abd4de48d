//! user.created / user.updated: upserts, ordering, dedupe, unknown types, malformed payloads, body limits.

use reqwest::StatusCode;
use serde_json::json;

use crate::clerk::{envelope, now_ms, svix_id, ClerkUser};
use crate::helpers::{spawn_app, TestApp};

async fn assert_invalid_payload(app: &TestApp, body: &str, what: &str) {
    let id = svix_id();
    let (status, json) = app.deliver(body, &id).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{what}: expected 400, got {status} {json}"
    );
    assert_eq!(json["error"], "invalid_payload", "{what}: body {json}");
    let delivery = app.db.delivery(&id).await;
    assert_eq!(
        delivery.map(|d| d.outcome),
        Some("invalid_payload".to_string()),
        "{what}: the delivery must be recorded as invalid_payload"
    );
}

both_backends!(created_user_is_stored_with_the_primary_email, |backend| async move {
    let app = spawn_app(backend).await;
    let user =
        ClerkUser::new(now_ms() - 5_000).with_primary_email_second("primary@example.com", "secondary@example.com");
    let id = svix_id();

    app.expect_outcome(&user.created(), &id, "applied").await;

    let row = app.db.user(&user.id).await.expect("the user was not stored");
    assert_eq!(
        row.email.as_deref(),
        Some("primary@example.com"),
        "email must be the primary one"
    );
    assert_eq!(row.first_name.as_deref(), Some("Ada"));
    assert_eq!(row.last_name.as_deref(), Some("Lovelace"));
    assert_eq!(row.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(row.username, user.username);
    assert_eq!(row.image_url, user.image_url);
    assert_eq!(row.created_via, "webhook");
    assert_eq!(row.updated_via.as_deref(), Some("webhook"));
    assert_eq!(row.clerk_updated_at, Some(user.updated_at));
    assert_eq!(row.deleted_at, None);
    assert!(
        row.id.as_deref().is_some_and(|id| !id.is_empty()),
        "users.id must be set: {row:?}"
    );
    assert!(row.created_at.is_some() && row.updated_at.is_some(), "{row:?}");
    assert_eq!(app.db.count_users(&user.id).await, 1);

    let delivery = app.db.delivery(&id).await.expect("no delivery row");
    assert_eq!(delivery.event_type, "user.created");
    assert_eq!(delivery.clerk_id.as_deref(), Some(user.id.as_str()));
    assert_eq!(delivery.outcome, "applied");
});

both_backends!(name_is_built_from_first_and_last_name, |backend| async move {
    let app = spawn_app(backend).await;
    let t = now_ms();
    let cases = [
        (Some("Grace"), None, Some("Grace")),
        (None, Some("Hopper"), Some("Hopper")),
        (None, None, None),
    ];
    for (first, last, expected) in cases {
        let mut user = ClerkUser::new(t);
        user.first_name = first.map(str::to_string);
        user.last_name = last.map(str::to_string);
        app.expect_outcome(&user.created(), &svix_id(), "applied").await;
        let row = app.db.user(&user.id).await.expect("user not stored");
        assert_eq!(row.name.as_deref(), expected, "first {first:?} last {last:?}");
        assert_eq!(row.first_name.as_deref(), first);
        assert_eq!(row.last_name.as_deref(), last);
    }
});

both_backends!(without_a_primary_email_id_email_is_null, |backend| async move {
    let app = spawn_app(backend).await;
    let mut user = ClerkUser::new(now_ms());
    user.primary_email_id = None;
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    let row = app.db.user(&user.id).await.expect("user not stored");
    assert_eq!(
        row.email, None,
        "no primary_email_address_id: email must be NULL, not email_addresses[0]"
    );
});

both_backends!(newer_update_applies_and_older_or_equal_is_stale, |backend| async move {
    let app = spawn_app(backend).await;
    let t = now_ms() - 60_000;
    let user = ClerkUser::new(t);
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    let created = app.db.user(&user.id).await.expect("user not stored");

    let mut newer = user
        .at(t + 1_000)
        .with_primary_email_second("new@example.com", "old@example.com");
    newer.first_name = Some("Augusta".into());
    app.expect_outcome(&newer.updated(), &svix_id(), "applied").await;
    let row = app.db.user(&user.id).await.expect("user vanished");
    assert_eq!(row.email.as_deref(), Some("new@example.com"));
    assert_eq!(row.name.as_deref(), Some("Augusta Lovelace"));
    assert_eq!(row.clerk_updated_at, Some(t + 1_000));
    assert_eq!(row.created_via, "webhook");
    assert_eq!(row.updated_via.as_deref(), Some("webhook"));
    assert_eq!(row.id, created.id, "an update must keep the row's id");

    for (updated_at, label) in [(t + 500, "older"), (t + 1_000, "equal")] {
        let mut stale = user.at(updated_at);
        stale.first_name = Some(format!("Stale-{label}"));
        let id = svix_id();
        app.expect_outcome(&stale.updated(), &id, "stale").await;
        assert_eq!(
            app.db.user(&user.id).await.as_ref(),
            Some(&row),
            "{label} update changed the row"
        );
        assert_eq!(app.db.delivery(&id).await.map(|d| d.outcome).as_deref(), Some("stale"));
    }
    // A late user.created is just as stale.
    app.expect_outcome(&user.created(), &svix_id(), "stale").await;
    assert_eq!(app.db.user(&user.id).await.as_ref(), Some(&row));
    assert_eq!(app.db.count_users(&user.id).await, 1);
});

both_backends!(update_before_create_creates_the_user, |backend| async move {
    let app = spawn_app(backend).await;
    let t = now_ms();
    let user = ClerkUser::new(t);
    let mut update = user.at(t + 10);
    update.username = Some("renamed".into());

    app.expect_outcome(&update.updated(), &svix_id(), "applied").await;
    let row = app
        .db
        .user(&user.id)
        .await
        .expect("user.updated must create an unknown user");
    assert_eq!(row.created_via, "webhook");
    assert_eq!(row.username.as_deref(), Some("renamed"));

    app.expect_outcome(&user.created(), &svix_id(), "stale").await;
    let after = app.db.user(&user.id).await.expect("user vanished");
    assert_eq!(after.username.as_deref(), Some("renamed"));
    assert_eq!(after.clerk_updated_at, Some(t + 10));
    assert_eq!(app.db.count_users(&user.id).await, 1);
});

both_backends!(a_reused_svix_id_is_a_duplicate, |backend| async move {
    let app = spawn_app(backend).await;
    let t = now_ms();
    let user = ClerkUser::new(t);
    let id = svix_id();
    app.expect_outcome(&user.created(), &id, "applied").await;
    let row = app.db.user(&user.id).await.expect("user not stored");

    // Same delivery retried, then a different (newer) event under the same id: neither is applied.
    app.expect_outcome(&user.created(), &id, "duplicate").await;
    let mut newer = user.at(t + 5_000);
    newer.first_name = Some("Changed".into());
    app.expect_outcome(&newer.updated(), &id, "duplicate").await;

    assert_eq!(
        app.db.user(&user.id).await.as_ref(),
        Some(&row),
        "a duplicate changed the row"
    );
    let delivery = app.db.delivery(&id).await.expect("delivery row missing");
    assert_eq!(
        (delivery.event_type.as_str(), delivery.outcome.as_str()),
        ("user.created", "applied")
    );
    assert_eq!(app.db.count_deliveries().await, 1);
});

both_backends!(a_restart_keeps_users_and_dedupe_state, |backend| async move {
    let app = spawn_app(backend).await;
    let user = ClerkUser::new(now_ms());
    let id = svix_id();
    app.expect_outcome(&user.created(), &id, "applied").await;

    let app = app.restart().await;
    assert_eq!(app.db.count_users(&user.id).await, 1);
    app.expect_outcome(&user.created(), &id, "duplicate").await;
    app.expect_outcome(&user.at(user.updated_at + 1).updated(), &svix_id(), "applied")
        .await;
    assert_eq!(app.db.count_users(&user.id).await, 1);
});

both_backends!(unknown_event_types_are_ignored_and_recorded, |backend| async move {
    let app = spawn_app(backend).await;
    let body = envelope(
        "session.created",
        json!({"id": "sess_2Lh9KRb6pzqBjHMFl5wd3Ehq1Ab", "object": "session", "user_id": "user_29w83sxmDNGwOuEthce5gg56FcC",
               "status": "active", "created_at": now_ms(), "updated_at": now_ms()}),
        now_ms(),
    );
    let id = svix_id();
    app.expect_outcome(&body, &id, "ignored").await;
    assert_eq!(
        app.db.delivery(&id).await.map(|d| d.outcome).as_deref(),
        Some("ignored")
    );
    assert_eq!(
        app.db.count_all_users().await,
        0,
        "an ignored event must not touch users"
    );
});

both_backends!(malformed_payloads_are_400_and_recorded, |backend| async move {
    let app = spawn_app(backend).await;
    assert_invalid_payload(&app, "this is not json", "non-JSON body").await;
    assert_invalid_payload(&app, "{\"type\": \"user.created\"}", "no data").await;

    let user = ClerkUser::new(now_ms());
    let mut no_id = user.data();
    no_id.as_object_mut().expect("object").remove("id");
    assert_invalid_payload(
        &app,
        &envelope("user.created", no_id, now_ms()),
        "user.created without data.id",
    )
    .await;

    let mut no_updated_at = user.data();
    no_updated_at.as_object_mut().expect("object").remove("updated_at");
    let body = envelope("user.created", no_updated_at, now_ms());
    assert_invalid_payload(&app, &body, "user.created without data.updated_at").await;

    assert_eq!(
        app.db.count_all_users().await,
        0,
        "an invalid payload must not touch users"
    );
});

both_backends!(body_limit_is_256_kib, |backend| async move {
    let app = spawn_app(backend).await;
    const LIMIT: usize = 262_144;
    let user = ClerkUser::new(now_ms());
    // Pad public_metadata so the whole body is exactly LIMIT (accepted) or LIMIT + 1 (413).
    let padded = |len: usize| {
        let mut data = user.data();
        data["public_metadata"] = json!({"pad": ""});
        let base = envelope("user.created", data.clone(), 1_700_000_000_000).len();
        data["public_metadata"] = json!({"pad": "x".repeat(len - base)});
        let body = envelope("user.created", data, 1_700_000_000_000);
        assert_eq!(body.len(), len);
        body
    };

    let too_big = svix_id();
    let response = app.post_webhook(&padded(LIMIT + 1), &too_big).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.db.delivery(&too_big).await, None);
    assert_eq!(app.db.count_all_users().await, 0);

    app.expect_outcome(&padded(LIMIT), &svix_id(), "applied").await;
    assert_eq!(app.db.count_users(&user.id).await, 1);
});

both_backends!(application_columns_survive_updates, |backend| async move {
    let app = spawn_app(backend).await;
    let t = now_ms();
    let user = ClerkUser::new(t);
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;

    app.db
        .execute("ALTER TABLE users ADD COLUMN plan text DEFAULT 'free'")
        .await;
    app.db
        .execute(&format!("UPDATE users SET plan = 'pro' WHERE clerk_id = '{}'", user.id))
        .await;

    let mut newer = user.at(t + 1_000);
    newer.last_name = Some("King".into());
    app.expect_outcome(&newer.updated(), &svix_id(), "applied").await;
    let plan_sql = |id: &str| format!("SELECT plan FROM users WHERE clerk_id = '{id}'");
    assert_eq!(app.db.string(&plan_sql(&user.id)).await.as_deref(), Some("pro"));
    assert_eq!(
        app.db.user(&user.id).await.and_then(|r| r.name).as_deref(),
        Some("Ada King")
    );

    // A user created after the app added its column gets the column's default.
    let other = ClerkUser::new(t);
    app.expect_outcome(&other.created(), &svix_id(), "applied").await;
    assert_eq!(app.db.string(&plan_sql(&other.id)).await.as_deref(), Some("free"));
});
