//! One batch of every outcome through `Store::apply`: on Postgres the common batch (users created or updated)
//! takes `clerk_sync_apply_users` in one round trip, on SQLite the general path; both must answer the same, record
//! the same deliveries and append the same feed rows.

use clerk_sync::store::{Change, Delivery, Entity, Outcome, Source, Store, UserData};

use crate::clerk::{now_ms, svix_id, user_id};
use crate::helpers::{spawn_app, Backend, TestApp};

fn user(clerk_id: &str, updated_at: i64, first_name: &str) -> UserData {
    UserData {
        clerk_id: clerk_id.to_owned(),
        first_name: Some(first_name.to_owned()),
        email: Some(format!("{}@example.com", clerk_id.to_lowercase())),
        data: Some(serde_json::json!({"id": clerk_id, "first_name": first_name}).into()),
        clerk_updated_at: updated_at,
        ..UserData::default()
    }
}

fn webhook(user: UserData, svix: &str) -> Change {
    let clerk_id = user.clerk_id.clone();
    Change::Upsert {
        entity: Entity::User(user),
        via: Source::Webhook,
        delivery: Some(Delivery {
            svix_id: svix.to_owned(),
            event_type: "user.updated".into(),
            clerk_id: Some(clerk_id),
        }),
    }
}

async fn apply(app: &TestApp, batch: &[Change]) -> Vec<Outcome> {
    let db = app.connect_db().await;
    let mut batch = batch.to_vec();
    batch.iter_mut().for_each(|c| c.prepare(true));
    let outcomes = db.apply(&batch).await.expect("the batch commits");
    db.close().await;
    outcomes
}

both_backends!(a_batch_of_every_outcome, |backend| async move {
    let app = spawn_app(backend).await;
    let t = now_ms() - 60_000;
    let (a, b, c, d, e) = (user_id(), user_id(), user_id(), user_id(), user_id());
    let earlier = svix_id();
    // Before: B and C exist, D is deleted, E was delivered once under `earlier`.
    let before = [
        webhook(user(&b, t, "B0"), &svix_id()),
        webhook(user(&c, t, "C0"), &svix_id()),
        webhook(user(&d, t, "D0"), &svix_id()),
        webhook(user(&e, t, "E0"), &earlier),
    ];
    apply(&app, &before).await;
    let delete = Change::Delete {
        kind: clerk_sync::store::Kind::User,
        clerk_id: d.clone(),
        deleted_at_ms: t + 1,
        via: Source::Webhook,
        hard: false,
        delivery: None,
        pruned_by: None,
    };
    apply(&app, &[delete]).await;

    let (new_svix, stale_svix, dead_svix) = (svix_id(), svix_id(), svix_id());
    let batch = [
        webhook(user(&a, t, "A1"), &svix_id()),
        webhook(user(&b, t + 5, "B1"), &new_svix),
        webhook(user(&c, t, "C-same"), &stale_svix),
        webhook(user(&d, t + 5, "D1"), &dead_svix),
        webhook(user(&e, t + 5, "E-again"), &earlier),
    ];
    let outcomes = apply(&app, &batch).await;
    assert_eq!(
        outcomes,
        vec![
            Outcome::Created,
            Outcome::Updated,
            Outcome::Stale,
            Outcome::Tombstoned,
            Outcome::Duplicate("applied".into()),
        ],
        "{backend:?}"
    );
    for (svix, recorded) in [
        (&new_svix, "applied"),
        (&stale_svix, "stale"),
        (&dead_svix, "tombstoned"),
        (&earlier, "applied"),
    ] {
        assert_eq!(
            app.db.delivery(svix).await.expect("recorded").outcome,
            recorded,
            "{svix}"
        );
    }
    let names: Vec<Option<String>> = app
        .db
        .strings(&format!(
            "SELECT first_name FROM users WHERE clerk_id IN ('{a}', '{b}', '{c}', '{e}') ORDER BY first_name"
        ))
        .await;
    assert_eq!(names, ["A1", "B1", "C0", "E0"].map(|n| Some(n.to_owned())).to_vec());
    let feed: Vec<Option<String>> = app
        .db
        .strings("SELECT clerk_id || ' ' || op FROM clerk_sync_changes ORDER BY seq")
        .await;
    let tail: Vec<String> = feed.into_iter().flatten().skip(5).collect();
    let mut tail_sorted = tail.clone();
    tail_sorted.sort();
    let mut expected = vec![format!("{a} created"), format!("{b} updated")];
    expected.sort();
    assert_eq!(tail_sorted, expected, "only what changed goes to the feed: {tail:?}");
});

// The common batch takes the one-round-trip function on Postgres: without it, the webhook fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_common_batch_takes_one_round_trip_on_postgres() {
    let app = spawn_app(Backend::Postgres).await;
    let user = crate::clerk::ClerkUser::new(now_ms());
    app.db
        .execute("ALTER FUNCTION clerk_sync_apply_users RENAME TO clerk_sync_apply_users_off")
        .await;
    let (status, _) = app.deliver(&user.created(), &svix_id()).await;
    assert_eq!(
        status,
        reqwest::StatusCode::INTERNAL_SERVER_ERROR,
        "the function was not called"
    );
    app.db
        .execute("ALTER FUNCTION clerk_sync_apply_users_off RENAME TO clerk_sync_apply_users")
        .await;
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
}

/// A typical Clerk object (2 to 8 KB of `data`) stays in the row uncompressed: Postgres's pglz compression of rows
/// past 2 KB was the largest single cost of a write. Larger objects are still compressed.
#[tokio::test]
async fn rows_up_to_a_page_are_stored_uncompressed() {
    let app = spawn_app(Backend::Postgres).await;
    let t = now_ms();
    let sized = |bytes: usize| {
        let mut u = user(&user_id(), t, "Big");
        // Compressible on purpose: pglz would shrink it if it were tried.
        u.data = Some(serde_json::json!({"id": u.clerk_id, "padding": "abcd".repeat(bytes / 4)}).into());
        u
    };
    let (typical, huge) = (sized(3_000), sized(20_000));
    let batch = [webhook(typical.clone(), &svix_id()), webhook(huge.clone(), &svix_id())];
    assert_eq!(apply(&app, &batch).await, vec![Outcome::Created, Outcome::Created]);
    let compression = |id: &str| {
        format!("SELECT CAST(coalesce(pg_column_compression(data), 'none') AS TEXT) FROM users WHERE clerk_id = '{id}'")
    };
    assert_eq!(
        app.db.string(&compression(&typical.clerk_id)).await.as_deref(),
        Some("none"),
        "a 3 KB object was compressed"
    );
    // pglz, or lz4 where the server's default_toast_compression says so.
    let huge_compression = app.db.string(&compression(&huge.clerk_id)).await;
    assert!(
        matches!(huge_compression.as_deref(), Some("pglz" | "lz4")),
        "a 20 KB object is still compressed: {huge_compression:?}"
    );
}
