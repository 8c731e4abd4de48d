//! Faults from issue 8 that live in the write path: a locked table, foreign keys in hard-delete mode, a lost
//! acknowledgement, the shutdown deadline, and concurrent deliveries of the same svix ids on two replicas.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;

use crate::clerk::{envelope, now_ms, svix_id, user_mock, ClerkUser};
use crate::helpers::{spawn_app, spawn_app_with, spawn_app_with_clerk, Backend, TestDb, SERVICE_TOKEN};

/// A routine application migration holds `users` locked for longer than Svix waits: every webhook is still
/// answered in time (503 + Retry-After, so it is retried), `/readyz` says writes are stuck, and once the lock
/// is gone the retry is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_users_table_is_answered_503_in_time_and_readyz_says_so() {
    let env = [
        ("CLERK_SYNC_DATABASE__LOCK_TIMEOUT_MS", "1000"),
        ("CLERK_SYNC_WEBHOOKS__ANSWER_TIMEOUT_MS", "3000"),
    ];
    let app = spawn_app_with(Backend::Postgres, &env).await;
    let TestDb::Postgres(pool) = &app.db else {
        unreachable!("a Postgres test")
    };
    let mut lock = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");

    let user = ClerkUser::new(now_ms());
    let id = svix_id();
    let started = Instant::now();
    let response = app.post_webhook(&user.created(), &id).await;
    let waited = started.elapsed();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        response.headers().contains_key("retry-after"),
        "503 carries Retry-After"
    );
    assert!(
        waited < Duration::from_secs(10),
        "answered after {waited:?}: Svix gives up at 15 s"
    );

    // An event that never touches `users` is not stuck behind the lock either.
    let other = envelope(
        "session.created",
        json!({"id": "sess_1", "object": "session"}),
        now_ms(),
    );
    let (status, json) = app.deliver(&other, &svix_id()).await;
    assert_eq!(status, StatusCode::OK, "{json}");

    assert_eq!(
        app.readyz().await.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "writes are failing: not ready"
    );
    lock.rollback().await.expect("release the lock");

    app.expect_outcome(&user.created(), &id, "applied").await;
    app.wait_ready(Duration::from_secs(15)).await;
}

// With `delete_mode = "hard"` and an application table referencing `users(id)`, a delete is acknowledged and
// the tombstone kept; the referenced row is soft-deleted instead, so no later event brings the user back.
both_backends!(
    hard_delete_blocked_by_a_foreign_key_soft_deletes,
    |backend| async move {
        let app = spawn_app_with(backend, &[("CLERK_SYNC_WEBHOOKS__DELETE_MODE", "hard")]).await;
        let id_type = if backend == Backend::Postgres { "uuid" } else { "TEXT" };
        app.db
            .execute(&format!(
                "CREATE TABLE posts (id INTEGER PRIMARY KEY, author {id_type} NOT NULL REFERENCES users(id))"
            ))
            .await;
        let t = now_ms() - 60_000;
        let (referenced, free) = (ClerkUser::new(t), ClerkUser::new(t));
        app.expect_outcome(&referenced.created(), &svix_id(), "applied").await;
        app.expect_outcome(&free.created(), &svix_id(), "applied").await;
        let row = app.db.user(&referenced.id).await.expect("row");
        let cast = if backend == Backend::Postgres { "::uuid" } else { "" };
        app.db
            .execute(&format!(
                "INSERT INTO posts (id, author) VALUES (1, '{}'{cast})",
                row.id.expect("id")
            ))
            .await;

        app.expect_outcome(&referenced.deleted(t + 1_000), &svix_id(), "applied")
            .await;
        app.expect_outcome(&free.deleted(t + 1_000), &svix_id(), "applied")
            .await;
        let kept = app.db.user(&referenced.id).await.expect("the referenced row stays");
        assert!(
            kept.deleted_at.is_some(),
            "the referenced row is soft-deleted: {kept:?}"
        );
        assert_eq!(app.db.count_users(&free.id).await, 0, "an unreferenced row is removed");
        assert!(app.db.tombstone(&referenced.id).await.is_some(), "tombstone kept");

        // A later update does not bring the user back.
        let later = referenced.at(t + 5_000);
        app.expect_outcome(&later.updated(), &svix_id(), "tombstoned").await;
        let kept = app.db.user(&referenced.id).await.expect("row");
        assert!(kept.deleted_at.is_some(), "still deleted: {kept:?}");
    }
);

// A commit whose answer was lost: the retry comes back `duplicate`, and the cached copy must not outlive it.
both_backends!(a_duplicate_after_a_lost_answer_clears_the_cache, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let t = now_ms() - 60_000;
    let user = ClerkUser::new(t);
    user_mock(&user).mount(app.clerk()).await;
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    let cached = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(cached.json["first_name"], "Ada", "{}", cached.body);

    // The update committed (here: written straight into the database) but its answer never reached Svix.
    let id = svix_id();
    app.db
        .execute(&format!(
            "UPDATE users SET first_name = 'Committed', clerk_updated_at = {} WHERE clerk_id = '{}'",
            t + 1_000,
            user.id
        ))
        .await;
    app.db
        .execute(&format!(
            "INSERT INTO clerk_sync_deliveries (svix_id, event_type, clerk_id, outcome) \
             VALUES ('{id}', 'user.updated', '{}', 'applied')",
            user.id
        ))
        .await;
    let mut newer = user.at(t + 1_000);
    newer.first_name = Some("Committed".into());
    app.expect_outcome(&newer.updated(), &id, "duplicate").await;

    let answer = app.get_user(&user.id, SERVICE_TOKEN).await;
    assert_eq!(answer.json["first_name"], "Committed", "{}", answer.body);
});

/// Shutdown has one deadline: a write stuck on a locked table does not get a second full period after the
/// in-flight requests' one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_takes_one_deadline_even_with_a_stuck_write() {
    let env = [
        ("CLERK_SYNC_SERVER__SHUTDOWN_TIMEOUT_MS", "2000"),
        ("CLERK_SYNC_DATABASE__LOCK_TIMEOUT_MS", "20000"),
        ("CLERK_SYNC_DATABASE__STATEMENT_TIMEOUT_MS", "20000"),
        ("CLERK_SYNC_WEBHOOKS__ANSWER_TIMEOUT_MS", "20000"),
    ];
    let mut app = spawn_app_with(Backend::Postgres, &env).await;
    let TestDb::Postgres(pool) = &app.db else {
        unreachable!("a Postgres test")
    };
    let pool = pool.clone();
    let mut lock = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let (address, body) = (app.address.clone(), ClerkUser::new(now_ms()).created());
    let (secret, id) = (app.secret.clone(), svix_id());
    let stuck = tokio::spawn(async move {
        let now = crate::clerk::now_secs();
        let signature = crate::helpers::sign(&secret, &id, now, body.as_bytes());
        reqwest::Client::new()
            .post(format!("{address}/webhooks/clerk"))
            .header("svix-id", id)
            .header("svix-timestamp", now.to_string())
            .header("svix-signature", signature)
            .body(body)
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    app.stop().await;
    let took = started.elapsed();
    drop(lock);
    let _ = stuck.await;
    assert!(
        took < Duration::from_millis(3_500),
        "shutdown took {took:?} with a 2 s deadline (a second period would make it 4 s or more)"
    );
}

/// Two replicas taking the same `session.created` deliveries in opposite orders: svix ids are inserted in
/// one order everywhere, so they never deadlock; each id is recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_deliveries_on_two_replicas_never_deadlock() {
    let app = Arc::new(spawn_app(Backend::Postgres).await);
    let replica = Arc::new(app.spawn_replica().await);
    let mut set = JoinSet::new();
    for round in 0..40 {
        let ids: Vec<String> = (0..4).map(|_| svix_id()).collect();
        for (n, target) in [app.address.clone(), replica.address.clone()].into_iter().enumerate() {
            let mut ordered = ids.clone();
            if n == 1 {
                ordered.reverse();
            }
            for id in ordered {
                let body = envelope(
                    "session.created",
                    json!({"id": format!("sess_{round}"), "object": "session"}),
                    now_ms(),
                );
                let (app, target) = (Arc::clone(&app), target.clone());
                set.spawn(async move { app.deliver_to(&target, &body, &id).await });
            }
        }
    }
    while let Some(answer) = set.join_next().await {
        let (status, json) = answer.expect("delivery task");
        assert_eq!(status, StatusCode::OK, "{json}");
        let outcome = json["outcome"].as_str().unwrap_or_default();
        assert!(["ignored", "duplicate"].contains(&outcome), "{json}");
    }
    assert_eq!(app.db.count_deliveries().await, 160);
}

// A NUL character in a name made every write of that user fail on Postgres (text cannot hold U+0000): both
// backends store the user, without the NUL.
both_backends!(a_nul_character_in_a_name_is_stored_without_it, |backend| async move {
    let app = spawn_app(backend).await;
    let mut user = ClerkUser::new(now_ms());
    user.first_name = Some("A\u{0}B".into());
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    let row = app.db.user(&user.id).await.expect("stored");
    assert_eq!(row.first_name.as_deref(), Some("AB"));
});

// A delete whose timestamp lies past year 9999 answered `applied` on SQLite and left the user live there.
// Timestamps outside 2000 .. 2100 are refused, identically on both backends, and nothing changes.
both_backends!(absurd_timestamps_are_refused_on_both_backends, |backend| async move {
    let app = spawn_app(backend).await;
    let user = ClerkUser::new(now_ms());
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    let (status, json) = app.deliver(&user.deleted(300_000_000_000_000), &svix_id()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    assert_eq!(json["error"], "invalid_payload", "{json}");
    let (status, json) = app.deliver(&user.at(i64::MAX / 2).updated(), &svix_id()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    let row = app.db.user(&user.id).await.expect("row");
    assert!(row.deleted_at.is_none(), "nothing applied: {row:?}");
    assert!(app.db.tombstone(&user.id).await.is_none(), "no tombstone");
});
