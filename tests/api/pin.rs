//! The database knows which Clerk instance it mirrors (`src/clerk/pin.rs`): a key of another instance writes
//! nothing, a webhook of another instance is not applied, a development key on a production pin is refused
//! without asking Clerk — on both backends.

use clerk_sync::backfill::{BackfillError, Options};
use clerk_sync::clerk::pin::PinError;
use serde_json::json;
use wiremock::MockServer;

use crate::clerk::{instance_mock, now_ms, svix_id, ClerkUser, INSTANCE};
use crate::fake_users::mount;
use crate::helpers::{spawn_app, spawn_app_with_clerk, try_build, TestApp};

const OTHER: &str = "ins_2OtherInstance0000000000";

async fn pinned(app: &TestApp) -> (Option<String>, Option<String>) {
    let id = app.db.string("SELECT instance_id FROM clerk_sync_instance").await;
    let environment = app.db.string("SELECT environment FROM clerk_sync_instance").await;
    (id, environment)
}

async fn instance_checks(app: &TestApp) -> usize {
    app.clerk()
        .received_requests()
        .await
        .expect("recorded")
        .iter()
        .filter(|r| r.url.path() == "/v1/instance")
        .count()
}

fn created_by(user: &ClerkUser, instance: &str) -> String {
    let mut event: serde_json::Value = serde_json::from_str(&user.created()).expect("JSON");
    event["instance_id"] = json!(instance);
    event.to_string()
}

both_backends!(serve_pins_the_instance_of_its_key, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    assert_eq!(pinned(&app).await, (Some(INSTANCE.into()), Some("development".into())));
});

both_backends!(a_key_of_another_instance_writes_nothing, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    mount(&app, &[ClerkUser::new(now_ms())], vec![], 500).await;
    // The key now answers for another instance (a development key pointed at this database, say).
    instance_mock(OTHER, "development")
        .with_priority(1)
        .mount(app.clerk())
        .await;
    match app.backfill(Options::default()).await {
        Err(BackfillError::Pin(PinError::OtherInstance {
            pinned, key_instance, ..
        })) => {
            assert_eq!((pinned.as_str(), key_instance.as_str()), (INSTANCE, OTHER));
        }
        other => panic!("a key of another instance must be refused: {other:?}"),
    }
    assert_eq!(app.db.count_all_users().await, 0, "nothing written");
    assert_eq!(app.clerk_requests("/v1/users").await, 0, "nothing even read");

    // And a daemon started with that key does not start, naming both instances and the way out.
    let database = crate::test_db::TestDatabase::create(backend).await;
    let (ours, theirs) = (MockServer::start().await, MockServer::start().await);
    instance_mock(INSTANCE, "development").mount(&ours).await;
    instance_mock(OTHER, "development").mount(&theirs).await;
    let with = |clerk: &MockServer| {
        vec![
            ("CLERK_API_URL".to_owned(), clerk.uri()),
            ("CLERK_SECRET_KEY".to_owned(), crate::clerk::CLERK_SECRET_KEY.to_owned()),
        ]
    };
    let env = with(&ours);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    drop(
        try_build(&database, &env)
            .await
            .expect("a fresh database pins the key's instance"),
    );
    let env = with(&theirs);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    match try_build(&database, &env).await {
        Err(e) => {
            assert_eq!(e.exit_code(), 78, "{e}");
            let text = e.to_string();
            assert!(text.contains(OTHER) && text.contains(INSTANCE), "{text}");
            assert!(text.contains("clerk-sync pin --replace"), "{text}");
        }
        Ok(_) => panic!("a serve whose key belongs to another instance started"),
    }
});

both_backends!(a_webhook_of_another_instance_is_not_applied, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let user = ClerkUser::new(now_ms());
    let id = svix_id();
    app.expect_outcome(&created_by(&user, OTHER), &id, "wrong_instance")
        .await;
    assert_eq!(app.db.count_users(&user.id).await, 0, "not applied");
    let delivery = app.db.delivery(&id).await.expect("recorded");
    assert_eq!(delivery.outcome, "wrong_instance");
    // Its redelivery is told the same, and recorded once.
    let deliveries = app.db.count_deliveries().await;
    app.expect_outcome(&created_by(&user, OTHER), &id, "wrong_instance")
        .await;
    assert_eq!(app.db.count_deliveries().await, deliveries);
    // The pinned instance's, and one naming no instance, are applied.
    app.expect_outcome(&created_by(&user, INSTANCE), &svix_id(), "applied")
        .await;
    let other = ClerkUser::new(now_ms());
    let mut unnamed: serde_json::Value = serde_json::from_str(&other.created()).expect("JSON");
    unnamed.as_object_mut().expect("object").remove("instance_id");
    app.expect_outcome(&unnamed.to_string(), &svix_id(), "applied").await;
});

both_backends!(the_first_webhook_pins_the_instance, |backend| async move {
    // No key: nothing pins the instance until a webhook names it.
    let app = spawn_app(backend).await;
    assert_eq!(pinned(&app).await, (None, None));
    let (first, second) = (ClerkUser::new(now_ms()), ClerkUser::new(now_ms()));
    app.expect_outcome(&created_by(&first, OTHER), &svix_id(), "applied")
        .await;
    assert_eq!(
        pinned(&app).await,
        (Some(OTHER.into()), None),
        "environment not known yet"
    );
    app.expect_outcome(&first.created(), &svix_id(), "wrong_instance").await;
    app.expect_outcome(&created_by(&second, INSTANCE), &svix_id(), "wrong_instance")
        .await;
});

both_backends!(
    a_development_key_on_a_production_pin_is_refused_unasked,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        mount(&app, &[ClerkUser::new(now_ms())], vec![], 500).await;
        // The database mirrors the production instance (pinned with its live key, say).
        app.db
            .execute("UPDATE clerk_sync_instance SET environment = 'production'")
            .await;
        let asked = instance_checks(&app).await;
        match app.backfill(Options::default()).await {
            Err(BackfillError::Pin(e @ PinError::OtherEnvironment { .. })) => {
                let text = e.to_string();
                assert!(text.contains("development key (sk_test_…)"), "{text}");
                assert!(text.contains(&format!("{INSTANCE} (production)")), "{text}");
            }
            other => panic!("a development key on a production pin must be refused: {other:?}"),
        }
        assert_eq!(instance_checks(&app).await, asked, "refused without asking Clerk");
        assert_eq!(app.db.count_all_users().await, 0);
    }
);
