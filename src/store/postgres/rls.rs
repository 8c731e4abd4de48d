//! Supabase row-level security (`supabase.rls`, Postgres only), applied by `migrate` after the migrations.
//!
//! Supabase serves the database to browsers through its Data API as role `authenticated`, with the caller's
//! JWT in `auth.jwt()`. Without RLS any signed-in user could read every synced user, organization and
//! membership, and the `data` column, which holds Clerk's private_metadata. So this enables RLS with read-only
//! policies keyed on the JWT's `sub` (the Clerk user id that Supabase's Clerk integration passes) and takes
//! `data` out of what that role may select.
//!
//! RLS is enabled, not forced: the daemon connects as the tables' owner and must keep writing every row.
//! This runs on every `migrate` and `serve` start, so each step is idempotent (policies are dropped and made
//! again, grants recomputed from the columns there are now), all in one transaction so that a failure leaves
//! the previous state whole.

use sqlx::{PgConnection, PgPool};

use crate::store::sql::not_tombstoned;
use crate::store::StoreError;

/// The synced tables, all in the current schema (where the migrations made or adopted them).
const TABLES: [&str; 3] = ["users", "organizations", "organization_memberships"];

/// The caller's Clerk user id. Wrapped in a sub-select so Postgres evaluates it once per statement rather than
/// once per row (as Supabase recommends for `auth.*()` calls in policies).
const SUB: &str = "(SELECT auth.jwt() ->> 'sub')";

/// Whether the membership `m` belongs to a live organization and a live user: neither is tombstoned, nor is its
/// row soft-deleted. A membership outlives its parent in the table when it was written before deletes cascaded
/// to memberships, by an application, or by a write racing the parent's delete; the API hides it, so must RLS.
/// The tombstone check is the write path's.
const LIVE_PARENTS: &str = concat!(
    not_tombstoned!("m.organization_clerk_id, m.user_clerk_id"),
    " AND NOT EXISTS (SELECT 1 FROM organizations o \
         WHERE o.clerk_id = m.organization_clerk_id AND o.deleted_at IS NOT NULL) \
     AND NOT EXISTS (SELECT 1 FROM users u WHERE u.clerk_id = m.user_clerk_id AND u.deleted_at IS NOT NULL)"
);

/// The policies need two sets that `authenticated` may not compute itself, so SECURITY DEFINER functions do:
/// the policies on organization_memberships cannot ask organization_memberships (that query is filtered by the
/// same policy and Postgres stops with "infinite recursion detected in policy"), and clerk_sync_tombstones is
/// closed to the role. As SECURITY DEFINER a function runs as its owner, the migrating role, which owns the
/// tables and so is not subject to their (unforced) RLS. search_path is pinned, with pg_temp last, so no caller
/// can substitute its own tables for the definer to read. Each is called once per statement (a sub-select in
/// the policy), not once per row.
///
/// `clerk_sync_member_organizations()`: the organizations the caller is a live member of (its membership, the
/// organization and the caller all live). `clerk_sync_visible_memberships()`: the live memberships of live
/// parents that are the caller's or in those organizations.
const FUNCTIONS: [(&str, &str); 2] = [
    (
        "clerk_sync_member_organizations",
        "SELECT m.organization_clerk_id FROM organization_memberships m \
         WHERE m.user_clerk_id = (SELECT auth.jwt() ->> 'sub') AND m.deleted_at IS NULL AND {live}",
    ),
    (
        "clerk_sync_visible_memberships",
        "SELECT m.clerk_id FROM organization_memberships m \
         WHERE m.deleted_at IS NULL AND {live} AND (m.user_clerk_id = (SELECT auth.jwt() ->> 'sub') \
               OR m.organization_clerk_id IN (SELECT {s}.clerk_sync_member_organizations()))",
    ),
];

pub(in crate::store) async fn enable(pool: &PgPool) -> Result<(), StoreError> {
    check_supabase(pool).await?;

    let mut tx = pool.begin().await?;
    // Replicas starting together would race on CREATE OR REPLACE FUNCTION ("tuple concurrently updated").
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('clerk_sync_rls', 0))")
        .execute(&mut *tx)
        .await?;
    let schema: Option<String> = sqlx::query_scalar("SELECT quote_ident(current_schema())")
        .fetch_one(&mut *tx)
        .await?;
    let Some(s) = schema else {
        return Err(StoreError::Adopt(
            "supabase.rls: no schema of search_path exists, so there are no synced tables to protect".into(),
        ));
    };

    for (name, body) in FUNCTIONS {
        let body = body.replace("{live}", LIVE_PARENTS).replace("{s}", &s);
        ddl(
            &mut tx,
            &format!(
                "CREATE OR REPLACE FUNCTION {s}.{name}() RETURNS SETOF text LANGUAGE sql STABLE SECURITY DEFINER \
                 SET search_path = {s}, pg_temp AS $fn$ {body} $fn$"
            ),
        )
        .await?;
        // Only `authenticated` needs it (Postgres checks EXECUTE on functions in policies as the querying role).
        ddl(&mut tx, &format!("REVOKE ALL ON FUNCTION {s}.{name}() FROM PUBLIC")).await?;
        ddl(
            &mut tx,
            &format!("GRANT EXECUTE ON FUNCTION {s}.{name}() TO authenticated"),
        )
        .await?;
    }

    let roles = data_api_roles(&mut tx).await?;
    let member_of = format!("(SELECT {s}.clerk_sync_member_organizations())");
    let policies = [
        ("users", format!("deleted_at IS NULL AND clerk_id = {SUB}")),
        (
            "organizations",
            format!("deleted_at IS NULL AND clerk_id IN {member_of}"),
        ),
        (
            "organization_memberships",
            format!("deleted_at IS NULL AND clerk_id IN (SELECT {s}.clerk_sync_visible_memberships())"),
        ),
    ];
    for (table, using) in &policies {
        let policy = format!("clerk_sync_{table}_select");
        ddl(&mut tx, &format!("ALTER TABLE {s}.{table} ENABLE ROW LEVEL SECURITY")).await?;
        ddl(&mut tx, &format!("DROP POLICY IF EXISTS {policy} ON {s}.{table}")).await?;
        // SELECT only, and the role holds no write privilege either (`grant_columns`).
        ddl(
            &mut tx,
            &format!("CREATE POLICY {policy} ON {s}.{table} AS PERMISSIVE FOR SELECT TO authenticated USING ({using})"),
        )
        .await?;
        grant_columns(&mut tx, &s, table, &roles).await?;
    }
    close_internal_tables(&mut tx, &roles).await?;
    tx.commit().await?;

    tracing::info!(
        schema = %s,
        tables = ?TABLES,
        "supabase.rls: row-level security enabled; role authenticated may read its own users row, its \
         organizations and their memberships, without the data column"
    );
    Ok(())
}

/// Refuses a database that is not Supabase's: the policies call `auth.jwt()` and name role `authenticated`,
/// and without either nothing would ever be readable (or the policies could not even be created).
async fn check_supabase(pool: &PgPool) -> Result<(), StoreError> {
    let (jwt, role): (bool, bool) = sqlx::query_as(
        "SELECT to_regprocedure('auth.jwt()') IS NOT NULL, \
         EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated')",
    )
    .fetch_one(pool)
    .await?;
    let unset = "unset supabase.rls (CLERK_SYNC_SUPABASE__RLS) to use this database without row-level security";
    if !jwt {
        return Err(StoreError::Adopt(format!(
            "supabase.rls is set, but the database has no auth.jwt() function: it is not a Supabase database (or \
             Supabase's auth schema is missing); {unset}"
        )));
    }
    if !role {
        return Err(StoreError::Adopt(format!(
            "supabase.rls is set, but the database has no role \"authenticated\", which Supabase's Data API uses for \
             signed-in users; {unset}"
        )));
    }
    Ok(())
}

/// Lets `authenticated` select every column of `table` but `data` (Clerk's private_metadata), and nothing else;
/// `anon` gets nothing. The list is read now, not written down, since an adopted table may carry the
/// application's own columns. Supabase's default privileges grant both roles everything, and RLS governs only
/// rows: TRUNCATE empties a table whatever the policies say, REFERENCES and TRIGGER are not theirs to hold, and
/// the synced tables are the daemon's to write (Clerk is the source of truth; a write through the Data API would
/// be overwritten or, worse, believed). So every privilege of both roles is revoked, which also drops the column
/// grants of an earlier run (a column since removed or renamed leaves nothing), and the column SELECT granted
/// again. This runs at every start, so a privilege granted by hand is taken back then.
async fn grant_columns(tx: &mut PgConnection, s: &str, table: &str, roles: &str) -> Result<(), StoreError> {
    let columns: Option<String> = sqlx::query_scalar(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute \
         WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attname <> 'data'",
    )
    .bind(format!("{s}.{table}"))
    .fetch_one(&mut *tx)
    .await?;
    ddl(tx, &format!("REVOKE ALL ON {s}.{table} FROM {roles}")).await?;
    if let Some(columns) = columns {
        ddl(tx, &format!("GRANT SELECT ({columns}) ON {s}.{table} TO authenticated")).await?;
    }
    Ok(())
}

/// The Data API's roles this database has (`authenticated` always: [`check_supabase`]), quoted and joined.
async fn data_api_roles(tx: &mut PgConnection) -> Result<String, StoreError> {
    let roles: Vec<String> =
        sqlx::query_scalar("SELECT quote_ident(rolname) FROM pg_roles WHERE rolname IN ('anon', 'authenticated')")
            .fetch_all(&mut *tx)
            .await?;
    Ok(roles.join(", "))
}

/// The daemon's own tables (deliveries, tombstones, the change feed, backfill and forwarding state, the
/// migrations) are nobody else's to read: Supabase's default privileges would otherwise let the Data API's
/// roles list every Clerk id that ever changed. RLS on with no policy shows them no row, and their privileges
/// go too.
async fn close_internal_tables(tx: &mut PgConnection, roles: &str) -> Result<(), StoreError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(current_schema()) || '.' || quote_ident(relname) FROM pg_class \
         WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r' \
           AND (relname LIKE 'clerk\\_sync\\_%' OR relname = '_sqlx_migrations') ORDER BY relname",
    )
    .fetch_all(&mut *tx)
    .await?;
    for table in &tables {
        ddl(tx, &format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")).await?;
        ddl(tx, &format!("REVOKE ALL ON {table} FROM {roles}")).await?;
    }
    Ok(())
}

/// One DDL statement, over the simple protocol: each is run once, so preparing and caching it would only fill
/// the connection's statement cache.
async fn ddl(tx: &mut PgConnection, sql: &str) -> Result<(), StoreError> {
    sqlx::raw_sql(sql).execute(tx).await?;
    Ok(())
}
