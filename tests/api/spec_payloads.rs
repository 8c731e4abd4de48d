//! Payloads as Clerk's own sources allow them (its OpenAPI spec, its SDK's fixtures): timestamps in seconds,
//! and the fields the spec does not require — `email_addresses[].id`, `phone_numbers[].id`, a membership's
//! `public_user_data`, a deleted object's `id`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::clerk::{envelope, now_ms, now_secs, svix_id, ClerkUser};
use crate::clerk_orgs::{ClerkMembership, ClerkOrganization};
use crate::helpers::{spawn_app_with_clerk, TestApp, SERVICE_TOKEN};

/// 2021-01-29T19:27:16Z in seconds, the value of every timestamp in the JS SDK's `fixtures/user.json`.
const SDK_FIXTURE_SECS: i64 = 1_611_948_436;
const SDK_FIXTURE_TIME: &str = "2021-01-29T19:27:16.000Z";

async fn get(app: &TestApp, path: &str) -> Value {
    let answer = app.api("GET", path, Some(&format!("Bearer {SERVICE_TOKEN}"))).await;
    assert!(
        answer.status.is_success(),
        "GET {path}: {} {}",
        answer.status,
        answer.body
    );
    answer.json
}

async fn clerk_updated_at(app: &TestApp, table: &str, clerk_id: &str) -> i64 {
    app.db
        .int(&format!(
            "SELECT clerk_updated_at FROM {table} WHERE clerk_id = '{clerk_id}'"
        ))
        .await
}

both_backends!(timestamps_in_seconds_are_read_as_seconds, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let updated_secs = now_secs() - 60;

    // Every timestamp in seconds, as in the SDK's fixture.
    let user = ClerkUser::new(now_ms());
    let mut data = user.data();
    data["created_at"] = json!(SDK_FIXTURE_SECS);
    data["last_sign_in_at"] = json!(SDK_FIXTURE_SECS);
    data["updated_at"] = json!(updated_secs);
    app.expect_outcome(&envelope("user.created", data.clone(), now_ms()), &svix_id(), "applied")
        .await;
    let json = get(&app, &format!("/v1/users/{}", user.id)).await;
    assert_eq!(json["clerk_created_at"], SDK_FIXTURE_TIME, "{json}");
    assert_eq!(json["last_sign_in_at"], SDK_FIXTURE_TIME, "{json}");
    assert_eq!(clerk_updated_at(&app, "users", &user.id).await, updated_secs * 1000);
    // The ordering guard compares seconds and milliseconds alike.
    data["updated_at"] = json!(updated_secs * 1000 - 1);
    app.expect_outcome(&envelope("user.updated", data.clone(), now_ms()), &svix_id(), "stale")
        .await;
    data["updated_at"] = json!(updated_secs * 1000 + 1);
    app.expect_outcome(&envelope("user.updated", data, now_ms()), &svix_id(), "applied")
        .await;

    // Only `created_at` in seconds: it used to land in January 1970.
    let mixed = ClerkUser::new(now_ms());
    let mut data = mixed.data();
    data["created_at"] = json!(SDK_FIXTURE_SECS);
    app.expect_outcome(&envelope("user.created", data, now_ms()), &svix_id(), "applied")
        .await;
    let json = get(&app, &format!("/v1/users/{}", mixed.id)).await;
    assert_eq!(json["clerk_created_at"], SDK_FIXTURE_TIME, "{json}");

    // An organization and a membership (with its embedded organization), all in seconds.
    let mut organization = ClerkOrganization::new(updated_secs);
    organization.created_at = SDK_FIXTURE_SECS;
    app.expect_outcome(&organization.created(), &svix_id(), "applied").await;
    let json = get(&app, &format!("/v1/organizations/{}", organization.id)).await;
    assert_eq!(json["clerk_created_at"], SDK_FIXTURE_TIME, "{json}");
    assert_eq!(
        clerk_updated_at(&app, "organizations", &organization.id).await,
        updated_secs * 1000
    );
    let mut membership = ClerkMembership::new(&organization, updated_secs);
    membership.created_at = SDK_FIXTURE_SECS;
    app.expect_outcome(&membership.created(), &svix_id(), "applied").await;
    let json = get(&app, &format!("/v1/organizations/{}/memberships", organization.id)).await;
    assert_eq!(json[0]["clerk_id"], membership.id.as_str(), "{json}");
    assert_eq!(json[0]["clerk_created_at"], SDK_FIXTURE_TIME, "{json}");

    // The Backend API's answers are read the same way (the fallback here).
    let fetched = ClerkUser::new(now_ms());
    let mut data = fetched.data();
    data["created_at"] = json!(SDK_FIXTURE_SECS);
    data["updated_at"] = json!(updated_secs);
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path(format!("/v1/users/{}", fetched.id)))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(data))
        .mount(app.clerk())
        .await;
    let answer = app.get_user(&fetched.id, SERVICE_TOKEN).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.json["clerk_created_at"], SDK_FIXTURE_TIME, "{}", answer.body);
    assert_eq!(clerk_updated_at(&app, "users", &fetched.id).await, updated_secs * 1000);
});

both_backends!(email_and_phone_entries_without_an_id_are_stored, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let user = ClerkUser::new(now_ms());
    let primary = user.primary_email().expect("a primary email");
    let mut data = user.data();
    data["email_addresses"]
        .as_array_mut()
        .expect("emails")
        .push(json!({"object": "email_address", "email_address": "other@example.com", "linked_to": []}));
    data["phone_numbers"] = json!([{"object": "phone_number", "phone_number": "+15550000003"}]);
    app.expect_outcome(&envelope("user.created", data, now_ms()), &svix_id(), "applied")
        .await;
    let row = app.db.user(&user.id).await.expect("row");
    assert_eq!(row.email.as_deref(), Some(primary.as_str()));

    // No entry has an id: nothing is the primary, the user is still stored.
    let bare = ClerkUser::new(now_ms());
    let mut data = bare.data();
    data["email_addresses"] = json!([{"object": "email_address", "email_address": "bare@example.com"}]);
    data["primary_email_address_id"] = json!(null);
    app.expect_outcome(&envelope("user.created", data, now_ms()), &svix_id(), "applied")
        .await;
    let row = app.db.user(&bare.id).await.expect("row");
    assert_eq!(row.email, None);
    assert_eq!(row.first_name.as_deref(), Some("Ada"));
});

both_backends!(a_membership_without_its_member_is_ignored, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let organization = ClerkOrganization::new(now_ms() - 10_000);
    let membership = ClerkMembership::new(&organization, now_ms() - 5_000);
    let mut data = membership.data();
    data.as_object_mut().expect("object").remove("public_user_data");
    let body = envelope("organizationMembership.created", data, now_ms());
    let id = svix_id();
    app.expect_outcome(&body, &id, "ignored").await;
    assert_eq!(
        app.db.delivery(&id).await.map(|d| d.outcome).as_deref(),
        Some("ignored")
    );
    assert_eq!(
        app.db
            .int(&format!(
                "SELECT count(*) FROM organization_memberships WHERE clerk_id = '{}'",
                membership.id
            ))
            .await,
        0,
        "a membership row needs its user"
    );
    app.expect_outcome(&body, &id, "duplicate").await;
    // The same membership with its member is applied.
    app.expect_outcome(&membership.created(), &svix_id(), "applied").await;
});

both_backends!(a_deleted_object_without_an_id_is_ignored, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let user = ClerkUser::new(now_ms() - 5_000);
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    for (event_type, object) in [
        ("user.deleted", "user"),
        ("organization.deleted", "organization"),
        ("organizationMembership.deleted", "organization_membership"),
    ] {
        let id = svix_id();
        let body = envelope(event_type, json!({"object": object, "deleted": true}), now_ms());
        app.expect_outcome(&body, &id, "ignored").await;
        assert_eq!(
            app.db.delivery(&id).await.map(|d| d.outcome).as_deref(),
            Some("ignored"),
            "{event_type}"
        );
    }
    let row = app.db.user(&user.id).await.expect("row");
    assert!(row.deleted_at.is_none(), "nothing was deleted: {row:?}");
    // A deleted object with an id still deletes.
    app.expect_outcome(&user.deleted(now_ms()), &svix_id(), "applied").await;
});

both_backends!(
    backfill_skips_a_membership_without_its_member_and_prunes_nothing,
    |backend| async move {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, ResponseTemplate};
        let app = spawn_app_with_clerk(backend, &[]).await;
        let organization = ClerkOrganization::new(now_ms() - 60_000);
        let (kept, written) = (
            ClerkMembership::new(&organization, now_ms() - 30_000),
            ClerkMembership::new(&organization, now_ms() - 20_000),
        );
        // Known from its webhook; Clerk's list then leaves its member out.
        app.expect_outcome(&kept.created(), &svix_id(), "applied").await;
        let mut memberless = kept.data();
        memberless.as_object_mut().expect("object").remove("public_user_data");
        let page = |data: Vec<Value>| {
            let total = data.len();
            ResponseTemplate::new(200).set_body_json(json!({"data": data, "total_count": total}))
        };
        Mock::given(method("GET"))
            .and(path("/v1/organizations"))
            .respond_with(page(vec![organization.data()]))
            .mount(app.clerk())
            .await;
        Mock::given(method("GET"))
            .and(path(format!("/v1/organizations/{}/memberships", organization.id)))
            .respond_with(page(vec![memberless, written.data()]))
            .mount(app.clerk())
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/users/count"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"object": "total_count", "total_count": 0})))
            .mount(app.clerk())
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/users"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
            .mount(app.clerk())
            .await;

        let options = clerk_sync::backfill::Options {
            prune: true,
            ..Default::default()
        };
        let summary = app.backfill(options).await.expect("the backfill completes");
        assert_eq!(summary.failed(), 0, "{summary:?}");
        assert_eq!(summary.memberships.created, 1, "{summary:?}");
        assert_eq!(summary.memberships.pruned, 0, "Clerk still lists it: {summary:?}");
        let live = |id: &str| {
            format!("SELECT count(*) FROM organization_memberships WHERE clerk_id = '{id}' AND deleted_at IS NULL")
        };
        assert_eq!(app.db.int(&live(&written.id)).await, 1);
        assert_eq!(
            app.db.int(&live(&kept.id)).await,
            1,
            "the stored membership is kept as it was"
        );
    }
);
