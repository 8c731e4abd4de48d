//! Webhooks refused for their signature are counted for `clerk-sync doctor` without a database write per request
//! (`src/store/refusals.rs`): the count is written at most once a minute (and at shutdown), kept three days, and
//! not lost when a write fails — on both backends.

use std::time::Duration;

use clerk_sync::store::refusals::{Refusals, BAD_SIGNATURE};
use clerk_sync::store::Db;

use crate::clerk::{now_ms, now_secs, svix_id, ClerkUser};
use crate::helpers::{new_secret, settings_for, spawn_app, Backend, TestDatabase};

const HOUR: Duration = Duration::from_secs(3600);

async fn refused_within_an_hour(db: &Db) -> i64 {
    let counts = db.refusals_within(HOUR).await.expect("read refusals");
    counts.get(BAD_SIGNATURE).copied().unwrap_or(0)
}

async fn connect(database: &TestDatabase) -> Db {
    let settings = settings_for(database, &new_secret(), &[]);
    let db = Db::connect(&settings.database).await.expect("connect");
    db.migrate(false).await.expect("migrate");
    db
}

both_backends!(refusals_are_written_at_most_once_a_minute, |backend| async move {
    let database = TestDatabase::create(backend).await;
    let db = connect(&database).await;
    let rows = database.connect().await;
    let refusals = Refusals::new();
    assert_eq!(refusals.write(&db, false).await.expect("write"), 0);
    assert_eq!(
        rows.int("SELECT count(*) FROM clerk_sync_refusals").await,
        0,
        "nothing counted, nothing written"
    );

    for _ in 0..100 {
        refusals.bad_signature();
    }
    assert_eq!(
        refusals.write(&db, false).await.expect("write"),
        100,
        "the first write comes at once"
    );
    for _ in 0..5 {
        refusals.bad_signature();
    }
    assert_eq!(
        refusals.write(&db, false).await.expect("write"),
        0,
        "not twice within a minute"
    );
    assert_eq!(refused_within_an_hour(&db).await, 100);
    assert_eq!(
        refusals.write(&db, true).await.expect("write"),
        5,
        "the counts were kept"
    );
    assert_eq!(refused_within_an_hour(&db).await, 105);
    assert!(
        rows.int("SELECT count(*) FROM clerk_sync_refusals").await <= 2,
        "one row per minute"
    );

    // Rows are kept three days, and only the last hour is read.
    let (four_days, two_days) = match backend {
        Backend::Postgres => ("now() - interval '4 days'", "now() - interval '2 days'"),
        Backend::Sqlite => (
            "strftime('%Y-%m-%dT%H:%M:00.000Z', 'now', '-4 days')",
            "strftime('%Y-%m-%dT%H:%M:00.000Z', 'now', '-2 days')",
        ),
    };
    rows.execute(&format!(
        "INSERT INTO clerk_sync_refusals (minute, reason, count) VALUES ({four_days}, 'bad_signature', 7), \
         ({two_days}, 'bad_signature', 11)"
    ))
    .await;
    refusals.bad_signature();
    assert_eq!(refusals.write(&db, true).await.expect("write"), 1);
    assert_eq!(
        refused_within_an_hour(&db).await,
        106,
        "older rows are not the last hour's"
    );
    assert_eq!(
        rows.int("SELECT count(*) FROM clerk_sync_refusals WHERE count IN (7, 11)")
            .await,
        1,
        "the four-day-old row is gone, the two-day-old one kept"
    );
    assert_eq!(
        rows.int("SELECT count(*) FROM clerk_sync_refusals WHERE count = 11")
            .await,
        1
    );

    // A write that fails keeps its counts for the next one.
    db.close().await;
    refusals.bad_signature();
    refusals.bad_signature();
    assert!(refusals.write(&db, true).await.is_err(), "the pool is closed");
    let db = connect(&database).await;
    assert_eq!(refusals.write(&db, true).await.expect("write"), 2);
    assert_eq!(refused_within_an_hour(&db).await, 108);
    db.close().await;
    rows.close().await;
});

both_backends!(a_write_dropped_half_way_keeps_its_counts, |backend| async move {
    // The upkeep's write can be aborted mid-way at shutdown, right before the shutdown's own forced write.
    use sqlx::Connection;
    let database = TestDatabase::create(backend).await;
    let db = connect(&database).await;
    let refusals = Refusals::new();
    for _ in 0..4 {
        refusals.bad_signature();
    }
    // Another session holds the table, so the write waits on it until dropped.
    let holder: Box<dyn std::any::Any> = match backend {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(database.url()).await.expect("connect");
            sqlx::raw_sql("BEGIN; LOCK TABLE clerk_sync_refusals IN EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .expect("lock");
            Box::new(conn)
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(database.url()).await.expect("connect");
            sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut conn).await.expect("lock");
            Box::new(conn)
        }
    };
    let first = tokio::time::timeout(Duration::from_millis(300), refusals.write(&db, true)).await;
    match (backend, first) {
        // Dropped while it waited on the lock: the case this test is for. Postgres always waits.
        (_, Err(_elapsed)) => {}
        // SQLite may refuse at once instead of waiting (a deferred write meeting another writer in WAL mode):
        // then the failed write kept the counts, which must hold too.
        (Backend::Sqlite, Ok(Err(_))) => {}
        (_, other) => panic!("the write should have waited on the lock: {other:?}"),
    }
    drop(holder);
    assert_eq!(
        refusals.write(&db, true).await.expect("write"),
        4,
        "the counts were kept"
    );
    assert_eq!(refused_within_an_hour(&db).await, 4);
    db.close().await;
});

both_backends!(the_daemon_counts_refused_signatures, |backend| async move {
    let mut app = spawn_app(backend).await;
    let body = ClerkUser::new(now_ms()).created();
    for _ in 0..3 {
        let response = app
            .post_webhook_raw(
                body.as_bytes().to_vec(),
                &[
                    ("svix-id", svix_id()),
                    ("svix-timestamp", now_secs().to_string()),
                    ("svix-signature", "v1,bm90IHRoZSBzaWduYXR1cmU=".to_string()),
                ],
            )
            .await;
        assert_eq!(response.status().as_u16(), 401);
    }
    let db = app.connect_db().await;
    // Written by the upkeep within a minute, or at shutdown at the latest.
    app.stop().await;
    assert_eq!(refused_within_an_hour(&db).await, 3);
    assert_eq!(
        app.db.count_deliveries().await,
        0,
        "a refused delivery is not recorded as one"
    );
    db.close().await;
});
