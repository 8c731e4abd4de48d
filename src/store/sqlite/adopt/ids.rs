//! Time-ordered ids for the rows the daemon inserts (SQLite).
//!
//! The synced tables' `id` was a random version-4 UUID: its primary-key index then takes each new row on a random
//! page, so once the index outgrows the page cache every insert reads a page from the file and every commit
//! writes one page of the log per row. A backfill of 1,000,000 users spent two thirds of its time there (64 s
//! against 25 s with ordered ids, with a `serve` writing meanwhile). A version-7 UUID starts with the time in
//! milliseconds: new rows go to the index's last pages, which stay cached, and a page of 500 users dirties a
//! handful of index pages instead of 500.
//!
//! Tables made by the migrations (and `id` defaults an adoption gave) carry the random expression, which cannot
//! be changed in a migration: SQLite cannot alter a column's default, and a table rebuild is no step to take on
//! a table that may hold an application's data. So this step, run after the migrations, rewrites that default —
//! and only that exact one; an application's own default is left as it is — with SQLite's documented
//! `writable_schema` procedure, as the adoption does. Stored ids do not change; ids stay UUIDs in their text form.

use sqlx::SqlitePool;

use super::{edit_column, strip_comments, write_schema};
use crate::store::StoreError;

/// A random version-4 UUID in SQLite SQL: the migrations' `id` default, which this step replaces.
pub(super) const UUID_V4: &str = "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) \
     || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))";

/// A version-7 UUID (RFC 9562) in SQLite SQL: 48 bits of Unix time in milliseconds, the version, 74 random bits
/// with the variant. `'now'` is one instant for a whole statement, so the rows of one insert share the time and
/// sort among themselves by their random bits, after every row inserted before.
pub(super) const UUID_V7: &str = "lower(printf('%08x-%04x-7%s-%s%s-%s', \
     CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) >> 16, \
     CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) & 65535, \
     substr(hex(randomblob(2)), 2), substr('89ab', 1 + (abs(random()) % 4), 1), substr(hex(randomblob(2)), 2), \
     hex(randomblob(6))))";

/// The tables whose `id` this step may reorder.
const TABLES: &[&str] = &["users", "organizations", "organization_memberships"];

/// `sql` without any whitespace: the migrations spread the expression over several lines.
fn squeezed(sql: &str) -> String {
    sql.split_whitespace().collect()
}

/// `create` with `column`'s default changed from [`UUID_V4`] to [`UUID_V7`] when the default is exactly that
/// expression and ends the column's definition (as the migrations and the adoption write it); `None` otherwise.
fn ordered_default(create: &str, column: &str) -> Option<String> {
    let random = squeezed(&format!("DEFAULT ({UUID_V4})"));
    edit_column(create, column, |definition| {
        let words: Vec<&str> = definition.split_whitespace().collect();
        let at = words.iter().position(|w| w.eq_ignore_ascii_case("default"))?;
        (squeezed(&words[at..].join(" ")).eq_ignore_ascii_case(&random))
            .then(|| format!(" {} DEFAULT ({UUID_V7})", words[..at].join(" ")))
    })
}

/// Gives the synced tables whose `id` default is the random expression the time-ordered one, in one transaction.
pub(in crate::store::sqlite) async fn order_ids(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut edits = Vec::new();
    for table in TABLES {
        let sql: Option<String> =
            sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1")
                .bind(table)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(edited) = sql.and_then(|sql| ordered_default(&strip_comments(&sql), "id")) {
            edits.push((*table, edited));
        }
    }
    if edits.is_empty() {
        return Ok(());
    }
    write_schema(&mut tx, &edits).await?;
    tx.commit().await?;
    let tables: Vec<&str> = edits.iter().map(|(t, _)| *t).collect();
    tracing::info!(tables = ?tables, "new rows get time-ordered ids (version-7 UUIDs)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first `CREATE TABLE` of a migration file, as SQLite stores it.
    fn created(migration: &str, table: &str) -> String {
        let start = migration
            .find(&format!("CREATE TABLE IF NOT EXISTS {table} ("))
            .expect("table in migration");
        let end = start + migration[start..].find(");").expect("end of table") + 1;
        migration[start..end].to_string()
    }

    #[test]
    fn the_migrations_random_defaults_are_found_and_only_they_change() {
        let users = created(
            include_str!("../../../../migrations/sqlite/20261127000001_users.sql"),
            "users",
        );
        let identity = include_str!("../../../../migrations/sqlite/20261128000002_identity.sql");
        for create in [
            users,
            created(identity, "organizations"),
            created(identity, "organization_memberships"),
        ] {
            let edited = ordered_default(&strip_comments(&create), "id").expect("the migration's default");
            assert!(edited.contains(UUID_V7), "{edited}");
            assert!(!squeezed(&edited).contains(&squeezed(UUID_V4)), "{edited}");
            // Every other column as it was.
            let rest = |sql: &str| squeezed(&sql[sql.find("clerk_id").expect("clerk_id")..]);
            assert_eq!(rest(&edited), rest(&create));
        }
        for app in [
            "CREATE TABLE users (id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))), clerk_id TEXT)",
            "CREATE TABLE users (id INTEGER PRIMARY KEY, clerk_id TEXT)",
            "CREATE TABLE users (id TEXT PRIMARY KEY, clerk_id TEXT)",
        ] {
            assert_eq!(ordered_default(app, "id"), None, "{app}");
        }
    }
}
