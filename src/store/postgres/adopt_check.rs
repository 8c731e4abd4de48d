//! A check before the first Postgres migration, which cannot be changed (sqlx checksums applied migrations).
//!
//! That migration finds an existing `users` table through `search_path` (`to_regclass('users')`) but inspects
//! its columns in `current_schema()` only. When the two differ (say `search_path = app, public`, schema `app`
//! exists, `users` lives in `public`), none of its checks see the table: an incompatible column type, NULL or
//! duplicate `clerk_id` would fail later and less clearly, and `NOT NULL` would not be dropped from the columns
//! Clerk may leave empty. So adoption is refused, changing nothing, with a message saying what to do.

use sqlx::PgPool;

use crate::store::StoreError;

pub(super) async fn users_in_current_schema(pool: &PgPool, first_migration: i64) -> Result<(), StoreError> {
    let bookkept: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    let migrated = bookkept
        && sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = $1)")
            .bind(first_migration)
            .fetch_one(pool)
            .await?;
    if migrated {
        return Ok(());
    }
    let found: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT n.nspname::text, current_schema()::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass('users')",
    )
    .fetch_optional(pool)
    .await?;
    match found {
        Some((schema, current)) if current.as_deref() != Some(schema.as_str()) => Err(StoreError::Adopt(format!(
            "clerk-sync cannot adopt table \"users\": it is {schema}.users, found through search_path, but clerk-sync \
             creates and checks its tables in the current schema ({}); make {schema} the first existing schema of \
             search_path (ALTER ROLE … SET search_path, or ?options=-c%20search_path%3D{schema} in DATABASE_URL), then \
             run clerk-sync migrate again",
            current.as_deref().unwrap_or("none: no schema of search_path exists")
        ))),
        _ => Ok(()),
    }
}
