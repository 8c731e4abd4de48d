//! Adoption edge cases: SQL comments in an SQLite `users` definition, a Postgres `users` table that
//! `search_path` finds outside the current schema, and the `organizations.embedded` column added after the
//! identity migration.

use crate::clerk::{now_ms, phone_only_user, svix_id};
use crate::clerk_orgs::{ClerkMembership, ClerkOrganization};
use crate::helpers::{new_secret, settings_for, spawn_app_on, try_build, Backend, TestDatabase};

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

/// `embedded` of the organization `clerk_id` as `yes` or `no`, on either backend.
const EMBEDDED: &str = "SELECT CASE WHEN embedded THEN 'yes' ELSE 'no' END FROM organizations WHERE clerk_id = ";

both_backends!(
    a_database_of_the_previous_version_gets_the_embedded_column,
    |backend| async move {
        let database = TestDatabase::create(backend).await;
        let settings = settings_for(&database, &new_secret(), &[]);
        let store = clerk_sync::store::Db::connect(&settings.database)
            .await
            .expect("connect");
        store.migrate(false).await.expect("migrate");
        // Back to what the previous version left: no column, its migration not applied, a row written.
        let db = database.connect().await;
        db.execute(
            "ALTER TABLE organizations DROP COLUMN embedded; \
             DELETE FROM _sqlx_migrations WHERE version = 20261128000005; \
             INSERT INTO organizations (clerk_id, name, created_via) VALUES ('org_2aPreviousVersion00000001', 'Old', 'webhook');",
        )
        .await;
        store
            .migrate(false)
            .await
            .expect("migrate the previous version's database");
        store.close().await;
        assert_eq!(
            db.string(&format!("{EMBEDDED}'org_2aPreviousVersion00000001'"))
                .await
                .as_deref(),
            Some("no"),
            "a row already there counts as the organization's own"
        );
        db.close().await;
        let app = spawn_app_on(database, &[]).await;
        let org = ClerkOrganization::new(now_ms() - 60_000);
        app.expect_outcome(
            &ClerkMembership::new(&org, org.updated_at).created(),
            &svix_id(),
            "applied",
        )
        .await;
        assert_eq!(
            app.db.string(&format!("{EMBEDDED}'{}'", org.id)).await.as_deref(),
            Some("yes")
        );
    }
);

both_backends!(
    an_organizations_embedded_column_of_another_type_is_refused,
    |backend| async move {
        let database = TestDatabase::create(backend).await;
        let db = database.connect().await;
        db.execute("CREATE TABLE organizations (id text PRIMARY KEY, clerk_id text, embedded text)")
            .await;
        let error = match try_build(&database, &[]).await {
            Ok(_) => panic!("an organizations.embedded of type text must refuse adoption"),
            Err(e) => e,
        };
        let message = error.to_string();
        assert_eq!(error.exit_code(), 78, "{message}");
        assert!(
            message.contains("\"embedded\""),
            "the error names the column: {message}"
        );
        db.close().await;
    }
);
