//! A backfill page of users on SQLite: its rows bound as statement parameters, not as one JSON array.
//!
//! The general path (`write.rs`) passes a batch as one JSON array of rows and reads each column with
//! `j.value ->> n`: SQLite then renders the whole row, payload included, back to JSON text for every column it
//! reads, which for a page of 500 users was most of the page's cost. A page is the common case of a backfill —
//! users only, each once, no delivery, none tombstoned — and is written here with the same guard, the same
//! outcomes and the same feed rows; any other page (a tombstone among its users, which a write may lift) goes
//! the general way. Inside the IMMEDIATE transaction this is the only writer, so the state read first is exactly
//! what the upsert's guard sees, and its row count checks that.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use sqlx::sqlite::SqliteConnection;

use super::decode;
use super::write::{writes, Key, Stored};
use crate::store::{Change, Entity, Outcome, Source, UserData};

/// Rows per statement: 16 parameters each, far below SQLite's limit of 32,766.
const ROWS: usize = 500;

/// `(…), (…)` for `n` rows, each written by `row` (given the row's index). Parameters are anonymous (`?`), bound in
/// order: sqlx asks SQLite for each parameter's name, which for numbered ones (`?NNN`) is a search of them all.
fn values(n: usize, row: impl Fn(&mut String, usize)) -> String {
    let mut sql = String::with_capacity(n * 64);
    for i in 0..n {
        sql.push_str(if i == 0 { "(" } else { ", (" });
        row(&mut sql, i);
        sql.push(')');
    }
    sql
}

/// The page's users when it is one this module writes, else `None`.
fn users(batch: &[Change]) -> Option<Vec<(&UserData, Source)>> {
    let mut ids = HashSet::with_capacity(batch.len());
    batch
        .iter()
        .map(|change| match change {
            Change::Upsert {
                entity: Entity::User(user),
                via,
                delivery: None,
            } if ids.insert(user.clerk_id.as_str()) => Some((user, *via)),
            _ => None,
        })
        .collect()
}

/// Writes `batch` when it is a plain page of users; `None` (nothing written) otherwise.
pub(super) async fn apply(
    tx: &mut SqliteConnection,
    batch: &[Change],
    feed: bool,
) -> Result<Option<Vec<Outcome>>, sqlx::Error> {
    let Some(users) = users(batch).filter(|u| !u.is_empty() && u.len() <= ROWS) else {
        return Ok(None);
    };
    let Some(stored) = state(tx, &users).await? else {
        return Ok(None);
    };
    let outcomes: Vec<Outcome> = users
        .iter()
        .map(|(u, _)| match stored.get(u.clerk_id.as_str()) {
            None => Outcome::Created,
            Some(row) if writes(row, &Key::plain(&u.clerk_id, u.clerk_updated_at)) => Outcome::Updated,
            // Not tombstoned (checked): a row as new or newer, or deleted without a tombstone.
            Some(_) => Outcome::Stale,
        })
        .collect();
    let write: Vec<&(&UserData, Source)> = users
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| matches!(o, Outcome::Created | Outcome::Updated))
        .map(|(u, _)| u)
        .collect();
    if write.is_empty() {
        return Ok(Some(outcomes));
    }
    upsert(tx, &write).await?;
    if feed {
        record(tx, &users, &outcomes).await?;
    }
    Ok(Some(outcomes))
}

/// What the guard reads of the page's stored rows; `None` when one of its users is tombstoned.
async fn state(
    tx: &mut SqliteConnection,
    users: &[(&UserData, Source)],
) -> Result<Option<HashMap<String, Stored>>, sqlx::Error> {
    let ids = values(users.len(), |sql, _| sql.push('?'));
    let sql = format!(
        "SELECT (SELECT json_group_array(json_array(clerk_id, clerk_updated_at, deleted_at IS NOT NULL)) \
                 FROM users WHERE clerk_id IN (SELECT column1 FROM (VALUES {ids}))), \
                EXISTS (SELECT 1 FROM clerk_sync_tombstones WHERE clerk_id IN (SELECT column1 FROM (VALUES {ids})))"
    );
    let mut query = sqlx::query_as::<_, (String, bool)>(&sql);
    for _ in 0..2 {
        for (u, _) in users {
            query = query.bind(u.clerk_id.as_str());
        }
    }
    let (rows, tombstoned) = query.fetch_one(&mut *tx).await?;
    if tombstoned {
        return Ok(None);
    }
    let rows: Vec<(String, Option<i64>, i64)> = decode(&rows)?;
    Ok(Some(
        rows.into_iter()
            .map(|(id, at, deleted)| (id, (at, deleted != 0, false, None)))
            .collect(),
    ))
}

/// The upsert of `write.rs`'s `UPSERT_USERS` over bound rows. `json()` stores the JSON columns as that statement
/// does (SQLite's rendering of the value), so a row reads the same whichever path wrote it.
async fn upsert(tx: &mut SqliteConnection, rows: &[&(&UserData, Source)]) -> Result<(), sqlx::Error> {
    const TS: &str = "'%Y-%m-%dT%H:%M:%fZ'";
    let row = format!(
        "?, ?, ?, ?, ?, ?, ?, ?, ?, json(?), ?, strftime({TS}, ? / 1000.0, 'unixepoch'), \
         strftime({TS}, ? / 1000.0, 'unixepoch'), json(?), ?, ?"
    );
    let rows_sql = values(rows.len(), |sql, _| sql.push_str(&row));
    let sql = format!(
        "INSERT INTO users (clerk_id, email, first_name, last_name, name, username, image_url, phone_number,
                            external_id, public_metadata, banned, last_sign_in_at, clerk_created_at, data,
                            created_via, updated_via, clerk_updated_at, created_at, updated_at)
         SELECT column1, column2, column3, column4, column5, column6, column7, column8, column9, column10,
                column11, column12, column13, column14, column15, column15, column16, {now}, {now}
         FROM (VALUES {rows_sql}) WHERE true {on_conflict}",
        now = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        on_conflict = super::write::users_on_conflict!()
    );
    let mut query = sqlx::query(&sql);
    for (u, via) in rows {
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
    let done = query.execute(&mut *tx).await?;
    if done.rows_affected() != rows.len() as u64 {
        // Cannot happen with one writer; if it does, fail the page rather than report wrong outcomes.
        return Err(sqlx::Error::Protocol(format!(
            "users upsert wrote {} rows where {} were expected",
            done.rows_affected(),
            rows.len()
        )));
    }
    Ok(())
}

/// The feed rows of the users written, in page order.
async fn record(
    tx: &mut SqliteConnection,
    users: &[(&UserData, Source)],
    outcomes: &[Outcome],
) -> Result<(), sqlx::Error> {
    let written: Vec<(&str, &str, &str)> = users
        .iter()
        .zip(outcomes)
        .filter_map(|((u, via), o)| match o {
            Outcome::Created => Some((u.clerk_id.as_str(), "created", via.as_str())),
            Outcome::Updated => Some((u.clerk_id.as_str(), "updated", via.as_str())),
            _ => None,
        })
        .collect();
    let rows = values(written.len(), |sql, i| {
        let _ = write!(sql, "{i}, ?, ?, ?");
    });
    let sql = format!(
        "INSERT INTO clerk_sync_changes (kind, clerk_id, op, via) \
         SELECT 'user', column2, column3, column4 FROM (VALUES {rows}) ORDER BY column1"
    );
    let mut query = sqlx::query(&sql);
    for (id, op, via) in written {
        query = query.bind(id).bind(op).bind(via);
    }
    query.execute(&mut *tx).await?;
    Ok(())
}
