//! What row-level security keeps from the Data API's roles beyond a user's own rows: the memberships of a
//! deleted organization or user (whether the row is soft-deleted or only tombstoned, and whether or not the
//! membership's own delete arrived), and every privilege of `anon` and every write of `authenticated` on the
//! synced tables. Postgres only.

use crate::rls::{is_denied, pg, read_as, spawn_rls_app, strings, visible, MEMBERSHIPS, ORGANIZATIONS, USERS};

/// Alice and Bob share org_a. Erin's users row is soft-deleted and Frank is only tombstoned (his delete
/// committed, his row not yet updated: a row adopted or written by an older version), both with live
/// memberships of org_a. org_x's row is soft-deleted and org_y is only tombstoned; Alice and Bob have live
/// memberships of both.
const ARRANGE: &str = r#"
INSERT INTO users (clerk_id, email, created_via, deleted_at) VALUES
    ('user_alice', 'alice@example.com', 'webhook', NULL),
    ('user_bob', 'bob@example.com', 'webhook', NULL),
    ('user_erin', 'erin@example.com', 'webhook', now()),
    ('user_frank', 'frank@example.com', 'webhook', NULL);
INSERT INTO organizations (clerk_id, name, created_via, deleted_at) VALUES
    ('org_a', 'A', 'webhook', NULL),
    ('org_x', 'X', 'webhook', now()),
    ('org_y', 'Y', 'webhook', NULL);
INSERT INTO clerk_sync_tombstones (clerk_id, deleted_at_ms) VALUES
    ('user_erin', 1700000000000), ('user_frank', 1700000000000),
    ('org_x', 1700000000000), ('org_y', 1700000000000);
INSERT INTO organization_memberships (clerk_id, organization_clerk_id, user_clerk_id, role, created_via)
VALUES
    ('orgmem_alice_a', 'org_a', 'user_alice', 'org:admin', 'webhook'),
    ('orgmem_bob_a', 'org_a', 'user_bob', 'org:member', 'webhook'),
    ('orgmem_erin_a', 'org_a', 'user_erin', 'org:member', 'webhook'),
    ('orgmem_frank_a', 'org_a', 'user_frank', 'org:member', 'webhook'),
    ('orgmem_alice_x', 'org_x', 'user_alice', 'org:member', 'webhook'),
    ('orgmem_bob_x', 'org_x', 'user_bob', 'org:member', 'webhook'),
    ('orgmem_alice_y', 'org_y', 'user_alice', 'org:member', 'webhook'),
    ('orgmem_bob_y', 'org_y', 'user_bob', 'org:member', 'webhook');
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memberships_of_deleted_organizations_and_users_are_hidden() {
    let app = spawn_rls_app().await;
    app.db.execute(ARRANGE).await;
    let pool = pg(&app.db);

    for sub in ["user_alice", "user_bob"] {
        assert_eq!(
            visible(pool, Some(sub), MEMBERSHIPS).await,
            strings(&["orgmem_alice_a", "orgmem_bob_a"]),
            "memberships seen by {sub}: none of a deleted organization or user"
        );
        assert_eq!(
            visible(pool, Some(sub), ORGANIZATIONS).await,
            strings(&["org_a"]),
            "organizations seen by {sub}: a tombstoned one is deleted too"
        );
    }
    for sub in ["user_erin", "user_frank"] {
        assert_eq!(
            visible(pool, Some(sub), MEMBERSHIPS).await,
            Vec::<String>::new(),
            "a deleted user's memberships, to that user: {sub}"
        );
        assert_eq!(
            visible(pool, Some(sub), ORGANIZATIONS).await,
            Vec::<String>::new(),
            "{sub}"
        );
    }
    assert_eq!(visible(pool, Some("user_erin"), USERS).await, Vec::<String>::new());
}

/// The privileges a role holds on the synced tables, table-wide or on any column.
const PRIVILEGES: &str = "SELECT c.relname || ' ' || p FROM pg_class c, \
     unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p \
     WHERE c.relnamespace = current_schema()::regnamespace \
       AND c.relname IN ('users', 'organizations', 'organization_memberships') \
       AND (has_table_privilege($1, c.oid, p) \
            OR (p IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES') AND has_any_column_privilege($1, c.oid, p))) \
     ORDER BY 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anon_holds_nothing_and_authenticated_only_reads_the_synced_tables() {
    let app = spawn_rls_app().await;
    app.db
        .execute(
            "INSERT INTO organization_memberships (clerk_id, organization_clerk_id, user_clerk_id, created_via) \
             VALUES ('orgmem_alice_a', 'org_a', 'user_alice', 'webhook')",
        )
        .await;
    let pool = pg(&app.db);
    let held = |role: &'static str| async move {
        let rows: Vec<String> = sqlx::query_scalar(PRIVILEGES)
            .bind(role)
            .fetch_all(pool)
            .await
            .expect("privileges");
        rows
    };
    assert_eq!(held("anon").await, Vec::<String>::new(), "anon holds nothing");
    assert_eq!(
        held("authenticated").await,
        strings(&[
            "organization_memberships SELECT",
            "organizations SELECT",
            "users SELECT"
        ]),
        "authenticated only selects (its columns)"
    );

    for table in ["users", "organizations", "organization_memberships"] {
        for (role, sql) in [
            ("anon", format!("SELECT clerk_id FROM {table}")),
            ("anon", format!("TRUNCATE {table}")),
            ("anon", format!("DELETE FROM {table}")),
            ("anon", format!("UPDATE {table} SET clerk_id = clerk_id")),
            (
                "anon",
                format!("INSERT INTO {table} (clerk_id, created_via) VALUES ('x', 'webhook')"),
            ),
            ("authenticated", format!("TRUNCATE {table}")),
            ("authenticated", format!("DELETE FROM {table}")),
            ("authenticated", format!("UPDATE {table} SET clerk_id = clerk_id")),
        ] {
            let result = read_as(pool, role, Some("user_alice"), &sql).await;
            assert!(is_denied(&result), "{sql} as {role}: {result:?}");
        }
    }
    assert_eq!(
        app.db.int("SELECT count(*) FROM organization_memberships").await,
        1,
        "nothing was removed"
    );
    // Nor may they call the daemon's functions (an RPC through the Data API): the batch writes users, the
    // feed's head takes a lock every writer waits behind.
    for function in ["clerk_sync_apply_users", "clerk_sync_feed_head"] {
        let exists = format!("SELECT count(*) FROM pg_proc WHERE proname = '{function}'");
        assert_eq!(app.db.int(&exists).await, 1, "{function} exists");
        for role in ["anon", "authenticated"] {
            let may = app
                .db
                .int(&format!(
                    "SELECT count(*) FROM pg_proc p WHERE p.proname = '{function}' \
                     AND has_function_privilege('{role}', p.oid, 'EXECUTE')"
                ))
                .await;
            assert_eq!(may, 0, "{role} may execute {function}");
        }
    }
}
