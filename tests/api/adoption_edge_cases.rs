//! Adoption edge cases: SQL comments in an SQLite `users` definition, and a Postgres `users` table that
//! `search_path` finds outside the current schema.

use crate::clerk::{now_ms, phone_only_user, svix_id};
use crate::helpers::{spawn_app_on, try_build, Backend, TestDatabase};

/// App-made tables whose definitions carry comments: after the closing parenthesis, on the last column's line
/// (which the rewrite once joined with the closing parenthesis), with a quote or a comma inside.
const COMMENTED_TABLES: [&str; 3] = [
    "CREATE TABLE users (id TEXT PRIMARY KEY, clerk_id TEXT, email TEXT NOT NULL) -- app table",
    "CREATE TABLE users (\n  id TEXT PRIMARY KEY,\n  clerk_id TEXT UNIQUE,\n  email TEXT NOT NULL -- primary email\n)",
    "CREATE TABLE users (\n  id TEXT PRIMARY KEY, -- the app's own id, a uuid\n  clerk_id TEXT, /* from Clerk, (unique) */\n  \
     email TEXT NOT NULL\n)",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_definitions_with_comments_are_adopted() {
    for ddl in COMMENTED_TABLES {
        let database = TestDatabase::create(Backend::Sqlite).await;
        let db = database.connect().await;
        db.execute(ddl).await;
        db.execute(
            "INSERT INTO users (id, clerk_id, email) VALUES ('app-1', 'user_2aCommented000000000001', 'a@example.com')",
        )
        .await;
        db.close().await;
        let app = spawn_app_on(database, &[]).await;
        let adopted = app.db.user("user_2aCommented000000000001").await;
        assert_eq!(adopted.map(|u| u.created_via), Some("adopted".to_string()), "{ddl}");
        // email was NOT NULL: a phone-only user is stored only if adoption made it nullable.
        let user = phone_only_user(now_ms());
        app.expect_outcome(&user.created(), &svix_id(), "applied").await;
        let row = app.db.user(&user.id).await.expect("the phone-only user was not stored");
        assert_eq!(row.email, None, "{ddl}");
        let id = app
            .db
            .string(&format!("SELECT id FROM users WHERE clerk_id = '{}'", user.id))
            .await;
        assert!(
            id.is_some_and(|id| id.len() == 36),
            "rows the daemon inserts get a uuid id: {ddl}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_users_outside_the_current_schema_is_refused() {
    let database = TestDatabase::create(Backend::Postgres).await;
    let db = database.connect().await;
    // `app` exists and comes first, so it is current_schema(); `users` only exists in `public`.
    db.execute(
        "CREATE SCHEMA app; \
         CREATE TABLE public.users (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), clerk_id text, \
                                    clerk_updated_at text); \
         INSERT INTO public.users (clerk_id) VALUES (NULL); \
         DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = app, public', current_database()); END $$;",
    )
    .await;
    let error = match try_build(&database, &[]).await {
        Ok(_) => panic!("Application::build must refuse a users table outside the current schema"),
        Err(e) => e,
    };
    let message = error.to_string();
    assert_eq!(error.exit_code(), 78, "{message}");
    assert!(
        message.contains("public.users"),
        "the error must name the table: {message}"
    );
    assert!(
        message.contains("search_path"),
        "the error must say what to change: {message}"
    );
    let columns = db
        .int("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'users'")
        .await;
    assert_eq!(columns, 3, "a refused adoption must change nothing");
    db.close().await;
}
