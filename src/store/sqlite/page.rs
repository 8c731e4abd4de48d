//! A backfill page of users on SQLite: the guard's state, the users (`users.rs`) and the feed rows all bound as
//! statement parameters, in three statements.
//!
//! A page is the common case of a backfill — users only, each once, no delivery, none tombstoned — and is written
//! here with the same guard, the same outcomes and the same feed rows as the general path (`write.rs`, which also
//! handles deliveries, tombstones and the other kinds); any other page (a tombstone among its users, which a write
//! may lift) goes the general way. Inside the IMMEDIATE transaction this is the only writer, so the state read
//! first is exactly what the upsert's guard sees, and its row count checks that.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use sqlx::sqlite::SqliteConnection;

use super::decode;
use super::users::{values, MAX_ROWS};
use super::write::{check, writes, Key, Stored};
use crate::store::{Change, Entity, Outcome, Source, UserData};

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
    let Some(users) = users(batch).filter(|u| !u.is_empty() && u.len() <= MAX_ROWS) else {
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
    let write: Vec<(&UserData, Source)> = users
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| matches!(o, Outcome::Created | Outcome::Updated))
        .map(|(u, _)| *u)
        .collect();
    if write.is_empty() {
        return Ok(Some(outcomes));
    }
    check("users", super::users::upsert(tx, &write).await?, write.len())?;
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
