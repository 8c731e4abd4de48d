//! The users upsert of SQLite with its rows bound as statement parameters: webhook batches (`write.rs`) and
//! backfill pages (`page.rs`) both write users this way.
//!
//! Passed as one JSON array instead, the rows — each with Clerk's whole object, about 2 KB — were parsed by
//! `json_each`, each rendered back to text and parsed again into binary JSON, and the guard's state query did the
//! same once more: a third of the daemon's instructions per webhook. Bound, only `data` and `public_metadata` are
//! parsed, once, by `json()`, which stores them as SQLite renders them (as the JSON path did).
//!
//! The statement's text depends on its number of rows, and sqlx prepares each text once per connection: rows are
//! padded with NULLs to the next power of two, so a handful of statements serve every batch size.

use std::sync::OnceLock;

use sqlx::sqlite::SqliteConnection;

use super::write::users_on_conflict;
use crate::store::sql::not_tombstoned;
use crate::store::{Source, UserData};

/// Most rows in one statement (a power of two): 16 parameters each, far below SQLite's limit of 32,766.
pub(super) const MAX_ROWS: usize = 512;

/// `(…), (…)` for `n` rows, each written by `row` (given the row's index). Parameters are anonymous (`?`), bound in
/// order: sqlx asks SQLite for each parameter's name, which for numbered ones (`?NNN`) is a search of them all.
pub(super) fn values(n: usize, row: impl Fn(&mut String, usize)) -> String {
    let mut sql = String::with_capacity(n * 64);
    for i in 0..n {
        sql.push_str(if i == 0 { "(" } else { ", (" });
        row(&mut sql, i);
        sql.push(')');
    }
    sql
}

/// The statement for `n` rows (a power of two up to [`MAX_ROWS`]), built once per size: every batch asks for one.
fn statement(n: usize) -> &'static str {
    const SIZES: usize = MAX_ROWS.trailing_zeros() as usize + 1;
    static STATEMENTS: [OnceLock<String>; SIZES] = [const { OnceLock::new() }; SIZES];
    STATEMENTS[n.trailing_zeros() as usize].get_or_init(|| build(n))
}

/// The statement for `n` rows: padding rows have a NULL clerk id and are skipped. A tombstoned user is never
/// written (the caller's prediction counts on it, as the JSON path's `record_live!`).
fn build(n: usize) -> String {
    const TS: &str = "'%Y-%m-%dT%H:%M:%fZ'";
    let row = format!(
        "?, ?, ?, ?, ?, ?, ?, ?, ?, json(?), ?, strftime({TS}, ? / 1000.0, 'unixepoch'), \
         strftime({TS}, ? / 1000.0, 'unixepoch'), json(?), ?, ?"
    );
    format!(
        "INSERT INTO users (clerk_id, email, first_name, last_name, name, username, image_url, phone_number,
                            external_id, public_metadata, banned, last_sign_in_at, clerk_created_at, data,
                            created_via, updated_via, clerk_updated_at, created_at, updated_at)
         SELECT column1, column2, column3, column4, column5, column6, column7, column8, column9, column10,
                column11, column12, column13, column14, column15, column15, column16, {now}, {now}
         FROM (VALUES {rows}) WHERE column1 IS NOT NULL AND {live} {on_conflict}",
        rows = values(n, |sql, _| sql.push_str(&row)),
        now = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        live = not_tombstoned!("column1"),
        on_conflict = users_on_conflict!()
    )
}

/// Upserts `rows` (distinct clerk ids) under the ordering guard; returns how many were written.
pub(super) async fn upsert(tx: &mut SqliteConnection, rows: &[(&UserData, Source)]) -> Result<u64, sqlx::Error> {
    let mut written = 0;
    for chunk in rows.chunks(MAX_ROWS) {
        let n = chunk.len().next_power_of_two();
        let mut query = sqlx::query(statement(n));
        for (u, via) in chunk {
            query = query
                .bind(u.clerk_id.as_str())
                .bind(u.email.as_deref())
                .bind(u.first_name.as_deref())
                .bind(u.last_name.as_deref())
                .bind(u.name())
                .bind(u.username.as_deref())
                .bind(u.image_url.as_deref())
                .bind(u.phone_number.as_deref())
                .bind(u.external_id.as_deref())
                .bind(u.public_metadata.as_ref().map(|j| j.as_str()))
                .bind(u.banned)
                .bind(u.last_sign_in_at_ms)
                .bind(u.clerk_created_at_ms)
                .bind(u.data.as_ref().map(|j| j.as_str()))
                .bind(via.as_str())
                .bind(u.clerk_updated_at);
        }
        for _ in chunk.len()..n {
            for _ in 0..16 {
                query = query.bind(None::<&str>);
            }
        }
        written += query.execute(&mut *tx).await?.rows_affected();
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_size_has_its_own_statement_with_that_many_rows() {
        let mut n = 1;
        while n <= MAX_ROWS {
            let sql = statement(n);
            assert_eq!(sql.matches('?').count(), 16 * n, "{n} rows");
            assert!(std::ptr::eq(sql, statement(n)), "built once");
            n *= 2;
        }
    }
}
