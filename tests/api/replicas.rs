//! Several replicas on one Postgres database: per-user order must hold across processes, not only within one.

use std::sync::Arc;

use reqwest::StatusCode;
use tokio::task::JoinSet;

use crate::clerk::{now_ms, svix_id, ClerkUser};
use crate::helpers::{spawn_app, Backend};

/// A create on one replica racing the same user's delete on another: whichever commits first, the user
/// ends deleted (tombstoned, no live row) — never a live row beside a tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_and_delete_racing_on_two_replicas_never_resurrect() {
    let app = Arc::new(spawn_app(Backend::Postgres).await);
    let replica = Arc::new(app.spawn_replica().await);
    let t = now_ms() - 60_000;
    let users: Vec<ClerkUser> = (0..60).map(|_| ClerkUser::new(t)).collect();

    let mut set = JoinSet::new();
    for user in &users {
        let (a, created) = (Arc::clone(&app), user.created());
        set.spawn(async move { a.deliver_to(&a.address, &created, &svix_id()).await });
        let (a, r, deleted) = (Arc::clone(&app), Arc::clone(&replica), user.deleted(t + 1_000));
        set.spawn(async move { a.deliver_to(&r.address, &deleted, &svix_id()).await });
    }
    while let Some(answer) = set.join_next().await {
        let (status, json) = answer.expect("a delivery task panicked");
        assert_eq!(status, StatusCode::OK, "every delivery is acknowledged: {json}");
    }

    for user in &users {
        assert!(
            app.db.tombstone(&user.id).await.is_some(),
            "{} has no tombstone",
            user.id
        );
        if let Some(row) = app.db.user(&user.id).await {
            assert!(
                row.deleted_at.is_some(),
                "{} is live beside its tombstone: {row:?}",
                user.id
            );
        }
        assert!(app.db.count_users(&user.id).await <= 1);
    }
}

/// 200 versions of one user, shuffled and split across two replicas: the newest wins, in one row, and every
/// delivery is acknowledged exactly once even when Svix retries it on the other replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versions_split_across_two_replicas_end_in_the_newest() {
    use rand::seq::SliceRandom;

    let app = Arc::new(spawn_app(Backend::Postgres).await);
    let replica = Arc::new(app.spawn_replica().await);
    let user = ClerkUser::new(0);
    let base = now_ms() - 100_000;
    let mut deliveries: Vec<(i64, String)> = (0..200).map(|i| (i, svix_id())).collect();
    deliveries.shuffle(&mut rand::rng());

    let mut set = JoinSet::new();
    for (n, (i, id)) in deliveries.into_iter().enumerate() {
        let (a, r) = (Arc::clone(&app), Arc::clone(&replica));
        let mut version = user.at(base + i);
        version.first_name = Some(format!("Version{i}"));
        let body = if i % 2 == 0 {
            version.created()
        } else {
            version.updated()
        };
        set.spawn(async move {
            let (first, second) = if n % 2 == 0 {
                (&a.address, &r.address)
            } else {
                (&r.address, &a.address)
            };
            let once = a.deliver_to(first, &body, &id).await;
            // The same message again, on the other replica (a Svix retry after a lost response).
            let again = a.deliver_to(second, &body, &id).await;
            (once, again)
        });
    }
    while let Some(result) = set.join_next().await {
        let ((status, json), (again_status, again_json)) = result.expect("a delivery task panicked");
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(again_status, StatusCode::OK, "{again_json}");
        assert_eq!(
            again_json["outcome"], "duplicate",
            "a redelivery must be a no-op: {again_json}"
        );
    }
    let row = app.db.user(&user.id).await.expect("row missing");
    assert_eq!(row.clerk_updated_at, Some(base + 199));
    assert_eq!(row.first_name.as_deref(), Some("Version199"));
    assert_eq!(app.db.count_users(&user.id).await, 1);
    assert_eq!(app.db.count_deliveries().await, 200);
}
