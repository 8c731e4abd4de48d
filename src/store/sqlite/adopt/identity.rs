//! The identity model's columns on SQLite: the full profile on `users`, and application-made `organizations` or
//! `organization_memberships` tables. SQLite cannot `ADD COLUMN IF NOT EXISTS`, so this runs in Rust, before
//! and after the migrations (a table the first migration just made lacks the profile's columns).

use sqlx::SqlitePool;

use super::{compatible, Kind, BOOKKEEPING};
use crate::store::StoreError;

/// The full profile's columns (second migration), added to `users` around the migrations whether the table is
/// the daemon's own or adopted: SQLite cannot `ADD COLUMN IF NOT EXISTS`.
const PROFILE_COLUMNS: &[(&str, Kind, &str)] = &[
    ("phone_number", Kind::Text, "TEXT"),
    ("external_id", Kind::Text, "TEXT"),
    ("public_metadata", Kind::Json, "TEXT"),
    ("banned", Kind::Boolean, "INTEGER"),
    ("last_sign_in_at", Kind::Timestamp, "TEXT"),
    ("clerk_created_at", Kind::Timestamp, "TEXT"),
    ("data", Kind::Json, "TEXT"),
];

/// An `organizations` table gets these columns (and the bookkeeping ones) when they are missing: an application's,
/// and the daemon's own for the columns added after the identity migration made it.
const ORGANIZATION_COLUMNS: &[(&str, Kind, &str)] = &[
    ("clerk_id", Kind::Text, "TEXT"),
    ("name", Kind::Text, "TEXT"),
    ("slug", Kind::Text, "TEXT"),
    ("image_url", Kind::Text, "TEXT"),
    ("public_metadata", Kind::Json, "TEXT"),
    ("members_count", Kind::Integer, "INTEGER"),
    ("clerk_created_at", Kind::Timestamp, "TEXT"),
    ("data", Kind::Json, "TEXT"),
    // Whether the row was last written from a membership event's copy (migration 20261128000005): added here,
    // not by that migration, to the daemon's table and an application's alike, and kept when it exists.
    ("embedded", Kind::Boolean, "INTEGER NOT NULL DEFAULT 0"),
];

const MEMBERSHIP_COLUMNS: &[(&str, Kind, &str)] = &[
    ("clerk_id", Kind::Text, "TEXT"),
    ("organization_clerk_id", Kind::Text, "TEXT"),
    ("user_clerk_id", Kind::Text, "TEXT"),
    ("role", Kind::Text, "TEXT"),
    ("clerk_created_at", Kind::Timestamp, "TEXT"),
    ("data", Kind::Json, "TEXT"),
];

/// Adds the columns of `columns` that `table` lacks, after checking the types of those it has; nothing when the
/// table does not exist. Idempotent: it runs before and after the migrations (see [`adopt_identity`]).
/// `preexisting`: the table was there before this run's migrations (the application's, or an earlier release's),
/// so adding columns to it is worth telling the operator; a table the migrations just made is only completed.
async fn add_missing_columns(
    pool: &SqlitePool,
    table: &str,
    columns: &[(&str, Kind, &str)],
    preexisting: bool,
) -> Result<Vec<String>, StoreError> {
    let existing: Vec<(String, String)> = sqlx::query_as("SELECT name, type FROM pragma_table_info(?1)")
        .bind(table)
        .fetch_all(pool)
        .await?;
    if existing.is_empty() {
        return Ok(Vec::new());
    }
    let declared = |name: &str| existing.iter().find(|c| c.0 == name).map(|c| c.1.as_str());
    for (name, kind, _) in columns {
        if let Some(t) = declared(name) {
            if !compatible(*kind, t) {
                return Err(StoreError::Adopt(format!(
                    "clerk-sync cannot adopt table \"{table}\": column \"{name}\" has type {t}, which cannot hold \
                     what clerk-sync writes there; change or rename that column, then run clerk-sync migrate again"
                )));
            }
        }
    }
    let mut tx = pool.begin().await?;
    let mut added = Vec::new();
    for (name, _, definition) in columns {
        if declared(name).is_none() {
            // Names and definitions are this module's constants.
            sqlx::query(&format!("ALTER TABLE {table} ADD COLUMN {name} {definition}"))
                .execute(&mut *tx)
                .await?;
            added.push((*name).to_owned());
        }
    }
    tx.commit().await?;
    if !added.is_empty() && preexisting {
        tracing::info!(table, added = ?added, "added clerk-sync's columns");
    } else if !added.is_empty() {
        tracing::debug!(table, added = ?added, "completed the columns of a table the migrations created");
    }
    Ok(added)
}

/// The tables this module completes: `users`, `organizations`, `organization_memberships`.
const TABLES: [&str; 3] = ["users", "organizations", "organization_memberships"];

/// Which of [`TABLES`] exist now: taken before the migrations, it tells the tables they will create from the ones
/// that were already there.
pub(in crate::store::sqlite) async fn existing_tables(pool: &SqlitePool) -> Result<Vec<String>, StoreError> {
    let mut existing = Vec::new();
    for table in TABLES {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)")
                .bind(table)
                .fetch_one(pool)
                .await?;
        if exists {
            existing.push(table.to_owned());
        }
    }
    Ok(existing)
}

/// The identity model's columns: the full profile on `users`, and an application-made `organizations` or
/// `organization_memberships` table made fit before the migration's `CREATE TABLE IF NOT EXISTS` leaves it alone.
/// `preexisting`: the tables that existed before this run's migrations ([`existing_tables`]).
pub(in crate::store::sqlite) async fn adopt_identity(
    pool: &SqlitePool,
    preexisting: &[String],
) -> Result<(), StoreError> {
    let was_there = |table: &str| preexisting.iter().any(|t| t == table);
    add_missing_columns(pool, "users", PROFILE_COLUMNS, was_there("users")).await?;
    for (table, columns) in [
        ("organizations", ORGANIZATION_COLUMNS),
        ("organization_memberships", MEMBERSHIP_COLUMNS),
    ] {
        let all: Vec<(&str, Kind, &str)> = columns.iter().copied().chain(BOOKKEEPING).collect();
        let added = add_missing_columns(pool, table, &all, was_there(table)).await?;
        if added.iter().any(|c| c == "created_at") {
            sqlx::query(&format!(
                "UPDATE {table} SET created_at = coalesce(created_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), \
                 updated_at = coalesce(updated_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
            ))
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}
