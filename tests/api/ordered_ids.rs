//! SQLite: the rows the daemon inserts get time-ordered ids (version-7 UUIDs), so a large table's `id` index grows
//! at its end instead of taking every row on a random page; a table that had the old random default gets the new
//! one and keeps its ids; an application's own default is left alone.

use std::time::Duration;

use crate::clerk::{now_ms, svix_id, ClerkUser};
use crate::helpers::{spawn_app, spawn_app_on, Backend, TestDatabase, TestDb};

/// The random version-4 default the migrations gave `id` before (`src/store/sqlite/adopt/ids.rs`).
const OLD_DEFAULT: &str = "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || \
     substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || \
     substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))";

/// The Unix time in milliseconds a version-7 UUID carries, or `None` when `id` is no version-7 UUID.
fn v7_millis(id: &str) -> Option<i64> {
    let parts: Vec<&str> = id.split('-').collect();
    let shape = parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12];
    let hex = id
        .chars()
        .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c));
    let version = parts.get(2).is_some_and(|p| p.starts_with('7'));
    let variant = parts.get(3).is_some_and(|p| p.starts_with(['8', '9', 'a', 'b']));
    (shape && hex && version && variant)
        .then(|| i64::from_str_radix(&format!("{}{}", parts[0], parts[1]), 16).ok())
        .flatten()
}

async fn id_of(db: &TestDb, clerk_id: &str) -> String {
    db.string(&format!("SELECT id FROM users WHERE clerk_id = '{clerk_id}'"))
        .await
        .expect("the user's row")
}

/// Creates a user by webhook and answers its clerk id.
async fn create_user(app: &crate::helpers::TestApp) -> String {
    let user = ClerkUser::new(now_ms());
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    user.id
}

#[tokio::test]
async fn new_rows_get_time_ordered_ids() {
    let app = spawn_app(Backend::Sqlite).await;
    let before = now_ms();
    let first = create_user(&app).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = create_user(&app).await;
    let after = now_ms();
    let (a, b) = (id_of(&app.db, &first).await, id_of(&app.db, &second).await);
    for id in [&a, &b] {
        let at = v7_millis(id).unwrap_or_else(|| panic!("{id} is not a version-7 UUID"));
        assert!(
            (before - 1_000..=after + 1_000).contains(&at),
            "{id}: {at} not in {before}..{after}"
        );
    }
    assert!(a < b, "the later row's id sorts after the earlier one's: {a} {b}");
}

#[tokio::test]
async fn a_table_with_the_old_random_default_gets_the_ordered_one_and_keeps_its_ids() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let db = database.connect().await;
    db.execute(&format!(
        "CREATE TABLE users (id TEXT PRIMARY KEY NOT NULL DEFAULT ({OLD_DEFAULT}), clerk_id TEXT UNIQUE, email TEXT); \
         INSERT INTO users (clerk_id, email) VALUES ('user_2aOldDefault0000000000001', 'old@example.com');"
    ))
    .await;
    let old = id_of(&db, "user_2aOldDefault0000000000001").await;
    db.close().await;
    assert_eq!(old.as_bytes().get(14), Some(&b'4'), "made with the old default: {old}");

    let app = spawn_app_on(database, &[]).await;
    assert_eq!(
        id_of(&app.db, "user_2aOldDefault0000000000001").await,
        old,
        "stored ids do not change"
    );
    let new = id_of(&app.db, &create_user(&app).await).await;
    assert!(v7_millis(&new).is_some(), "{new} is not a version-7 UUID");
}

#[tokio::test]
async fn an_applications_own_id_default_is_left_alone() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let db = database.connect().await;
    db.execute(
        "CREATE TABLE users (id TEXT PRIMARY KEY NOT NULL DEFAULT ('app_' || lower(hex(randomblob(8)))), \
         clerk_id TEXT UNIQUE, email TEXT)",
    )
    .await;
    db.close().await;

    let app = spawn_app_on(database, &[]).await;
    let id = id_of(&app.db, &create_user(&app).await).await;
    assert!(
        id.starts_with("app_") && id.len() == 20,
        "the application's default made it: {id}"
    );
}
