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

use crate::store::StoreError;

/// The synced tables, all in the current schema (where the migrations made or adopted them).
const TABLES: [&str; 3] = ["users", "organizations", "organization_memberships"];

/// The caller's Clerk user id. Wrapped in a sub-select so Postgres evaluates it once per statement rather than
/// once per row (as Supabase recommends for `auth.*()` calls in policies).
const SUB: &str = "(SELECT auth.jwt() ->> 'sub')";

/// Organizations the caller is a live member of. The policies on organization_memberships cannot ask
/// organization_memberships themselves: that query is filtered by the same policy and Postgres stops with
/// "infinite recursion detected in policy". As SECURITY DEFINER the function runs as its owner, the migrating
/// role, which owns the table and so is not subject to its (unforced) RLS. search_path is pinned, with
/// pg_temp last, so no caller can substitute its own `organization_memberships` for the definer to read.
const MEMBER_ORGANIZATIONS: &str = "CREATE OR REPLACE FUNCTION {s}.clerk_sync_member_organizations() \
     RETURNS SETOF text LANGUAGE sql STABLE SECURITY DEFINER SET search_path = {s}, pg_temp AS $fn$ \
     SELECT organization_clerk_id FROM organization_memberships \
     WHERE user_clerk_id = (SELECT auth.jwt() ->> 'sub') AND deleted_at IS NULL $fn$";

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

    ddl(&mut tx, &MEMBER_ORGANIZATIONS.replace("{s}", &s)).await?;
    // Only `authenticated` needs it (Postgres checks EXECUTE on functions in policies as the querying role).
    ddl(
        &mut tx,
        &format!("REVOKE ALL ON FUNCTION {s}.clerk_sync_member_organizations() FROM PUBLIC"),
    )
    .await?;
    ddl(
        &mut tx,
        &format!("GRANT EXECUTE ON FUNCTION {s}.clerk_sync_member_organizations() TO authenticated"),
    )
    .await?;

    let member_of = format!("(SELECT {s}.clerk_sync_member_organizations())");
    let policies = [
        ("users", format!("deleted_at IS NULL AND clerk_id = {SUB}")),
        (
            "organizations",
            format!("deleted_at IS NULL AND clerk_id IN {member_of}"),
        ),
        (
            "organization_memberships",
            format!("deleted_at IS NULL AND (user_clerk_id = {SUB} OR organization_clerk_id IN {member_of})"),
        ),
    ];
    for (table, using) in &policies {
        let policy = format!("clerk_sync_{table}_select");
        ddl(&mut tx, &format!("ALTER TABLE {s}.{table} ENABLE ROW LEVEL SECURITY")).await?;
        ddl(&mut tx, &format!("DROP POLICY IF EXISTS {policy} ON {s}.{table}")).await?;
        // SELECT only: with RLS on and no INSERT/UPDATE/DELETE policy, `authenticated` can write no row.
        ddl(
            &mut tx,
            &format!("CREATE POLICY {policy} ON {s}.{table} AS PERMISSIVE FOR SELECT TO authenticated USING ({using})"),
        )
        .await?;
        grant_columns(&mut tx, &s, table).await?;
    }
    close_internal_tables(&mut tx).await?;
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

/// Lets `authenticated` select every column of `table` but `data` (Clerk's private_metadata). The list is read
/// now, not written down, since an adopted table may carry the application's own columns. The table-wide
/// REVOKE also drops the column grants of an earlier run, so a column since removed or renamed leaves nothing.
/// TRUNCATE, REFERENCES and TRIGGER go too: RLS does not govern them (TRUNCATE empties the table whatever the
/// policies say), and Supabase's default privileges grant them. INSERT, UPDATE and DELETE stay as they are:
/// without a policy for them RLS lets no row through, and the application may add policies of its own.
async fn grant_columns(tx: &mut PgConnection, s: &str, table: &str) -> Result<(), StoreError> {
    let columns: Option<String> = sqlx::query_scalar(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute \
         WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attname <> 'data'",
    )
    .bind(format!("{s}.{table}"))
    .fetch_one(&mut *tx)
    .await?;
    ddl(
        tx,
        &format!("REVOKE SELECT, TRUNCATE, REFERENCES, TRIGGER ON {s}.{table} FROM authenticated"),
    )
    .await?;
    if let Some(columns) = columns {
        ddl(tx, &format!("GRANT SELECT ({columns}) ON {s}.{table} TO authenticated")).await?;
    }
    Ok(())
}

/// The daemon's own tables (deliveries, tombstones, the change feed, backfill and forwarding state, the
/// migrations) are nobody else's to read: Supabase's default privileges would otherwise let the Data API's
/// roles list every Clerk id that ever changed. RLS on with no policy shows them no row, and their privileges
/// go too.
async fn close_internal_tables(tx: &mut PgConnection) -> Result<(), StoreError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(current_schema()) || '.' || quote_ident(relname) FROM pg_class \
         WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r' \
           AND (relname LIKE 'clerk\\_sync\\_%' OR relname = '_sqlx_migrations') ORDER BY relname",
    )
    .fetch_all(&mut *tx)
    .await?;
    let roles: Vec<String> =
        sqlx::query_scalar("SELECT quote_ident(rolname) FROM pg_roles WHERE rolname IN ('anon', 'authenticated')")
            .fetch_all(&mut *tx)
            .await?;
    for table in &tables {
        ddl(tx, &format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")).await?;
        ddl(tx, &format!("REVOKE ALL ON {table} FROM {}", roles.join(", "))).await?;
    }
    Ok(())
}

/// One DDL statement, over the simple protocol: each is run once, so preparing and caching it would only fill
/// the connection's statement cache.
async fn ddl(tx: &mut PgConnection, sql: &str) -> Result<(), StoreError> {
    sqlx::raw_sql(sql).execute(tx).await?;
    Ok(())
}
