//! Supabase row-level security (`supabase.rls`): refused where there is no Supabase, and on a Supabase-like
//! database a signed-in user reads only its own users row, its organizations and their memberships, never
//! `data`, and writes nothing, while the daemon keeps writing. Postgres only: SQLite refuses the setting.

use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

use crate::clerk::{now_ms, svix_id, ClerkUser};
use crate::clerk_orgs::{ClerkMembership, ClerkOrganization};
use crate::helpers::{new_secret, settings_for, spawn_app_on, try_build, Backend, TestApp, TestDatabase, TestDb};

const RLS: (&str, &str) = ("CLERK_SYNC_SUPABASE__RLS", "true");

/// The tables' owner in [`signed_in_users_read_only_their_own_rows`]: not a superuser, as on Supabase, so the
/// daemon's writes and the SECURITY DEFINER function are checked against RLS as they would be there.
const OWNER: &str = "clerk_sync_rls_owner";

/// What Supabase provides and the policies rely on: `auth.jwt()` (as Supabase defines it), roles `anon` and
/// `authenticated`, and Supabase's default privileges (everything on new tables of `public` for both roles),
/// so the tests see what RLS and the column grants take away from them. Roles are cluster-wide and tests run
/// in parallel: a role another test made (or is making) is fine, and none is ever dropped.
const SUPABASE: &str = r#"
CREATE SCHEMA auth;
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;
DO $roles$
BEGIN
    BEGIN CREATE ROLE anon NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
    BEGIN CREATE ROLE authenticated NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
    BEGIN CREATE ROLE clerk_sync_rls_owner LOGIN PASSWORD 'clerk_sync_rls_owner';
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
END
$roles$;
GRANT USAGE ON SCHEMA auth, public TO anon, authenticated;
GRANT USAGE ON SCHEMA auth TO clerk_sync_rls_owner;
GRANT CREATE ON SCHEMA public TO clerk_sync_rls_owner;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated;
ALTER DEFAULT PRIVILEGES FOR ROLE clerk_sync_rls_owner IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated;
"#;

async fn supabase_database() -> TestDatabase {
    let database = TestDatabase::create(Backend::Postgres).await;
    let db = database.connect().await;
    db.execute(SUPABASE).await;
    db.close().await;
    database
}

/// The test database's URL, as [`OWNER`].
fn owner_url(database: &TestDatabase) -> String {
    let mut url = url::Url::parse(database.url()).expect("the test database URL is a URL");
    url.set_username(OWNER).expect("a Postgres URL takes a user name");
    url.set_password(Some(OWNER)).expect("a Postgres URL takes a password");
    url.to_string()
}

pub(crate) fn pg(db: &TestDb) -> &PgPool {
    match db {
        TestDb::Postgres(pool) => pool,
        TestDb::Sqlite(_) => unreachable!("a Postgres test"),
    }
}

/// A transaction as Supabase's Data API opens one for a request: `SET LOCAL ROLE`, then the JWT claims (with
/// `sub` when given) in `request.jwt.claims`.
async fn signed_in(pool: &PgPool, role: &str, sub: Option<&str>) -> Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::raw_sql(&format!("SET LOCAL ROLE {role}"))
        .execute(&mut *tx)
        .await
        .expect("SET LOCAL ROLE");
    let claims = match sub {
        Some(sub) => serde_json::json!({ "sub": sub, "role": role }),
        None => serde_json::json!({ "role": role }),
    };
    sqlx::query("SELECT set_config('request.jwt.claims', $1, true)")
        .bind(claims.to_string())
        .execute(&mut *tx)
        .await
        .expect("set request.jwt.claims");
    tx
}

/// The text column of every row `role` (JWT `sub`) gets from `sql`, sorted.
pub(crate) async fn read_as(
    pool: &PgPool,
    role: &str,
    sub: Option<&str>,
    sql: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = signed_in(pool, role, sub).await;
    let rows = sqlx::query_scalar::<_, String>(sql).fetch_all(&mut *tx).await;
    tx.rollback().await.expect("rollback");
    rows.map(|mut rows| {
        rows.sort();
        rows
    })
}

pub(crate) async fn visible(pool: &PgPool, sub: Option<&str>, sql: &str) -> Vec<String> {
    read_as(pool, "authenticated", sub, sql)
        .await
        .unwrap_or_else(|e| panic!("as authenticated ({sub:?}): {sql}: {e}"))
}

/// Rows affected by `sql` as `authenticated` with JWT `sub`.
async fn write_as(pool: &PgPool, sub: &str, sql: &str) -> Result<u64, sqlx::Error> {
    let mut tx = signed_in(pool, "authenticated", Some(sub)).await;
    let result = sqlx::raw_sql(sql).execute(&mut *tx).await;
    tx.rollback().await.expect("rollback");
    result.map(|r| r.rows_affected())
}

pub(crate) fn is_denied(result: &Result<impl std::fmt::Debug, sqlx::Error>) -> bool {
    let code = match result {
        Err(e) => e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned()),
        Ok(_) => None,
    };
    // insufficient_privilege: a missing grant, or a row the policies do not let through.
    code.as_deref() == Some("42501")
}

pub(crate) const USERS: &str = "SELECT clerk_id FROM users";
pub(crate) const ORGANIZATIONS: &str = "SELECT clerk_id FROM organizations";
pub(crate) const MEMBERSHIPS: &str = "SELECT clerk_id FROM organization_memberships";

/// Alice and Bob share org_a, Carol has org_b and org_d; Dave is deleted, org_c is deleted, and Alice left
/// org_d (her membership is deleted); every row carries private data.
const ARRANGE: &str = r#"
INSERT INTO users (clerk_id, email, created_via, data, deleted_at) VALUES
    ('user_alice', 'alice@example.com', 'webhook', '{"private_metadata": {"ssn": "alice"}}', NULL),
    ('user_bob', 'bob@example.com', 'webhook', '{"private_metadata": {"ssn": "bob"}}', NULL),
    ('user_carol', 'carol@example.com', 'webhook', '{"private_metadata": {"ssn": "carol"}}', NULL),
    ('user_dave', 'dave@example.com', 'webhook', '{"private_metadata": {"ssn": "dave"}}', now());
INSERT INTO organizations (clerk_id, name, created_via, data, deleted_at) VALUES
    ('org_a', 'A', 'webhook', '{"private_metadata": {}}', NULL),
    ('org_b', 'B', 'webhook', '{"private_metadata": {}}', NULL),
    ('org_c', 'C', 'webhook', '{"private_metadata": {}}', now()),
    ('org_d', 'D', 'webhook', '{"private_metadata": {}}', NULL);
INSERT INTO organization_memberships (clerk_id, organization_clerk_id, user_clerk_id, role, created_via, data, deleted_at)
VALUES
    ('orgmem_alice_a', 'org_a', 'user_alice', 'org:admin', 'webhook', '{}', NULL),
    ('orgmem_bob_a', 'org_a', 'user_bob', 'org:member', 'webhook', '{}', NULL),
    ('orgmem_dave_a', 'org_a', 'user_dave', 'org:member', 'webhook', '{}', now()),
    ('orgmem_carol_b', 'org_b', 'user_carol', 'org:admin', 'webhook', '{}', NULL),
    ('orgmem_alice_c', 'org_c', 'user_alice', 'org:member', 'webhook', '{}', NULL),
    ('orgmem_alice_d', 'org_d', 'user_alice', 'org:member', 'webhook', '{}', now()),
    ('orgmem_carol_d', 'org_d', 'user_carol', 'org:admin', 'webhook', '{}', NULL);
"#;

/// A JWT `sub` (or none), and the users, organizations and memberships it sees.
type Sees = (
    Option<&'static str>,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

pub(crate) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The daemon with `supabase.rls` on a Supabase-like database, connected as [`OWNER`].
pub(crate) async fn spawn_rls_app() -> TestApp {
    let database = supabase_database().await;
    let url = owner_url(&database);
    spawn_app_on(database, &[RLS, ("DATABASE_URL", url.as_str())]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_users_read_only_their_own_rows() {
    let app = spawn_rls_app().await;
    app.db.execute(ARRANGE).await;
    let pool = pg(&app.db);

    // (sub, users, organizations, memberships) each sees.
    let cases: [Sees; 5] = [
        (
            Some("user_alice"),
            &["user_alice"],
            &["org_a"],
            // Her own live memberships and the other live memberships of the organizations she is in; not
            // org_c's, which is deleted (its membership row is not, as with a row from before the cascade).
            &["orgmem_alice_a", "orgmem_bob_a"],
        ),
        (
            Some("user_bob"),
            &["user_bob"],
            &["org_a"],
            &["orgmem_alice_a", "orgmem_bob_a"],
        ),
        (
            Some("user_carol"),
            &["user_carol"],
            &["org_b", "org_d"],
            &["orgmem_carol_b", "orgmem_carol_d"],
        ),
        (Some("user_dave"), &[], &[], &[]),
        (None, &[], &[], &[]),
    ];
    for (sub, users, organizations, memberships) in cases {
        assert_eq!(visible(pool, sub, USERS).await, strings(users), "users seen by {sub:?}");
        assert_eq!(
            visible(pool, sub, ORGANIZATIONS).await,
            strings(organizations),
            "organizations seen by {sub:?}"
        );
        assert_eq!(
            visible(pool, sub, MEMBERSHIPS).await,
            strings(memberships),
            "memberships seen by {sub:?}"
        );
    }

    // anon loses what Supabase's default privileges gave it: it reads nothing at all.
    for sql in [USERS, ORGANIZATIONS, MEMBERSHIPS] {
        let result = read_as(pool, "anon", Some("user_alice"), sql).await;
        assert!(is_denied(&result), "anon: {sql}: {result:?}");
    }

    // `data` (private_metadata) is not readable by authenticated; the other columns are.
    for table in ["users", "organizations", "organization_memberships"] {
        let sql = format!("SELECT data::text FROM {table}");
        let result = read_as(pool, "authenticated", Some("user_alice"), &sql).await;
        assert!(is_denied(&result), "{sql} as authenticated: {result:?}");
    }
    let star = read_as(
        pool,
        "authenticated",
        Some("user_alice"),
        "SELECT clerk_id FROM (SELECT * FROM users) u",
    )
    .await;
    assert!(is_denied(&star), "SELECT * includes data: {star:?}");
    assert_eq!(
        visible(pool, Some("user_alice"), "SELECT email FROM users").await,
        strings(&["alice@example.com"])
    );

    // Nothing is writable: every write is refused.
    let before = app.db.strings(SNAPSHOT).await;
    for sql in [
        "UPDATE users SET email = 'mallory@example.com' WHERE clerk_id = 'user_alice'",
        "UPDATE users SET email = 'mallory@example.com'",
        "UPDATE organizations SET name = 'Mallory' WHERE clerk_id = 'org_a'",
        "UPDATE organization_memberships SET role = 'org:admin' WHERE clerk_id = 'orgmem_bob_a'",
        "DELETE FROM users",
        "DELETE FROM organizations",
        "DELETE FROM organization_memberships WHERE user_clerk_id = 'user_alice'",
        "INSERT INTO users (clerk_id, email, created_via) VALUES ('user_mallory', 'm@example.com', 'webhook')",
        "INSERT INTO organizations (clerk_id, name, created_via) VALUES ('org_mallory', 'M', 'webhook')",
        "INSERT INTO organization_memberships (clerk_id, organization_clerk_id, user_clerk_id, created_via) \
         VALUES ('orgmem_mallory', 'org_b', 'user_alice', 'webhook')",
        "TRUNCATE users",
        "TRUNCATE organizations",
        "TRUNCATE organization_memberships",
    ] {
        let result = write_as(pool, "user_alice", sql).await;
        assert!(is_denied(&result), "{sql} as authenticated: {result:?}");
    }
    assert_eq!(
        app.db.strings(SNAPSHOT).await,
        before,
        "a signed-in user changed the synced tables"
    );
    // The daemon's own tables are closed to the Data API's roles: the feed lists every id that changed.
    for table in [
        "clerk_sync_changes",
        "clerk_sync_deliveries",
        "clerk_sync_tombstones",
        "_sqlx_migrations",
    ] {
        for role in ["authenticated", "anon"] {
            let sql = format!("SELECT count(*)::text FROM {table}");
            let result = read_as(pool, role, Some("user_alice"), &sql).await;
            assert!(is_denied(&result), "{role} reads {table}: {result:?}");
        }
    }

    // The daemon (the tables' owner, not a superuser) still writes every kind, and what it writes is seen
    // by the user it belongs to.
    let t = now_ms() - 60_000;
    let user = ClerkUser::new(t);
    let org = ClerkOrganization::new(t);
    let mut membership = ClerkMembership::new(&org, t);
    membership.user_id = user.id.clone();
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    app.expect_outcome(&org.created(), &svix_id(), "applied").await;
    app.expect_outcome(&membership.created(), &svix_id(), "applied").await;
    assert!(app.db.user(&user.id).await.is_some(), "the daemon's write is missing");
    let sub = Some(user.id.as_str());
    assert_eq!(visible(pool, sub, USERS).await, vec![user.id.clone()]);
    assert_eq!(visible(pool, sub, ORGANIZATIONS).await, vec![org.id.clone()]);
    assert_eq!(visible(pool, sub, MEMBERSHIPS).await, vec![membership.id.clone()]);
    assert_eq!(visible(pool, Some("user_alice"), USERS).await, strings(&["user_alice"]));
}

/// Every row of the synced tables, as text.
const SNAPSHOT: &str = "SELECT 'u ' || u::text FROM users u UNION ALL SELECT 'o ' || o::text FROM organizations o \
     UNION ALL SELECT 'm ' || m::text FROM organization_memberships m ORDER BY 1";

/// On the synced tables: the policies, the columns `authenticated` may select, the tables with RLS (forced or
/// not), and every privilege `anon` or `authenticated` holds table-wide (none: `authenticated` selects columns).
const STATE: &str = "\
     SELECT 'policy ' || tablename || ' ' || policyname || ' ' || cmd || ' ' || permissive || ' ' \
         || array_to_string(roles, ',') || ' ' || qual FROM pg_policies \
     WHERE schemaname = current_schema() AND tablename IN ('users', 'organizations', 'organization_memberships') \
     UNION ALL SELECT 'column ' || c.relname || '.' || a.attname FROM pg_attribute a \
         JOIN pg_class c ON c.oid = a.attrelid \
         WHERE c.relnamespace = current_schema()::regnamespace AND a.attnum > 0 AND NOT a.attisdropped \
           AND c.relname IN ('users', 'organizations', 'organization_memberships') \
           AND has_column_privilege('authenticated', c.oid, a.attnum, 'SELECT') \
     UNION ALL SELECT 'rls ' || relname || ' forced=' || relforcerowsecurity FROM pg_class \
         WHERE relnamespace = current_schema()::regnamespace AND relrowsecurity \
     UNION ALL SELECT 'table-wide ' || r || ' ' || c.relname || ' ' || p FROM pg_class c, \
         unnest(ARRAY['anon', 'authenticated']) r, \
         unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p \
         WHERE c.relnamespace = current_schema()::regnamespace \
           AND c.relname IN ('users', 'organizations', 'organization_memberships') \
           AND has_table_privilege(r, c.oid, p)";

/// How many policies, tables with RLS and clerk-sync functions the schema has.
const RLS_OBJECTS: &str = "SELECT (SELECT count(*) FROM pg_policies WHERE schemaname = current_schema()) \
     + (SELECT count(*) FROM pg_class WHERE relnamespace = current_schema()::regnamespace AND relrowsecurity) \
     + (SELECT count(*) FROM pg_proc \
        WHERE pronamespace = current_schema()::regnamespace AND proname LIKE 'clerk\\_sync\\_%' \
          AND proname NOT IN ('clerk_sync_apply_users', 'clerk_sync_feed_head'))";

/// Every privilege on the synced tables held by a role other than `anon` and `authenticated`.
const OTHERS: &str = "SELECT c.relname || ' ' || a.grantee::regrole::text || ' ' || a.privilege_type \
     FROM pg_class c, aclexplode(c.relacl) a \
     WHERE c.relnamespace = current_schema()::regnamespace \
       AND a.grantee NOT IN ('anon'::regrole, 'authenticated'::regrole) \
       AND c.relname IN ('users', 'organizations', 'organization_memberships')";

/// The rows of `sql` (text, none NULL), sorted here rather than by the database's collation.
async fn sorted(db: &TestDb, sql: &str) -> Vec<String> {
    let mut rows: Vec<String> = db.strings(sql).await.into_iter().flatten().collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabling_is_idempotent_and_follows_the_columns() {
    let database = supabase_database().await;
    let db = database.connect().await;
    // An application's own users table with a column of its own.
    db.execute(
        "CREATE TABLE users (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), clerk_id text UNIQUE NOT NULL, plan text);
         INSERT INTO users (clerk_id, plan) VALUES ('user_alice', 'pro');",
    )
    .await;

    let settings = settings_for(&database, &new_secret(), &[]);
    let store = clerk_sync::store::Db::connect(&settings.database)
        .await
        .expect("connect");
    store.migrate(false).await.expect("migrate without RLS");
    assert_eq!(db.int(RLS_OBJECTS).await, 0, "RLS off: nothing of it yet");
    let others = sorted(&db, OTHERS).await;

    store.migrate(true).await.expect("migrate with RLS");
    let state = sorted(&db, STATE).await;
    let expected_columns = sorted(
        &db,
        "SELECT 'column ' || table_name || '.' || column_name FROM information_schema.columns \
         WHERE table_schema = current_schema() AND column_name <> 'data' \
           AND table_name IN ('users', 'organizations', 'organization_memberships')",
    )
    .await;
    let columns: Vec<String> = state.iter().filter(|s| s.starts_with("column ")).cloned().collect();
    assert_eq!(columns, expected_columns, "authenticated selects every column but data");
    assert!(columns.contains(&"column users.plan".to_string()), "{columns:?}");
    let policies: Vec<String> = state
        .iter()
        .filter(|s| s.starts_with("policy "))
        .map(|s| s.split(' ').take(6).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        policies,
        strings(&[
            "policy organization_memberships clerk_sync_organization_memberships_select SELECT PERMISSIVE authenticated",
            "policy organizations clerk_sync_organizations_select SELECT PERMISSIVE authenticated",
            "policy users clerk_sync_users_select SELECT PERMISSIVE authenticated",
        ])
    );
    let rls: Vec<String> = state.iter().filter(|s| s.starts_with("rls ")).cloned().collect();
    assert_eq!(
        rls,
        strings(&[
            "rls _sqlx_migrations forced=false",
            "rls clerk_sync_backfill forced=false",
            "rls clerk_sync_backfill_seen forced=false",
            "rls clerk_sync_changes forced=false",
            "rls clerk_sync_changes_pruned forced=false",
            "rls clerk_sync_deliveries forced=false",
            "rls clerk_sync_forward forced=false",
            "rls clerk_sync_instance forced=false",
            "rls clerk_sync_refusals forced=false",
            "rls clerk_sync_tombstones forced=false",
            "rls organization_memberships forced=false",
            "rls organizations forced=false",
            "rls users forced=false",
        ]),
        "the synced tables get policies; the daemon's own tables none, so the Data API roles see no row"
    );
    assert_eq!(
        db.int(
            "SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a \
             WHERE c.relnamespace = current_schema()::regnamespace \
               AND (c.relname LIKE 'clerk\\_sync\\_%' OR c.relname = '_sqlx_migrations') \
               AND a.grantee IN ('anon'::regrole, 'authenticated'::regrole)"
        )
        .await,
        0,
        "no privilege of anon or authenticated is left on the daemon's own tables"
    );
    assert!(!state.iter().any(|s| s.starts_with("table-wide ")), "{state:?}");
    assert_eq!(
        sorted(&db, OTHERS).await,
        others,
        "other roles' privileges were changed"
    );

    // Again, and twice at once (replicas starting together): the same state.
    store.migrate(true).await.expect("second migrate with RLS");
    let second = clerk_sync::store::Db::connect(&settings.database)
        .await
        .expect("connect");
    let (a, b) = tokio::join!(store.migrate(true), second.migrate(true));
    a.expect("concurrent migrate");
    b.expect("concurrent migrate");
    second.close().await;
    assert_eq!(sorted(&db, STATE).await, state);
    assert_eq!(
        sorted(&db, OTHERS).await,
        others,
        "other roles' privileges were changed"
    );
    assert_eq!(
        db.int("SELECT count(*) FROM pg_proc WHERE proname = 'clerk_sync_member_organizations'")
            .await,
        1
    );

    // A column the application adds later is granted at the next start; `data` still is not.
    db.execute("ALTER TABLE users ADD COLUMN nickname text").await;
    store.close().await;
    db.close().await;
    let app = spawn_app_on(database, &[RLS]).await;
    let mut expected = state.clone();
    expected.push("column users.nickname".into());
    expected.sort();
    assert_eq!(sorted(&app.db, STATE).await, expected);
    assert_eq!(
        visible(pg(&app.db), Some("user_alice"), "SELECT plan FROM users").await,
        strings(&["pro"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_without_supabase_auth_is_refused() {
    let database = TestDatabase::create(Backend::Postgres).await;
    let error = match try_build(&database, &[RLS]).await {
        Ok(_) => panic!("Application::build must refuse supabase.rls without auth.jwt()"),
        Err(e) => e,
    };
    let message = error.to_string();
    for part in [
        "supabase.rls",
        "CLERK_SYNC_SUPABASE__RLS",
        "auth.jwt()",
        "not a Supabase database",
    ] {
        assert!(message.contains(part), "the error must say {part:?}: {message}");
    }
    assert_eq!(error.exit_code(), 78, "a configuration error: {message}");
    let db = database.connect().await;
    assert_eq!(db.int(RLS_OBJECTS).await, 0, "nothing of RLS was made");
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_refuses_rls() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let error = match try_build(&database, &[RLS]).await {
        Ok(_) => panic!("Application::build must refuse supabase.rls on SQLite"),
        Err(e) => e,
    };
    let message = error.to_string();
    assert!(message.contains("Postgres"), "the error must name Postgres: {message}");
    assert!(
        message.contains("supabase.rls"),
        "the error must name the setting: {message}"
    );
    assert_eq!(error.exit_code(), 78, "a configuration error: {message}");
}
