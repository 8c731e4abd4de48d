//! Adopting an application-made `users` table in SQLite.
//!
//! SQLite's `ALTER TABLE` cannot be made conditional in plain SQL, so this step runs in Rust before the first
//! migration: it checks the existing columns, refuses (changing nothing) when a column the daemon needs has
//! an incompatible type or `clerk_id` has duplicates or NULLs, and otherwise adds the missing columns in one
//! transaction. Existing rows are marked `created_via = 'adopted'`; no column is dropped or renamed.

use sqlx::SqlitePool;

use crate::store::StoreError;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Integer,
    Timestamp,
}

/// The daemon's columns, their kind, and the definition used to add them to an adopted table.
const COLUMNS: &[(&str, Kind, &str)] = &[
    ("clerk_id", Kind::Text, "TEXT"),
    ("email", Kind::Text, "TEXT"),
    ("first_name", Kind::Text, "TEXT"),
    ("last_name", Kind::Text, "TEXT"),
    ("name", Kind::Text, "TEXT"),
    ("username", Kind::Text, "TEXT"),
    ("image_url", Kind::Text, "TEXT"),
    (
        "created_via",
        Kind::Text,
        "TEXT NOT NULL DEFAULT 'adopted' CHECK (created_via IN ('webhook', 'fallback', 'backfill', 'adopted'))",
    ),
    ("updated_via", Kind::Text, "TEXT"),
    ("clerk_updated_at", Kind::Integer, "INTEGER"),
    ("deleted_at", Kind::Timestamp, "TEXT"),
    // SQLite cannot add a column whose default is an expression; the daemon sets both on every write.
    ("created_at", Kind::Timestamp, "TEXT"),
    ("updated_at", Kind::Timestamp, "TEXT"),
];

/// Whether a declared column type can hold what the daemon writes (SQLite's affinity rules).
fn compatible(kind: Kind, declared: &str) -> bool {
    let t = declared.to_ascii_uppercase();
    let text = t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT");
    match kind {
        Kind::Text => text,
        Kind::Integer => t.contains("INT"),
        Kind::Timestamp => text || t.contains("DATE") || t.contains("TIME"),
    }
}

pub(super) async fn adopt_users_table(pool: &SqlitePool, first_migration: i64) -> Result<(), StoreError> {
    let has_users: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'users')")
            .fetch_one(pool)
            .await?;
    let migrated: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(pool)
    .await?
        && sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = ?1)")
            .bind(first_migration)
            .fetch_one(pool)
            .await?;
    if !has_users || migrated {
        return Ok(());
    }

    let existing: Vec<(String, String)> = sqlx::query_as("SELECT name, type FROM pragma_table_info('users')")
        .fetch_all(pool)
        .await?;
    let declared = |name: &str| existing.iter().find(|(n, _)| n == name).map(|(_, t)| t.as_str());
    for (name, kind, _) in COLUMNS {
        if let Some(t) = declared(name) {
            if !compatible(*kind, t) {
                return Err(StoreError::Adopt(format!(
                    "clerk-sync cannot adopt table \"users\": column \"{name}\" has type {t}, which cannot hold \
                     what clerk-sync writes there; change or rename that column, then run clerk-sync migrate again"
                )));
            }
        }
    }
    if declared("clerk_id").is_some() {
        let (dupes, example): (i64, Option<String>) = sqlx::query_as(
            "SELECT count(*), min(clerk_id) FROM (SELECT clerk_id FROM users WHERE clerk_id IS NOT NULL \
             GROUP BY clerk_id HAVING count(*) > 1)",
        )
        .fetch_one(pool)
        .await?;
        if dupes > 0 {
            return Err(StoreError::Adopt(format!(
                "clerk-sync cannot adopt table \"users\": {dupes} clerk_id values appear more than once (for example \
                 {}), so clerk_id cannot be made unique; merge or remove the duplicate rows, then run clerk-sync \
                 migrate again",
                example.unwrap_or_default()
            )));
        }
        let nulls: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE clerk_id IS NULL")
            .fetch_one(pool)
            .await?;
        if nulls > 0 {
            return Err(StoreError::Adopt(format!(
                "clerk-sync cannot adopt table \"users\": {nulls} rows have no clerk_id; fill or remove them, then \
                 run clerk-sync migrate again"
            )));
        }
    }

    let mut tx = pool.begin().await?;
    let mut added = Vec::new();
    for (name, _, definition) in COLUMNS {
        if declared(name).is_none() {
            sqlx::query(&format!("ALTER TABLE users ADD COLUMN {name} {definition}"))
                .execute(&mut *tx)
                .await?;
            added.push(*name);
        }
    }
    sqlx::query(
        "UPDATE users SET created_at = coalesce(created_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), \
         updated_at = coalesce(updated_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(added = ?added, "adopted the existing users table");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_rules() {
        assert!(compatible(Kind::Text, "varchar(255)"));
        assert!(compatible(Kind::Text, "TEXT"));
        assert!(!compatible(Kind::Text, "INTEGER"));
        assert!(compatible(Kind::Integer, "BIGINT"));
        assert!(!compatible(Kind::Integer, "text"));
        assert!(compatible(Kind::Timestamp, "DATETIME"));
        assert!(!compatible(Kind::Timestamp, "REAL"));
    }
}
