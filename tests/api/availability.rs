//! Health endpoints, an unavailable database (503 + Retry-After, nothing acknowledged), no signing secret.

use std::time::Duration;

use reqwest::StatusCode;

use crate::clerk::{now_ms, svix_id, ClerkUser};
use crate::helpers::{into_json, spawn_app, spawn_app_with, Backend};

both_backends!(livez_and_readyz_answer_200, |backend| async move {
    let app = spawn_app(backend).await;
    assert_eq!(app.livez().await.status(), StatusCode::OK);
    assert_eq!(app.readyz().await.status(), StatusCode::OK);
    // Migrations were applied: the daemon's tables exist and are empty.
    assert_eq!(app.db.count_all_users().await, 0);
    assert_eq!(app.db.count_deliveries().await, 0);
    assert_eq!(app.db.int("SELECT count(*) FROM clerk_sync_tombstones").await, 0);
});

both_backends!(
    unavailable_database_is_503_and_nothing_is_acknowledged,
    |backend| async move {
        let app = spawn_app(backend).await;
        let t = now_ms();
        let existing = ClerkUser::new(t);
        app.expect_outcome(&existing.created(), &svix_id(), "applied").await;
        let before = app.db.user(&existing.id).await.expect("user missing");

        let user = ClerkUser::new(t);
        let id = svix_id();
        let mut newer = existing.at(t + 1_000);
        newer.first_name = Some("Unavailable".into());
        let update_id = svix_id();

        let block = app.block_database().await;
        let response = app.post_webhook(&user.created(), &id).await;
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_string());
        let (status, json) = into_json(response).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "create while the database is down: {json}"
        );
        let retry_after = retry_after.expect("a 503 must carry Retry-After");
        assert!(
            retry_after.parse::<u64>().is_ok_and(|s| s > 0),
            "Retry-After must be a positive number of seconds: {retry_after:?}"
        );

        let (status, json) = app.deliver(&newer.updated(), &update_id).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "update while the database is down: {json}"
        );

        if backend == Backend::Postgres {
            // A held SQLite write lock leaves the file readable (WAL), so only Postgres is really unreachable.
            let status = app.readyz().await.status();
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "/readyz while the database is down"
            );
        }
        assert_eq!(
            app.livez().await.status(),
            StatusCode::OK,
            "/livez must not depend on the database"
        );

        block.release().await;
        app.wait_ready(Duration::from_secs(15)).await;

        assert_eq!(app.db.delivery(&id).await, None, "a 503 delivery was recorded");
        assert_eq!(app.db.delivery(&update_id).await, None, "a 503 delivery was recorded");
        assert_eq!(app.db.count_users(&user.id).await, 0, "a 503 delivery created the user");
        assert_eq!(
            app.db.user(&existing.id).await,
            Some(before),
            "a 503 delivery changed the user"
        );

        // Svix retries the same messages: now they are applied.
        app.expect_outcome(&user.created(), &id, "applied").await;
        app.expect_outcome(&newer.updated(), &update_id, "applied").await;
        assert_eq!(app.db.count_users(&user.id).await, 1);
        assert_eq!(
            app.db.user(&existing.id).await.and_then(|r| r.first_name).as_deref(),
            Some("Unavailable")
        );
        assert_eq!(
            app.db.delivery(&id).await.map(|d| d.outcome).as_deref(),
            Some("applied")
        );
        assert_eq!(app.readyz().await.status(), StatusCode::OK);
    }
);

both_backends!(without_a_signing_secret_webhooks_are_503, |backend| async move {
    let app = spawn_app_with(backend, &[("CLERK_WEBHOOK_SIGNING_SECRET", "")]).await;
    assert_eq!(app.livez().await.status(), StatusCode::OK);
    let user = ClerkUser::new(now_ms());
    let id = svix_id();
    // Signed with some secret: the daemon has none to check it with.
    let response = app.post_webhook(&user.created(), &id).await;
    let status = response.status();
    let retry_after = response.headers().get("retry-after").cloned();
    let body = response.text().await.expect("cannot read the body");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "body: {body}");
    assert!(retry_after.is_some(), "a 503 carries Retry-After, as the README says");
    let lower = body.to_lowercase();
    assert!(
        lower.contains("signing secret") || lower.contains("signing_secret"),
        "the 503 must say the signing secret is not configured: {body}"
    );
    assert!(lower.contains("not configured") || lower.contains("not set"), "{body}");
    assert_eq!(app.db.count_deliveries().await, 0);
    assert_eq!(app.db.count_all_users().await, 0);
});

/// Connections the server dropped while the daemon was idle (a restart, a pooler's idle timeout) do not fail the
/// next webhooks: the pool pings a connection that sat idle for a second before handing it out (not every one,
/// which cost a round trip per batch).
#[tokio::test]
async fn connections_dropped_while_idle_are_replaced_before_a_webhook_meets_them() {
    let app = spawn_app(Backend::Postgres).await;
    let t = now_ms();
    app.expect_outcome(&ClerkUser::new(t).created(), &svix_id(), "applied")
        .await;
    let killed = app
        .db
        .int(
            "SELECT CAST(count(*) AS BIGINT) FROM (SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()) t WHERE killed",
        )
        .await;
    assert!(killed > 0, "the daemon held no connection to drop");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for _ in 0..5 {
        // Applied at the first attempt: no 503 from a dead connection.
        app.expect_outcome(&ClerkUser::new(t).created(), &svix_id(), "applied")
            .await;
    }
}
