//! Adopting an application's own `users` table (Next.js + Supabase style), and refusing one it cannot adopt.

use crate::clerk::{now_ms, phone_only_user, svix_id, ClerkUser};
use crate::helpers::{spawn_app_on, try_build, Backend, TestDatabase, TestDb};

const ADOPTED: [(&str, &str, &str); 3] = [
    ("user_2aAdoptedAlice0000000000001", "alice@example.com", "Alice Liddell"),
    ("user_2aAdoptedBob00000000000002", "bob@example.com", "Bob Marley"),
    ("user_2aAdoptedCarol000000000003", "carol@example.com", "Carol Danvers"),
];

fn app_table_sql(backend: Backend, unique: bool, extra_column: &str) -> String {
    let unique = if unique { " unique" } else { "" };
    match backend {
        Backend::Postgres => format!(
            "create table users (id uuid primary key default gen_random_uuid(), clerk_id text{unique}, \
             email text not null, name text, credits int not null default 10, \
             created_at timestamptz default now(){extra_column})"
        ),
        Backend::Sqlite => format!(
            "create table users (id text primary key, clerk_id text{unique}, email text not null, name text, \
             credits integer not null default 10, created_at text default current_timestamp{extra_column})"
        ),
    }
}

fn insert_sql(backend: Backend, rows: &[(&str, &str, &str)]) -> String {
    rows.iter()
        .enumerate()
        .map(|(i, (clerk_id, email, name))| match backend {
            Backend::Postgres => format!(
                "insert into users (clerk_id, email, name, credits) values ('{clerk_id}', '{email}', '{name}', {});",
                20 + i
            ),
            Backend::Sqlite => format!(
                "insert into users (id, clerk_id, email, name, credits) \
                 values ('app-{i}', '{clerk_id}', '{email}', '{name}', {});",
                20 + i
            ),
        })
        .collect()
}

/// A database holding an app-made `users` table with `rows`.
async fn app_database(backend: Backend, unique: bool, extra_column: &str, rows: &[(&str, &str, &str)]) -> TestDatabase {
    let database = TestDatabase::create(backend).await;
    let db = database.connect().await;
    db.execute(&app_table_sql(backend, unique, extra_column)).await;
    db.execute(&insert_sql(backend, rows)).await;
    db.close().await;
    database
}

/// Everything about the table a refused adoption must leave alone.
async fn snapshot(db: &TestDb) -> (Vec<String>, Vec<Option<String>>, Vec<Option<String>>) {
    let rows = db
        .strings(
            "SELECT CAST(id AS TEXT) || '|' || clerk_id || '|' || email || '|' || name || '|' || CAST(credits AS TEXT) \
             FROM users ORDER BY clerk_id, email",
        )
        .await;
    let tables = db
        .strings(match db {
            // sqlx's own bookkeeping table may be created before the migration fails; nothing else may.
            TestDb::Postgres(_) => {
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' ORDER BY 1"
            }
            TestDb::Sqlite(_) => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> '_sqlx_migrations' ORDER BY 1"
            }
        })
        .await;
    (db.users_columns().await, rows, tables)
}

both_backends!(
    existing_table_is_adopted_with_its_rows_and_columns,
    |backend| async move {
        let database = app_database(backend, true, "", &ADOPTED).await;
        let app = spawn_app_on(database, &[]).await;

        assert_eq!(app.db.count_all_users().await, 3, "adoption must keep every row");
        for (i, (clerk_id, email, name)) in ADOPTED.iter().enumerate() {
            let row = app.db.user(clerk_id).await.expect("adopted row missing");
            assert_eq!(row.created_via, "adopted", "{row:?}");
            assert_eq!(row.email.as_deref(), Some(*email));
            assert_eq!(row.name.as_deref(), Some(*name));
            assert_eq!(row.deleted_at, None);
            let credits = app
                .db
                .string(&format!(
                    "SELECT CAST(credits AS TEXT) FROM users WHERE clerk_id = '{clerk_id}'"
                ))
                .await;
            assert_eq!(
                credits,
                Some((20 + i).to_string()),
                "the app's credits column must survive"
            );
        }

        // A webhook for an adopted user updates it in place.
        let (clerk_id, _, _) = ADOPTED[0];
        let t = now_ms();
        let mut user = ClerkUser::new(t).with_primary_email_second("alice@wonderland.example", "alice@example.com");
        user.id = clerk_id.to_string();
        user.first_name = Some("Alice".into());
        user.last_name = Some("Kingsleigh".into());
        app.expect_outcome(&user.updated(), &svix_id(), "applied").await;
        let row = app.db.user(clerk_id).await.expect("adopted row vanished");
        assert_eq!(row.created_via, "adopted", "an update must not rewrite created_via");
        assert_eq!(row.updated_via.as_deref(), Some("webhook"));
        assert_eq!(row.email.as_deref(), Some("alice@wonderland.example"));
        assert_eq!(row.name.as_deref(), Some("Alice Kingsleigh"));
        assert_eq!(row.clerk_updated_at, Some(t));
        let credits_sql = format!("SELECT CAST(credits AS TEXT) FROM users WHERE clerk_id = '{clerk_id}'");
        assert_eq!(app.db.string(&credits_sql).await.as_deref(), Some("20"));
        assert_eq!(app.db.count_users(clerk_id).await, 1);

        // A phone-only Clerk user has no email: the app's NOT NULL email must not stop it.
        let phone_only = phone_only_user(t);
        app.expect_outcome(&phone_only.created(), &svix_id(), "applied").await;
        let row = app.db.user(&phone_only.id).await.expect("phone-only user not stored");
        assert_eq!(row.email, None);
        assert_eq!(row.created_via, "webhook");
        assert!(
            row.id.as_deref().is_some_and(|id| !id.is_empty()),
            "a new row needs an id: {row:?}"
        );
        let credits_sql = format!(
            "SELECT CAST(credits AS TEXT) FROM users WHERE clerk_id = '{}'",
            phone_only.id
        );
        assert_eq!(
            app.db.string(&credits_sql).await.as_deref(),
            Some("10"),
            "the app's default applies"
        );

        // Deleting an adopted user works like any other.
        let (bob, _, _) = ADOPTED[1];
        let mut bob_user = ClerkUser::new(t);
        bob_user.id = bob.to_string();
        app.expect_outcome(&bob_user.deleted(t + 1), &svix_id(), "applied")
            .await;
        assert!(app.db.user(bob).await.is_some_and(|r| r.deleted_at.is_some()));
        assert_eq!(app.db.count_all_users().await, 4);
    }
);

both_backends!(adoption_is_idempotent_across_restarts, |backend| async move {
    let database = app_database(backend, true, "", &ADOPTED).await;
    let app = spawn_app_on(database, &[]).await;
    let app = app.restart().await;
    assert_eq!(app.db.count_all_users().await, 3);
    for (clerk_id, _, _) in ADOPTED {
        assert_eq!(
            app.db.user(clerk_id).await.map(|r| r.created_via).as_deref(),
            Some("adopted")
        );
    }
});

both_backends!(duplicate_clerk_ids_refuse_adoption, |backend| async move {
    let rows = [
        ADOPTED[0],
        ADOPTED[1],
        (ADOPTED[0].0, "alice.other@example.com", "Alice Again"),
    ];
    let database = app_database(backend, false, "", &rows).await;
    let db = database.connect().await;
    let before = snapshot(&db).await;

    let error = match try_build(&database, &[]).await {
        Ok(_) => panic!("Application::build must refuse a users table with duplicate clerk_id values"),
        Err(e) => e,
    };
    let message = error.to_string();
    assert!(message.contains("clerk_id"), "the error must name clerk_id: {message}");
    let mentions_duplicates = message.to_lowercase().contains("duplicate");
    assert!(mentions_duplicates, "the error must mention duplicates: {message}");
    assert_eq!(snapshot(&db).await, before, "a refused adoption changed the database");
    assert_eq!(
        error.exit_code(),
        78,
        "an unadoptable table is a configuration error: {message}"
    );
});

both_backends!(incompatible_column_type_refuses_adoption, |backend| async move {
    let database = app_database(backend, true, ", clerk_updated_at text", &ADOPTED[..2]).await;
    let db = database.connect().await;
    let before = snapshot(&db).await;

    let error = match try_build(&database, &[]).await {
        Ok(_) => panic!("Application::build must refuse users.clerk_updated_at of type text"),
        Err(e) => e,
    };
    let message = error.to_string();
    let names_column = message.contains("clerk_updated_at");
    assert!(names_column, "the error must name the column: {message}");
    assert_eq!(snapshot(&db).await, before, "a refused adoption changed the database");
    assert_eq!(
        error.exit_code(),
        78,
        "an unadoptable table is a configuration error: {message}"
    );
});
