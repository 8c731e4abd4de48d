//! The full user profile: phone number, external id, public metadata, banned, sign-in and creation times, and
//! the whole Clerk object in `data` (unless `sync.store_payload` is off); adoption of tables that already have
//! some of those columns.

use serde_json::{json, Value};

use crate::clerk::{envelope, now_ms, svix_id, user_mock, ClerkUser};
use crate::clerk_orgs::ClerkOrganization;
use crate::helpers::SERVICE_TOKEN;
use crate::helpers::{spawn_app_on, spawn_app_with, spawn_app_with_clerk, try_build, Backend, TestApp, TestDatabase};

/// A user with every profile field set: the primary phone second, metadata, banned, a sign-in time.
fn full_user(updated_at: i64) -> (ClerkUser, Value) {
    let mut user = ClerkUser::new(updated_at);
    user.phones = vec![
        ("idn_phoneother0000000000000001".into(), "+15550000001".into()),
        ("idn_phoneprimary00000000000002".into(), "+15550000002".into()),
    ];
    user.primary_phone_id = Some("idn_phoneprimary00000000000002".into());
    let mut data = user.data();
    data["external_id"] = json!("legacy-42");
    data["public_metadata"] = json!({"role": "admin", "plan": {"tier": "pro", "seats": 5}});
    data["private_metadata"] = json!({"stripe_customer": "cus_private"});
    data["banned"] = json!(true);
    data["last_sign_in_at"] = json!(1_700_000_000_456_i64);
    data["created_at"] = json!(1_600_000_000_000_i64);
    (user, data)
}

async fn user_text(app: &TestApp, clerk_id: &str, column: &str) -> Option<String> {
    app.db
        .string(&format!(
            "SELECT CAST({column} AS TEXT) FROM users WHERE clerk_id = '{clerk_id}'"
        ))
        .await
}

async fn user_json(app: &TestApp, clerk_id: &str, column: &str) -> Option<Value> {
    let text = user_text(app, clerk_id, column).await?;
    Some(serde_json::from_str(&text).expect("a JSON column"))
}

both_backends!(the_full_profile_is_stored_and_served, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let (user, data) = full_user(now_ms() - 5_000);
    app.expect_outcome(&envelope("user.created", data.clone(), now_ms()), &svix_id(), "applied")
        .await;

    assert_eq!(
        user_text(&app, &user.id, "phone_number").await.as_deref(),
        Some("+15550000002")
    );
    assert_eq!(
        user_text(&app, &user.id, "external_id").await.as_deref(),
        Some("legacy-42")
    );
    assert_eq!(
        user_json(&app, &user.id, "public_metadata").await,
        Some(json!({"role": "admin", "plan": {"tier": "pro", "seats": 5}}))
    );
    assert_eq!(
        app.db
            .int(&format!(
                "SELECT count(*) FROM users WHERE banned AND clerk_id = '{}'",
                user.id
            ))
            .await,
        1
    );
    assert_eq!(
        user_json(&app, &user.id, "data").await,
        Some(data),
        "data is the whole object"
    );

    let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(answer.status, reqwest::StatusCode::OK, "{}", answer.body);
    let json = &answer.json;
    assert_eq!(json["phone_number"], "+15550000002");
    assert_eq!(json["external_id"], "legacy-42");
    assert_eq!(json["public_metadata"]["plan"]["seats"], 5);
    assert_eq!(json["banned"], true);
    assert_eq!(json["last_sign_in_at"], "2023-11-14T22:13:20.456Z");
    assert_eq!(json["clerk_created_at"], "2020-09-13T12:26:40.000Z");
    assert!(
        json.get("data").is_none(),
        "the API leaves data (private_metadata) out: {json}"
    );
    assert!(!answer.body.contains("cus_private"), "{}", answer.body);
});

both_backends!(the_fallback_fills_the_profile_too, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let (user, data) = full_user(now_ms() - 5_000);
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path(format!("/v1/users/{}", user.id)))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(data.clone()))
        .mount(app.clerk())
        .await;
    let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(answer.status, reqwest::StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.json["external_id"], "legacy-42");
    assert_eq!(user_json(&app, &user.id, "data").await, Some(data));
    // A plain user (no profile extras) has NULLs, not blanks.
    let plain = ClerkUser::new(now_ms() - 5_000);
    user_mock(&plain).mount(app.clerk()).await;
    let answer = app.get_user(&plain.id, SERVICE_TOKEN).await;
    assert_eq!(answer.status, reqwest::StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.json["phone_number"], Value::Null);
    assert_eq!(answer.json["external_id"], Value::Null);
    assert_eq!(answer.json["banned"], Value::Null);
    assert_eq!(answer.json["public_metadata"], json!({}));
});

both_backends!(without_store_payload_no_clerk_object_is_kept, |backend| async move {
    let app = spawn_app_with(backend, &[("CLERK_SYNC_SYNC__STORE_PAYLOAD", "false")]).await;
    let (user, data) = full_user(now_ms() - 5_000);
    app.expect_outcome(&envelope("user.created", data, now_ms()), &svix_id(), "applied")
        .await;
    assert_eq!(user_text(&app, &user.id, "data").await, None);
    assert_eq!(
        user_text(&app, &user.id, "external_id").await.as_deref(),
        Some("legacy-42")
    );
    let org = ClerkOrganization::new(now_ms() - 5_000);
    app.expect_outcome(&org.created(), &svix_id(), "applied").await;
    assert_eq!(
        app.db
            .string(&format!(
                "SELECT CAST(data AS TEXT) FROM organizations WHERE clerk_id = '{}'",
                org.id
            ))
            .await,
        None
    );
});

/// An application-made `users` table that already has some of the profile's columns, with values.
async fn app_table_with_profile_columns(backend: Backend, public_metadata_type: &str) -> TestDatabase {
    let database = TestDatabase::create(backend).await;
    let db = database.connect().await;
    let id = match backend {
        Backend::Postgres => "id uuid primary key default gen_random_uuid()",
        Backend::Sqlite => "id text primary key",
    };
    db.execute(&format!(
        "create table users ({id}, clerk_id text unique, email text, phone_number text, \
         public_metadata {public_metadata_type}, plan text)"
    ))
    .await;
    let id_value = match backend {
        Backend::Postgres => "gen_random_uuid()",
        Backend::Sqlite => "'app-1'",
    };
    db.execute(&format!(
        "insert into users (id, clerk_id, email, phone_number, plan) \
         values ({id_value}, 'user_2aAdoptedPhone00000000001', 'p@example.com', '+15551230000', 'gold')"
    ))
    .await;
    db.close().await;
    database
}

both_backends!(profile_columns_already_present_are_adopted, |backend| async move {
    let json_type = if backend == Backend::Postgres { "jsonb" } else { "text" };
    let database = app_table_with_profile_columns(backend, json_type).await;
    let app = spawn_app_on(database, &[]).await;
    let id = "user_2aAdoptedPhone00000000001";
    assert_eq!(
        user_text(&app, id, "phone_number").await.as_deref(),
        Some("+15551230000"),
        "kept"
    );
    assert_eq!(
        user_text(&app, id, "plan").await.as_deref(),
        Some("gold"),
        "the app's own column kept"
    );
    assert_eq!(user_text(&app, id, "created_via").await.as_deref(), Some("adopted"));
    let columns = app.db.users_columns().await;
    for column in ["external_id", "banned", "last_sign_in_at", "clerk_created_at", "data"] {
        let prefix = format!("{column}:");
        assert!(
            columns.iter().any(|c| c.starts_with(&prefix)),
            "{column} added: {columns:?}"
        );
    }
    // The next event fills every column of the adopted row.
    let mut user = ClerkUser::new(now_ms() - 1_000);
    user.id = id.into();
    let mut data = user.data();
    data["public_metadata"] = json!({"role": "owner"});
    app.expect_outcome(&envelope("user.updated", data, now_ms()), &svix_id(), "applied")
        .await;
    assert_eq!(
        user_json(&app, id, "public_metadata").await,
        Some(json!({"role": "owner"}))
    );
    assert_eq!(user_text(&app, id, "phone_number").await, None, "Clerk says: no phone");
    assert_eq!(user_text(&app, id, "plan").await.as_deref(), Some("gold"));
});

both_backends!(an_incompatible_profile_column_refuses_adoption, |backend| async move {
    let database = app_table_with_profile_columns(backend, "integer").await;
    let error = match try_build(&database, &[]).await {
        Ok(_) => panic!("a users.public_metadata of type integer cannot hold JSON: adoption must refuse"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("public_metadata"), "the error names the column: {error}");
    let db = database.connect().await;
    assert_eq!(
        db.string("SELECT phone_number FROM users WHERE clerk_id = 'user_2aAdoptedPhone00000000001'")
            .await
            .as_deref(),
        Some("+15551230000"),
        "nothing changed"
    );
});

both_backends!(
    an_application_made_organizations_table_is_adopted,
    |backend| async move {
        let database = TestDatabase::create(backend).await;
        let db = database.connect().await;
        let id = match backend {
            Backend::Postgres => "id bigserial primary key",
            Backend::Sqlite => "id integer primary key",
        };
        db.execute(&format!(
            "create table organizations ({id}, clerk_id text, name text, billing_email text)"
        ))
        .await;
        db.execute("insert into organizations (clerk_id, name, billing_email) values ('org_2aAppMadeOrg000000000001', 'Old', 'b@example.com')")
        .await;
        db.close().await;
        let app = spawn_app_on(database, &[]).await;
        let existing = "org_2aAppMadeOrg000000000001";
        let text = |column: &'static str, id: String| {
            let app = &app;
            async move {
                app.db
                    .string(&format!(
                        "SELECT CAST({column} AS TEXT) FROM organizations WHERE clerk_id = '{id}'"
                    ))
                    .await
            }
        };
        assert_eq!(text("created_via", existing.into()).await.as_deref(), Some("adopted"));
        let mut org = ClerkOrganization::new(now_ms() - 1_000);
        org.id = existing.into();
        app.expect_outcome(&org.updated(), &svix_id(), "applied").await;
        assert_eq!(text("name", existing.into()).await.as_deref(), Some("Acme Inc"));
        assert_eq!(
            text("billing_email", existing.into()).await.as_deref(),
            Some("b@example.com")
        );
        assert_eq!(text("updated_via", existing.into()).await.as_deref(), Some("webhook"));
        let fresh = ClerkOrganization::new(now_ms() - 1_000);
        app.expect_outcome(&fresh.created(), &svix_id(), "applied").await;
        assert_eq!(text("created_via", fresh.id.clone()).await.as_deref(), Some("webhook"));
    }
);
