//! The rebuilt write path (multi-row batches, several in flight) and Clerk I/O kept out of users' actors.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::task::JoinSet;

use crate::clerk::{failing_mock, now_ms, svix_id, ClerkUser};
use crate::helpers::{spawn_app_with_clerk, Backend, SERVICE_TOKEN};

/// `GET /v1/users/{clerk_id}` on the fake Clerk, answer still to choose.
fn clerk_mock(clerk_id: &str) -> wiremock::MockBuilder {
    use wiremock::matchers::{method, path};
    wiremock::Mock::given(method("GET")).and(path(format!("/v1/users/{clerk_id}")))
}

both_backends!(
    a_change_the_database_rejects_fails_alone_in_its_batch,
    |backend| async move {
        let app = Arc::new(spawn_app_with_clerk(backend, &[]).await);
        // An application-made constraint that refuses one particular address.
        let constraint = match backend {
            Backend::Postgres => {
                "ALTER TABLE users ADD CONSTRAINT app_no_blocked CHECK (email IS NULL OR email <> 'blocked@example.com')"
            }
            Backend::Sqlite => {
                "CREATE TRIGGER app_no_blocked BEFORE INSERT ON users WHEN NEW.email = 'blocked@example.com' \
                 BEGIN SELECT RAISE(ABORT, 'blocked address'); END"
            }
        };
        app.db.execute(constraint).await;

        let t = now_ms();
        let users: Vec<ClerkUser> = (0..40).map(|_| ClerkUser::new(t)).collect();
        let blocked = ClerkUser::new(t).with_primary_email_second("blocked@example.com", "other@example.com");
        let mut set = JoinSet::new();
        for (i, user) in users.iter().chain(std::iter::once(&blocked)).enumerate() {
            let (app, body, id) = (Arc::clone(&app), user.created(), user.id.clone());
            set.spawn(async move {
                // Spread the rejected change among the others so it shares a batch with some.
                tokio::time::sleep(Duration::from_millis((i % 4) as u64)).await;
                let (status, json) = app.deliver(&body, &svix_id()).await;
                (id, status, json)
            });
        }
        while let Some(answer) = set.join_next().await {
            let (id, status, json) = answer.expect("a request task panicked");
            if id == blocked.id {
                assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "rejected change: {json}");
            } else {
                assert_eq!(status, StatusCode::OK, "{id}: {json}");
                assert_eq!(json["outcome"], "applied", "{id}: {json}");
            }
        }
        for user in &users {
            assert_eq!(app.db.count_users(&user.id).await, 1, "{} was not stored", user.id);
        }
        assert_eq!(app.db.count_users(&blocked.id).await, 0);
    }
);

both_backends!(
    a_webhook_is_not_held_behind_a_lookup_waiting_on_clerk,
    |backend| async move {
        let app = Arc::new(spawn_app_with_clerk(backend, &[]).await);
        let t = now_ms() - 60_000;
        let user = ClerkUser::new(t);
        // Clerk takes 4 s to answer the lookup of this user.
        clerk_mock(&user.id)
            .respond_with(
                wiremock::ResponseTemplate::new(200)
                    .set_body_json(user.data())
                    .set_delay(Duration::from_secs(4)),
            )
            .mount(app.clerk())
            .await;

        let lookup = {
            let (app, id) = (Arc::clone(&app), user.id.clone());
            tokio::spawn(async move { app.get_user(&id, SERVICE_TOKEN).await })
        };
        // Wait until the lookup is waiting on Clerk.
        for _ in 0..100 {
            if app.clerk_requests("/v1/users/").await > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(app.clerk_requests("/v1/users/").await, 1, "the lookup reached Clerk");

        let mut newer = user.at(t + 1_000);
        newer.first_name = Some("FromWebhook".into());
        let (status, json) = app.deliver(&newer.created(), &svix_id()).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["outcome"], "applied", "{json}");
        assert!(
            !lookup.is_finished(),
            "the webhook was answered while the lookup still waited on Clerk"
        );

        let answer = lookup.await.expect("lookup task");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        // The older copy from Clerk lost to the webhook's newer one under the ordering guard.
        assert_eq!(answer.json["first_name"], "FromWebhook", "{}", answer.body);
        let row = app.db.user(&user.id).await.expect("row");
        assert_eq!(row.created_via, "webhook");
        assert_eq!(app.db.count_users(&user.id).await, 1);
    }
);

both_backends!(
    lookups_waiting_on_a_failing_clerk_share_one_call_sequence,
    |backend| async move {
        let env = [("CLERK_SYNC_CLERK__RETRY_BUDGET_MS", "1500")];
        let app = Arc::new(spawn_app_with_clerk(backend, &env).await);
        let alone = ClerkUser::new(now_ms());
        let shared = ClerkUser::new(now_ms());
        failing_mock(&alone.id, 503).mount(app.clerk()).await;
        failing_mock(&shared.id, 503).mount(app.clerk()).await;

        // What one lookup costs on its own.
        let answer = app.get_user(&alone.id, SERVICE_TOKEN).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
        let one = app.clerk_requests(&format!("/v1/users/{}", alone.id)).await;
        assert!(one >= 2, "a failing Clerk is retried: {one} calls");

        let mut set = JoinSet::new();
        for _ in 0..20 {
            let (app, id) = (Arc::clone(&app), shared.id.clone());
            set.spawn(async move { app.get_user(&id, SERVICE_TOKEN).await });
        }
        while let Some(answer) = set.join_next().await {
            let answer = answer.expect("lookup task");
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
            assert!(answer.retry_after.is_some(), "503 carries Retry-After");
        }
        let twenty = app.clerk_requests(&format!("/v1/users/{}", shared.id)).await;
        assert!(
            twenty <= one + 1,
            "20 concurrent lookups cost {twenty} Clerk calls; one lookup alone costs {one}"
        );
    }
);

both_backends!(a_lookup_whose_caller_left_stops_calling_clerk, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[("CLERK_SYNC_CLERK__RETRY_BUDGET_MS", "6000")]).await;
    let user = ClerkUser::new(now_ms());
    // Each failing answer takes 400 ms: without cancellation the retries would go on for 6 s.
    clerk_mock(&user.id)
        .respond_with(wiremock::ResponseTemplate::new(503).set_delay(Duration::from_millis(400)))
        .mount(app.clerk())
        .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let gone = client
        .get(format!("{}/v1/users/{}", app.address, user.id))
        .bearer_auth(SERVICE_TOKEN)
        .send()
        .await;
    assert!(gone.is_err(), "the caller gave up first: {gone:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = app.clerk_requests(&format!("/v1/users/{}", user.id)).await;
    assert_eq!(calls, 1, "no Clerk call after the only caller went away");
});
