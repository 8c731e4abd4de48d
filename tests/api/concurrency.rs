//! Many deliveries at once: per-user ordering under concurrency, many users in parallel, idle actors.

use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use reqwest::StatusCode;
use tokio::task::JoinSet;

use crate::clerk::{now_ms, svix_id, ClerkUser};
use crate::helpers::{spawn_app, spawn_app_with, TestApp};

/// Version `i` of `user`: distinct name and email, `updated_at = base + i`, created or updated.
fn version(user: &ClerkUser, base: i64, i: i64) -> String {
    let mut v = user
        .at(base + i)
        .with_primary_email_second(&format!("v{i}@example.com"), "old@example.com");
    v.first_name = Some(format!("Version{i}"));
    if i % 2 == 0 {
        v.created()
    } else {
        v.updated()
    }
}

/// Sends every (svix id, body) at once and returns (status, outcome) per delivery.
async fn send_all(app: &Arc<TestApp>, deliveries: Vec<(String, String)>) -> Vec<(String, StatusCode, String)> {
    let mut set = JoinSet::new();
    for (id, body) in deliveries {
        let app = Arc::clone(app);
        set.spawn(async move {
            let (status, json) = app.deliver(&body, &id).await;
            let outcome = json["outcome"].as_str().unwrap_or_default().to_string();
            (id, status, outcome)
        });
    }
    let mut results = Vec::new();
    while let Some(result) = set.join_next().await {
        results.push(result.expect("a delivery task panicked"));
    }
    results
}

both_backends!(two_hundred_concurrent_deliveries_for_one_user, |backend| async move {
    let app = Arc::new(spawn_app(backend).await);
    let user = ClerkUser::new(0);
    let base = now_ms() - 100_000;
    let mut deliveries: Vec<(String, String)> = (0..200).map(|i| (svix_id(), version(&user, base, i))).collect();
    deliveries.shuffle(&mut rand::rng());

    let results = send_all(&app, deliveries).await;
    let failures: Vec<_> = results.iter().filter(|(_, s, _)| !s.is_success()).collect();
    assert!(
        failures.is_empty(),
        "{} deliveries were not 2xx: {failures:?}",
        failures.len()
    );
    let applied = results.iter().filter(|(_, _, o)| o == "applied").count();
    let stale = results.iter().filter(|(_, _, o)| o == "stale").count();
    assert_eq!(
        applied + stale,
        200,
        "every outcome must be applied or stale: {results:?}"
    );
    assert!(applied >= 1);

    assert_eq!(app.db.count_users(&user.id).await, 1, "exactly one row per clerk_id");
    let row = app.db.user(&user.id).await.expect("user missing");
    assert_eq!(
        row.clerk_updated_at,
        Some(base + 199),
        "the newest version must win: {row:?}"
    );
    assert_eq!(row.first_name.as_deref(), Some("Version199"));
    assert_eq!(row.email.as_deref(), Some("v199@example.com"));
    assert_eq!(row.created_via, "webhook");

    let recorded = app
        .db
        .int(&format!(
            "SELECT count(*) FROM clerk_sync_deliveries WHERE clerk_id = '{}'",
            user.id
        ))
        .await;
    assert_eq!(recorded, 200, "every delivery must be recorded once");
    for (id, _, outcome) in results.iter().take(20) {
        let delivery = app.db.delivery(id).await.expect("delivery missing");
        assert_eq!(
            &delivery.outcome, outcome,
            "recorded outcome differs from the answer for {id}"
        );
    }
});

both_backends!(many_users_in_parallel_each_end_at_their_newest, |backend| async move {
    let app = Arc::new(spawn_app(backend).await);
    let base = now_ms() - 100_000;
    let users: Vec<ClerkUser> = (0..40).map(|_| ClerkUser::new(0)).collect();
    let mut deliveries = Vec::new();
    for user in &users {
        for i in 0..5 {
            deliveries.push((svix_id(), version(user, base, i)));
        }
    }
    // Retries of the same delivery mixed in: each must be a duplicate or the original outcome, never a 5xx.
    let retries: Vec<(String, String)> = deliveries.iter().step_by(7).cloned().collect();
    deliveries.extend(retries);
    deliveries.shuffle(&mut rand::rng());

    let results = send_all(&app, deliveries).await;
    let failures: Vec<_> = results.iter().filter(|(_, s, _)| !s.is_success()).collect();
    assert!(
        failures.is_empty(),
        "{} deliveries were not 2xx: {failures:?}",
        failures.len()
    );

    assert_eq!(app.db.count_all_users().await, 40);
    for user in &users {
        let row = app.db.user(&user.id).await.expect("user missing");
        assert_eq!(row.clerk_updated_at, Some(base + 4), "{row:?}");
        assert_eq!(row.first_name.as_deref(), Some("Version4"));
    }
    assert_eq!(
        app.db.count_deliveries().await,
        200,
        "one delivery row per distinct svix-id"
    );
});

both_backends!(a_user_comes_back_after_its_lane_retired, |backend| async move {
    let app = spawn_app_with(backend, &[("CLERK_SYNC_ACTORS__SHARDS", "1")]).await;
    let t = now_ms();
    let user = ClerkUser::new(t);
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut newer = user.at(t + 1);
    newer.first_name = Some("Back".into());
    app.expect_outcome(&newer.updated(), &svix_id(), "applied").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.expect_outcome(&user.updated(), &svix_id(), "stale").await;

    let row = app.db.user(&user.id).await.expect("user missing");
    assert_eq!(row.first_name.as_deref(), Some("Back"));
    assert_eq!(row.clerk_updated_at, Some(t + 1));
});
