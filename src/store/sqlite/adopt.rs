//! Adopting an application-made `users` table in SQLite.
//!
//! SQLite's `ALTER TABLE` cannot be made conditional in plain SQL, so this step runs in Rust before the first
//! migration: it checks the existing columns, refuses (changing nothing) when a column the daemon needs has
//! an incompatible type or `clerk_id` has duplicates or NULLs, and otherwise adds the missing columns in one
//! transaction. Existing rows are marked `created_via = 'adopted'`; no column is dropped or renamed.

use sqlx::SqlitePool;

use crate::store::StoreError;

mod identity;
mod ids;

pub(super) use identity::{adopt_identity, existing_tables};
pub(super) use ids::order_ids;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Integer,
    Timestamp,
    Boolean,
    /// JSON text.
    Json,
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
];

/// The first migration's `users` columns: the user's own, then the bookkeeping every synced table has.
fn user_columns() -> impl Iterator<Item = &'static (&'static str, Kind, &'static str)> {
    COLUMNS.iter().chain(BOOKKEEPING.iter())
}

/// The bookkeeping columns of every synced table. Rows already there are marked `adopted`.
const BOOKKEEPING: [(&str, Kind, &str); 6] = [
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

/// Columns Clerk may leave empty (a phone-only user has no email): the daemon must be able to write NULL.
const NULLABLE: &[&str] = &["email", "first_name", "last_name", "name", "username", "image_url"];

/// Edits the table's SQL where ALTER TABLE cannot: drops `NOT NULL` from `nullable` columns and gives a text `id`
/// without a default a UUID default. Neither changes the stored data, so SQLite's documented `writable_schema`
/// procedure (edit the table's SQL, bump `schema_version`) applies, inside the adoption transaction.
async fn rewrite_schema(
    tx: &mut sqlx::SqliteConnection,
    nullable: &[&str],
    id_default: bool,
) -> Result<(), StoreError> {
    let sql: String = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'users'")
        .fetch_one(&mut *tx)
        .await?;
    // The edits below work on whitespace-separated words and top-level commas, which a comment would hide
    // (or, once words are re-joined on one line, extend over the closing parenthesis). Comments are dropped.
    let sql = strip_comments(&sql);
    let mut edited = nullable
        .iter()
        .try_fold(sql, |sql, column| drop_not_null(&sql, column).ok_or(*column))
        .map_err(|column| {
            StoreError::Adopt(format!(
                "clerk-sync cannot adopt table \"users\": column \"{column}\" is NOT NULL, but Clerk users may have \
                 none; make it nullable, then run clerk-sync migrate again"
            ))
        })?;
    if id_default {
        edited = add_uuid_default(&edited, "id").ok_or_else(|| {
            StoreError::Adopt(
                "clerk-sync cannot adopt table \"users\": column \"id\" has no default; give it one, then run \
                 clerk-sync migrate again"
                    .into(),
            )
        })?;
    }
    write_schema(tx, &[("users", edited)]).await?;
    tracing::warn!(nullable = ?nullable, id_default, "adjusted the users table: Clerk users may lack these columns");
    Ok(())
}

/// Replaces the `CREATE TABLE` statements of `tables` (name, new statement) in the open transaction `tx`, by
/// SQLite's documented procedure for changes that leave the stored data as it is: edit the schema table, then bump
/// `schema_version` so every connection reads the schema again.
async fn write_schema(tx: &mut sqlx::SqliteConnection, tables: &[(&str, String)]) -> Result<(), StoreError> {
    let version: i64 = sqlx::query_scalar("PRAGMA schema_version").fetch_one(&mut *tx).await?;
    sqlx::query("PRAGMA writable_schema = ON").execute(&mut *tx).await?;
    for (table, sql) in tables {
        sqlx::query("UPDATE sqlite_master SET sql = ?1 WHERE type = 'table' AND name = ?2")
            .bind(sql)
            .bind(table)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(&format!("PRAGMA schema_version = {}", version + 1))
        .execute(&mut *tx)
        .await?;
    sqlx::query("PRAGMA writable_schema = OFF").execute(&mut *tx).await?;
    Ok(())
}

/// `create` without its SQL comments (`-- …` to the end of the line, `/* … */`), each replaced by a space; quoted
/// strings and identifiers (`'…'`, `"…"`, `` `…` ``, `[…]`) are kept as they are.
fn strip_comments(create: &str) -> String {
    let mut out = String::with_capacity(create.len());
    let mut chars = create.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"' | '`') => {
                quote = Some(c);
                out.push(c);
            }
            (None, '[') => {
                quote = Some(']');
                out.push(c);
            }
            (None, '-') if chars.peek() == Some(&'-') => {
                // Up to, not including, the newline: it ends the comment and stays as whitespace.
                while chars.next_if(|&n| n != '\n').is_some() {}
                out.push(' ');
            }
            (None, '/') if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = '\0';
                for n in chars.by_ref() {
                    if previous == '*' && n == '/' {
                        break;
                    }
                    previous = n;
                }
                out.push(' ');
            }
            (None, c) => out.push(c),
        }
    }
    out
}

/// Removes `NOT NULL` from `column`'s definition in a `CREATE TABLE` statement; `None` if it cannot be found.
fn drop_not_null(create: &str, column: &str) -> Option<String> {
    edit_column(create, column, |definition| {
        let words: Vec<&str> = definition.split_whitespace().collect();
        let at = words
            .windows(2)
            .position(|w| w[0].eq_ignore_ascii_case("not") && w[1].eq_ignore_ascii_case("null"))?;
        let kept: Vec<&str> = words[..at].iter().chain(&words[at + 2..]).copied().collect();
        Some(format!(" {}", kept.join(" ")))
    })
}

/// Gives `column` a UUID default (time-ordered, see `ids.rs`), so rows the daemon inserts get an id like the app's
/// own.
fn add_uuid_default(create: &str, column: &str) -> Option<String> {
    edit_column(create, column, |definition| {
        Some(format!("{} DEFAULT ({})", definition.trim_end(), ids::UUID_V7))
    })
}

/// Rewrites one column definition of a `CREATE TABLE` statement with `edit`; `None` if the column is not found
/// or `edit` declines.
fn edit_column(create: &str, column: &str, edit: impl Fn(&str) -> Option<String>) -> Option<String> {
    let open = create.find('(')?;
    let close = create.rfind(')')?;
    let body = &create[open + 1..close];
    // Split the column list at top-level commas (not inside parentheses or quotes).
    let (mut parts, mut depth, mut quote, mut start) = (Vec::new(), 0i32, None::<char>, 0);
    for (i, c) in body.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, '[') => quote = Some(']'),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    let mut found = false;
    let edited: Vec<String> = parts
        .into_iter()
        .map(|part| {
            let name = part.split_whitespace().next().unwrap_or_default();
            let name = name.trim_matches(|c| matches!(c, '"' | '`' | '[' | ']' | '\''));
            match name.eq_ignore_ascii_case(column).then(|| edit(part)).flatten() {
                Some(new) => {
                    found = true;
                    new
                }
                None => part.to_string(),
            }
        })
        .collect();
    found.then(|| format!("{}({}){}", &create[..open], edited.join(","), &create[close + 1..]))
}

/// Whether a declared column type can hold what the daemon writes (SQLite's affinity rules).
fn compatible(kind: Kind, declared: &str) -> bool {
    let t = declared.to_ascii_uppercase();
    let text = t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT");
    match kind {
        Kind::Text => text,
        Kind::Integer => t.contains("INT"),
        Kind::Timestamp => text || t.contains("DATE") || t.contains("TIME"),
        Kind::Boolean => t.contains("INT") || t.contains("BOOL"),
        Kind::Json => text || t.contains("JSON"),
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

    let existing: Vec<(String, String, bool, Option<String>)> =
        sqlx::query_as("SELECT name, type, \"notnull\", dflt_value FROM pragma_table_info('users')")
            .fetch_all(pool)
            .await?;
    let declared = |name: &str| existing.iter().find(|c| c.0 == name).map(|c| c.1.as_str());
    // A text id without a default would stay NULL in every row the daemon inserts.
    let id_default = existing
        .iter()
        .any(|(name, t, _, default)| name == "id" && default.is_none() && compatible(Kind::Text, t));
    for (name, kind, _) in user_columns() {
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
    for (name, _, definition) in user_columns() {
        if declared(name).is_none() {
            sqlx::query(&format!("ALTER TABLE users ADD COLUMN {name} {definition}"))
                .execute(&mut *tx)
                .await?;
            added.push(*name);
        }
    }
    let not_null: Vec<&str> = existing
        .iter()
        .filter(|c| c.2 && NULLABLE.contains(&c.0.as_str()))
        .map(|c| c.0.as_str())
        .collect();
    if !not_null.is_empty() || id_default {
        rewrite_schema(&mut tx, &not_null, id_default).await?;
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
    fn not_null_is_dropped_from_one_column_only() {
        let sql = "CREATE TABLE users (id text primary key, clerk_id text unique, \"email\" TEXT NOT NULL \
                   CHECK (length(email) > 0), name varchar(10) not null default 'x,y')";
        let edited = drop_not_null(sql, "email").expect("found");
        assert_eq!(
            edited,
            "CREATE TABLE users (id text primary key, clerk_id text unique, \"email\" TEXT CHECK (length(email) > \
             0), name varchar(10) not null default 'x,y')"
        );
        let both = drop_not_null(&edited, "name").expect("found");
        assert!(both.ends_with(" name varchar(10) default 'x,y')"), "{both}");
        assert_eq!(drop_not_null(sql, "clerk_id"), None);
        let with_default = add_uuid_default(sql, "id").expect("found");
        assert!(
            with_default.starts_with("CREATE TABLE users (id text primary key DEFAULT (lower("),
            "{with_default}"
        );
    }

    #[test]
    fn comments_are_stripped_outside_quotes() {
        let sql = "CREATE TABLE users (\n id text primary key, -- the app's id\n \"a--b\" text default '--x', \
                   [c/*d] text /* note, (here) */,\n email text not null -- primary email\n, name TEXT)";
        let stripped = strip_comments(sql);
        assert_eq!(
            stripped,
            "CREATE TABLE users (\n id text primary key,  \n \"a--b\" text default '--x', [c/*d] text  ,\n email \
             text not null  \n, name TEXT)"
        );
        let edited = drop_not_null(&stripped, "email").expect("found");
        assert!(edited.ends_with(" email text, name TEXT)"), "{edited}");
    }

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
