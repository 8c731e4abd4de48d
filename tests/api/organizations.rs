//! Organizations and memberships: the same guarantees as users (ordering, dedupe, tombstones, fallback), a
//! membership arriving before its organization, and the memberships lists.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::clerk::{now_ms, svix_id};
use crate::clerk_orgs::{
    organization_mock, organization_not_found_mock, slow_organization_mock, ClerkMembership, ClerkOrganization,
};
use crate::helpers::{spawn_app, spawn_app_with_clerk, TestApp, SERVICE_TOKEN};

async fn org_text(app: &TestApp, clerk_id: &str, column: &str) -> Option<String> {
    app.db
        .string(&format!(
            "SELECT CAST({column} AS TEXT) FROM organizations WHERE clerk_id = '{clerk_id}'"
        ))
        .await
}

async fn membership_text(app: &TestApp, clerk_id: &str, column: &str) -> Option<String> {
    app.db
        .string(&format!(
            "SELECT CAST({column} AS TEXT) FROM organization_memberships WHERE clerk_id = '{clerk_id}'"
        ))
        .await
}

async fn count(app: &TestApp, table: &str, clerk_id: &str) -> i64 {
    app.db
        .int(&format!("SELECT count(*) FROM {table} WHERE clerk_id = '{clerk_id}'"))
        .await
}

/// A JSON column read back as JSON (Postgres jsonb and SQLite text alike).
async fn json_column(app: &TestApp, table: &str, clerk_id: &str, column: &str) -> Option<Value> {
    let text = app
        .db
        .string(&format!(
            "SELECT CAST({column} AS TEXT) FROM {table} WHERE clerk_id = '{clerk_id}'"
        ))
        .await?;
    Some(serde_json::from_str(&text).expect("the column holds JSON"))
}

both_backends!(organization_events_are_ordered_and_deduplicated, |backend| async move {
    let app = spawn_app(backend).await;
    let t = now_ms() - 60_000;
    let org = ClerkOrganization::new(t);

    let first = svix_id();
    app.expect_outcome(&org.created(), &first, "applied").await;
    assert_eq!(org_text(&app, &org.id, "name").await.as_deref(), Some("Acme Inc"));
    assert_eq!(org_text(&app, &org.id, "slug").await, Some(org.slug.clone()));
    assert_eq!(org_text(&app, &org.id, "created_via").await.as_deref(), Some("webhook"));
    assert_eq!(
        json_column(&app, "organizations", &org.id, "public_metadata").await,
        Some(serde_json::json!({"plan": "pro"}))
    );
    assert_eq!(
        json_column(&app, "organizations", &org.id, "data").await,
        Some(org.data()),
        "data keeps the whole organization"
    );
    assert_eq!(
        app.db.delivery(&first).await.map(|d| d.event_type).as_deref(),
        Some("organization.created")
    );

    // The same delivery again: nothing changes.
    app.expect_outcome(&org.created(), &first, "duplicate").await;
    // An older version: stale.
    app.expect_outcome(&org.at(t - 1, "Old Name").updated(), &svix_id(), "stale")
        .await;
    assert_eq!(org_text(&app, &org.id, "name").await.as_deref(), Some("Acme Inc"));
    // A newer one applies.
    app.expect_outcome(&org.at(t + 1, "Acme Renamed").updated(), &svix_id(), "applied")
        .await;
    assert_eq!(org_text(&app, &org.id, "name").await.as_deref(), Some("Acme Renamed"));
    assert_eq!(org_text(&app, &org.id, "created_via").await.as_deref(), Some("webhook"));
    assert_eq!(org_text(&app, &org.id, "updated_via").await.as_deref(), Some("webhook"));
    assert_eq!(count(&app, "organizations", &org.id).await, 1);
});

both_backends!(a_deleted_organization_never_comes_back, |backend| async move {
    let app = spawn_app(backend).await;
    let t = now_ms() - 60_000;
    let org = ClerkOrganization::new(t);
    app.expect_outcome(&org.created(), &svix_id(), "applied").await;
    app.expect_outcome(&org.deleted(t + 10), &svix_id(), "applied").await;
    assert!(org_text(&app, &org.id, "deleted_at").await.is_some(), "soft-deleted");
    assert!(app.db.tombstone(&org.id).await.is_some(), "tombstoned");
    // A late update, even one newer than the delete, does not revive it.
    app.expect_outcome(&org.at(t + 20, "Zombie").updated(), &svix_id(), "tombstoned")
        .await;
    assert_eq!(org_text(&app, &org.id, "name").await.as_deref(), Some("Acme Inc"));

    // Out of order: the delete first, then the create it raced with.
    let other = ClerkOrganization::new(t);
    app.expect_outcome(&other.deleted(t + 5), &svix_id(), "applied").await;
    app.expect_outcome(&other.created(), &svix_id(), "tombstoned").await;
    assert_eq!(count(&app, "organizations", &other.id).await, 0);
});

both_backends!(a_membership_may_arrive_before_its_organization, |backend| async move {
    let app = spawn_app(backend).await;
    let t = now_ms() - 60_000;
    let org = ClerkOrganization::new(t);
    let membership = ClerkMembership::new(&org, t + 100);

    app.expect_outcome(&membership.created(), &svix_id(), "applied").await;
    assert_eq!(
        membership_text(&app, &membership.id, "organization_clerk_id").await,
        Some(org.id.clone())
    );
    assert_eq!(
        membership_text(&app, &membership.id, "user_clerk_id").await,
        Some(membership.user_id.clone())
    );
    assert_eq!(
        membership_text(&app, &membership.id, "role").await.as_deref(),
        Some("org:member")
    );
    assert_eq!(
        membership_text(&app, &membership.id, "created_via").await.as_deref(),
        Some("webhook")
    );
    // The embedded organization made its row; the member did not make a users row.
    assert_eq!(org_text(&app, &org.id, "name").await.as_deref(), Some("Acme Inc"));
    assert_eq!(app.db.count_users(&membership.user_id).await, 0);

    // The organization is renamed; a later membership event embedding the older copy changes the role only.
    app.expect_outcome(&org.at(t + 200, "Acme Two").updated(), &svix_id(), "applied")
        .await;
    let promoted = membership.at(t + 300, "org:admin");
    app.expect_outcome(&promoted.updated(), &svix_id(), "applied").await;
    assert_eq!(
        membership_text(&app, &membership.id, "role").await.as_deref(),
        Some("org:admin")
    );
    assert_eq!(org_text(&app, &org.id, "name").await.as_deref(), Some("Acme Two"));
    // An older membership event is stale.
    app.expect_outcome(&membership.at(t + 250, "org:member").updated(), &svix_id(), "stale")
        .await;
    assert_eq!(
        membership_text(&app, &membership.id, "role").await.as_deref(),
        Some("org:admin")
    );
});

both_backends!(a_deleted_membership_stays_deleted, |backend| async move {
    let app = spawn_app(backend).await;
    let t = now_ms() - 60_000;
    let org = ClerkOrganization::new(t);
    let membership = ClerkMembership::new(&org, t);
    app.expect_outcome(&membership.created(), &svix_id(), "applied").await;
    app.expect_outcome(&membership.deleted(t + 50), &svix_id(), "applied")
        .await;
    assert!(membership_text(&app, &membership.id, "deleted_at").await.is_some());
    app.expect_outcome(&membership.at(t + 100, "org:admin").updated(), &svix_id(), "tombstoned")
        .await;
    assert_eq!(
        membership_text(&app, &membership.id, "role").await.as_deref(),
        Some("org:member")
    );
    // The organization it embedded is not deleted with it.
    assert_eq!(org_text(&app, &org.id, "deleted_at").await, None);
});

both_backends!(
    organizations_are_fetched_from_clerk_when_missing,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let mut org = ClerkOrganization::new(now_ms() - 60_000);
        org.members_count = Some(7);
        organization_mock(&org).mount(app.clerk()).await;

        let path = format!("/v1/organizations/{}", org.id);
        let bearer = format!("Bearer {SERVICE_TOKEN}");
        let created = app.api("GET", &path, Some(&bearer)).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        assert_eq!(created.json["clerk_id"], org.id.as_str());
        assert_eq!(created.json["name"], "Acme Inc");
        assert_eq!(created.json["members_count"], 7);
        assert_eq!(created.json["public_metadata"], serde_json::json!({"plan": "pro"}));
        assert_eq!(created.json["created_via"], "fallback");
        assert!(
            created.json.get("data").is_none(),
            "data (private_metadata) stays out of the API: {}",
            created.body
        );
        assert!(!created.body.contains("cus_secret"), "{}", created.body);
        assert_eq!(
            org_text(&app, &org.id, "created_via").await.as_deref(),
            Some("fallback")
        );

        let again = app.api("GET", &path, Some(&bearer)).await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.json, created.json);
        assert_eq!(
            app.clerk_requests("/v1/organizations/").await,
            1,
            "the second answer came from the cache"
        );

        let missing = ClerkOrganization::new(now_ms());
        organization_not_found_mock(&missing.id).mount(app.clerk()).await;
        let answer = app
            .api("GET", &format!("/v1/organizations/{}", missing.id), Some(&bearer))
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
        let answer = app.api("GET", "/v1/organizations/user_2abc", Some(&bearer)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
        assert_eq!(answer.json["error"], "invalid_organization_id");
        let answer = app.api("GET", &path, None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

        app.expect_outcome(&org.deleted(now_ms()), &svix_id(), "applied").await;
        let gone = app.api("GET", &path, Some(&bearer)).await;
        assert_eq!(gone.status, StatusCode::GONE, "{}", gone.body);
    }
);

both_backends!(
    concurrent_lookups_of_a_missing_organization_insert_once,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let org = ClerkOrganization::new(now_ms() - 60_000);
        slow_organization_mock(&org, Duration::from_millis(300))
            .mount(app.clerk())
            .await;
        let path = format!("/v1/organizations/{}", org.id);
        let bearer = format!("Bearer {SERVICE_TOKEN}");
        let answers = futures_util::future::join_all((0..8).map(|_| app.api("GET", &path, Some(&bearer)))).await;
        let statuses: Vec<StatusCode> = answers.iter().map(|a| a.status).collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == StatusCode::CREATED).count(),
            1,
            "exactly one request created the row: {statuses:?}"
        );
        assert!(
            statuses
                .iter()
                .all(|s| *s == StatusCode::CREATED || *s == StatusCode::OK),
            "{statuses:?}"
        );
        assert_eq!(count(&app, "organizations", &org.id).await, 1);
        assert_eq!(
            app.clerk_requests("/v1/organizations/").await,
            1,
            "one Clerk call for all of them"
        );
    }
);

both_backends!(
    a_webhook_racing_the_fallback_keeps_the_newest_organization,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let t = now_ms() - 60_000;
        let old = ClerkOrganization::new(t);
        let new = old.at(t + 1_000, "Newest");
        // Clerk answers the older copy slowly; the newer one arrives by webhook meanwhile.
        slow_organization_mock(&old, Duration::from_millis(400))
            .mount(app.clerk())
            .await;
        let path = format!("/v1/organizations/{}", old.id);
        let bearer = format!("Bearer {SERVICE_TOKEN}");
        let lookup = app.api("GET", &path, Some(&bearer));
        let webhook = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            app.expect_outcome(&new.created(), &svix_id(), "applied").await;
        };
        let (answer, ()) = tokio::join!(lookup, webhook);
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "the webhook created the row: {}",
            answer.body
        );
        assert_eq!(
            answer.json["name"], "Newest",
            "the lookup answers the stored, newer row"
        );
        assert_eq!(org_text(&app, &old.id, "name").await.as_deref(), Some("Newest"));
        assert_eq!(org_text(&app, &old.id, "created_via").await.as_deref(), Some("webhook"));
    }
);

/// GET with the service token; the JSON array and the `X-Next-Cursor` header.
async fn list(app: &TestApp, path: &str) -> (StatusCode, Value, Option<String>) {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(SERVICE_TOKEN)
        .send()
        .await
        .expect("request failed");
    let status = response.status();
    let next = response
        .headers()
        .get("x-next-cursor")
        .map(|v| v.to_str().expect("ascii cursor").to_owned());
    let json = response.json().await.unwrap_or(Value::Null);
    (status, json, next)
}

fn ids(json: &Value) -> Vec<String> {
    json.as_array()
        .expect("a JSON array")
        .iter()
        .map(|m| m["clerk_id"].as_str().expect("clerk_id").to_owned())
        .collect()
}

both_backends!(
    memberships_are_listed_newest_first_a_page_at_a_time,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let t = now_ms() - 600_000;
        let org = ClerkOrganization::new(t);
        let members: Vec<ClerkMembership> = (0..3)
            .map(|i| {
                let mut m = ClerkMembership::new(&org, t + 10 * i);
                m.created_at = t + 10 * i;
                m
            })
            .collect();
        for m in &members {
            app.expect_outcome(&m.created(), &svix_id(), "applied").await;
        }
        let left = ClerkMembership::new(&org, t + 100);
        app.expect_outcome(&left.created(), &svix_id(), "applied").await;
        app.expect_outcome(&left.deleted(t + 200), &svix_id(), "applied").await;

        let base = format!("/v1/organizations/{}/memberships", org.id);
        let (status, page, next) = list(&app, &format!("{base}?limit=2")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(
            ids(&page),
            vec![members[2].id.clone(), members[1].id.clone()],
            "newest first"
        );
        assert_eq!(page[0]["user_clerk_id"], members[2].user_id.as_str());
        assert_eq!(page[0]["organization_clerk_id"], org.id.as_str());
        let cursor = next.expect("a next cursor after a full page");
        let (status, rest, next) = list(&app, &format!("{base}?limit=2&cursor={cursor}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            ids(&rest),
            vec![members[0].id.clone()],
            "the deleted membership is not listed"
        );
        assert_eq!(next, None, "the last page has no cursor");

        // The organizations of a user: one membership in a live organization, one in a deleted one.
        let user = members[0].user_id.clone();
        let other = ClerkOrganization::new(t);
        let mut second = ClerkMembership::new(&other, t + 500);
        second.user_id = user.clone();
        second.created_at = t + 500;
        app.expect_outcome(&second.created(), &svix_id(), "applied").await;
        let (_, mine, _) = list(&app, &format!("/v1/users/{user}/memberships")).await;
        assert_eq!(ids(&mine), vec![second.id.clone(), members[0].id.clone()]);
        app.expect_outcome(&other.deleted(now_ms()), &svix_id(), "applied")
            .await;
        let (_, mine, _) = list(&app, &format!("/v1/users/{user}/memberships")).await;
        assert_eq!(
            ids(&mine),
            vec![members[0].id.clone()],
            "a deleted organization's memberships are gone"
        );

        for bad in ["limit=0", "limit=501", "limit=x", "cursor=%2F%2F", "cursor=abc"] {
            let (status, body, _) = list(&app, &format!("{base}?{bad}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        }
        let (status, _, _) = list(&app, "/v1/users/org_x/memberships").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let unauthenticated = app.api("GET", &base, None).await;
        assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
    }
);

both_backends!(nul_characters_in_an_organization_are_dropped, |backend| async move {
    let app = spawn_app(backend).await;
    let mut org = ClerkOrganization::new(now_ms() - 60_000);
    org.name = "Ac\u{0}me".into();
    org.public_metadata = serde_json::json!({"ti\u{0}er": "g\u{0}old"});
    app.expect_outcome(&org.created(), &svix_id(), "applied").await;
    assert_eq!(org_text(&app, &org.id, "name").await.as_deref(), Some("Acme"));
    assert_eq!(
        json_column(&app, "organizations", &org.id, "public_metadata").await,
        Some(serde_json::json!({"tier": "gold"}))
    );
});
