//! The multi-row upserts of the SQLite backend: one statement per kind for a whole batch, its rows one JSON
//! array (`json_each`), so the statement is prepared once whatever the batch size.
//!
//! SQLite has no xmax, and RETURNING would send a row per record across sqlx's worker thread. Inside the
//! IMMEDIATE transaction this is the only writer, so the state read just before an upsert says exactly what its
//! guard does: no change over a tombstone or a deleted row, or when the row is as new. The upsert's row count
//! checks the prediction.

use std::collections::{HashMap, HashSet};

use sqlx::sqlite::SqliteConnection;

use super::{decode, json_rows};
use crate::store::sql::{NewMembership, NewOrganization, NewUser};

/// ISO-8601 UTC with milliseconds, the format of every timestamp column in the SQLite schema.
macro_rules! now {
    () => {
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    };
}

/// Clerk's milliseconds (element `$n` of the row) as a timestamp column.
macro_rules! ts {
    ($n:literal) => {
        concat!(
            "strftime('%Y-%m-%dT%H:%M:%fZ', (j.value ->> ",
            $n,
            ") / 1000.0, 'unixepoch')"
        )
    };
}

/// The ordering guard of every synced table.
macro_rules! guard {
    ($table:literal) => {
        concat!(
            " WHERE ",
            $table,
            ".deleted_at IS NULL AND (",
            $table,
            ".clerk_updated_at IS NULL OR ",
            $table,
            ".clerk_updated_at < excluded.clerk_updated_at)"
        )
    };
}

const UPSERT_USERS: &str = concat!(
    "INSERT INTO users (clerk_id, email, first_name, last_name, name, username, image_url, phone_number,
                        external_id, public_metadata, banned, last_sign_in_at, clerk_created_at, data,
                        created_via, updated_via, clerk_updated_at, created_at, updated_at)
     SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5,
            j.value ->> 6, j.value ->> 7, j.value ->> 8, j.value ->> 9, j.value ->> 10, ",
    ts!(11),
    ", ",
    ts!(12),
    ", j.value ->> 13, j.value ->> 14, j.value ->> 14, j.value ->> 15, ",
    now!(),
    ", ",
    now!(),
    "
     FROM json_each(?1) AS j
     WHERE NOT EXISTS (SELECT 1 FROM clerk_sync_tombstones t WHERE t.clerk_id = j.value ->> 0)
     ON CONFLICT (clerk_id) DO UPDATE SET
         email = excluded.email, first_name = excluded.first_name, last_name = excluded.last_name,
         name = excluded.name, username = excluded.username, image_url = excluded.image_url,
         phone_number = excluded.phone_number, external_id = excluded.external_id,
         public_metadata = excluded.public_metadata, banned = excluded.banned,
         last_sign_in_at = excluded.last_sign_in_at, clerk_created_at = excluded.clerk_created_at,
         data = excluded.data, updated_via = excluded.updated_via, clerk_updated_at = excluded.clerk_updated_at,
         updated_at = ",
    now!(),
    guard!("users")
);

const UPSERT_ORGANIZATIONS: &str = concat!(
    "INSERT INTO organizations (clerk_id, name, slug, image_url, public_metadata, members_count,
                                clerk_created_at, data, created_via, updated_via, clerk_updated_at, created_at,
                                updated_at)
     SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5, ",
    ts!(6),
    ", j.value ->> 7, j.value ->> 8, j.value ->> 8, j.value ->> 9, ",
    now!(),
    ", ",
    now!(),
    "
     FROM json_each(?1) AS j
     WHERE NOT EXISTS (SELECT 1 FROM clerk_sync_tombstones t WHERE t.clerk_id = j.value ->> 0)
     ON CONFLICT (clerk_id) DO UPDATE SET
         name = excluded.name, slug = excluded.slug, image_url = excluded.image_url,
         public_metadata = excluded.public_metadata,
         members_count = coalesce(excluded.members_count, organizations.members_count),
         clerk_created_at = excluded.clerk_created_at, data = excluded.data, updated_via = excluded.updated_via,
         clerk_updated_at = excluded.clerk_updated_at, updated_at = ",
    now!(),
    guard!("organizations")
);

const UPSERT_MEMBERSHIPS: &str = concat!(
    "INSERT INTO organization_memberships (clerk_id, organization_clerk_id, user_clerk_id, role, clerk_created_at,
                                           data, created_via, updated_via, clerk_updated_at, created_at, updated_at)
     SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, ",
    ts!(4),
    ", j.value ->> 5, j.value ->> 6, j.value ->> 6, j.value ->> 7, ",
    now!(),
    ", ",
    now!(),
    "
     FROM json_each(?1) AS j
     WHERE NOT EXISTS (SELECT 1 FROM clerk_sync_tombstones t WHERE t.clerk_id = j.value ->> 0)
     ON CONFLICT (clerk_id) DO UPDATE SET
         organization_clerk_id = excluded.organization_clerk_id, user_clerk_id = excluded.user_clerk_id,
         role = excluded.role, clerk_created_at = excluded.clerk_created_at, data = excluded.data,
         updated_via = excluded.updated_via, clerk_updated_at = excluded.clerk_updated_at, updated_at = ",
    now!(),
    guard!("organization_memberships")
);

/// Runs `upsert` (a statement of this module) over `json`, whose rows start with the clerk id; `keys` are each
/// row's clerk id and `updated_at`. Returns the ids written, `true` for the created ones.
async fn upsert(
    tx: &mut SqliteConnection,
    table: &'static str,
    upsert: &'static str,
    json: String,
    keys: Vec<(&str, i64)>,
) -> Result<HashMap<String, bool>, sqlx::Error> {
    // `table` is one of this module's constants, never input.
    let state: (String, String) = sqlx::query_as(&format!(
        "SELECT (SELECT json_group_array(json_array(r.clerk_id, r.clerk_updated_at, \
                 json(CASE WHEN r.deleted_at IS NULL THEN 'false' ELSE 'true' END))) \
                 FROM {table} r WHERE r.clerk_id IN (SELECT j.value ->> 0 FROM json_each(?1) AS j)), \
                (SELECT json_group_array(t.clerk_id) FROM clerk_sync_tombstones t \
                 WHERE t.clerk_id IN (SELECT j.value ->> 0 FROM json_each(?1) AS j))"
    ))
    .bind(&json)
    .fetch_one(&mut *tx)
    .await?;
    let stored: Vec<(String, Option<i64>, bool)> = decode(&state.0)?;
    let stored: HashMap<String, (Option<i64>, bool)> = stored
        .into_iter()
        .map(|(id, at, deleted)| (id, (at, deleted)))
        .collect();
    let tombstoned: HashSet<String> = decode(&state.1)?;
    let expected: HashMap<String, bool> = keys
        .into_iter()
        .filter(|(id, _)| !tombstoned.contains(*id))
        .filter_map(|(id, updated)| match stored.get(id) {
            None => Some((id.to_owned(), true)),
            Some((at, false)) if at.is_none_or(|at| at < updated) => Some((id.to_owned(), false)),
            Some(_) => None,
        })
        .collect();
    let done = sqlx::query(upsert).bind(&json).execute(&mut *tx).await?;
    if done.rows_affected() != expected.len() as u64 {
        // Cannot happen with one writer; if it does, fail the batch rather than report wrong outcomes.
        return Err(sqlx::Error::Protocol(format!(
            "{table} upsert wrote {} rows where {} were expected",
            done.rows_affected(),
            expected.len()
        )));
    }
    Ok(expected)
}

pub(super) async fn users(
    tx: &mut SqliteConnection,
    rows: &[NewUser<'_>],
) -> Result<HashMap<String, bool>, sqlx::Error> {
    let json = json_rows(rows.iter().map(|r| {
        let u = r.row;
        // A tuple of references serializes as a JSON array without copying the payload.
        (
            &u.clerk_id,
            &u.email,
            &u.first_name,
            &u.last_name,
            u.name(),
            &u.username,
            &u.image_url,
            &u.phone_number,
            &u.external_id,
            &u.public_metadata,
            u.banned,
            u.last_sign_in_at_ms,
            u.clerk_created_at_ms,
            &u.data,
            r.via.as_str(),
            u.clerk_updated_at,
        )
    }));
    let keys = rows
        .iter()
        .map(|r| (r.row.clerk_id.as_str(), r.row.clerk_updated_at))
        .collect();
    upsert(tx, "users", UPSERT_USERS, json, keys).await
}

pub(super) async fn organizations(
    tx: &mut SqliteConnection,
    rows: &[NewOrganization<'_>],
) -> Result<HashMap<String, bool>, sqlx::Error> {
    let json = json_rows(rows.iter().map(|r| {
        let o = r.row;
        (
            &o.clerk_id,
            &o.name,
            &o.slug,
            &o.image_url,
            &o.public_metadata,
            o.members_count,
            o.clerk_created_at_ms,
            &o.data,
            r.via.as_str(),
            o.clerk_updated_at,
        )
    }));
    let keys = rows
        .iter()
        .map(|r| (r.row.clerk_id.as_str(), r.row.clerk_updated_at))
        .collect();
    upsert(tx, "organizations", UPSERT_ORGANIZATIONS, json, keys).await
}

pub(super) async fn memberships(
    tx: &mut SqliteConnection,
    rows: &[NewMembership<'_>],
) -> Result<HashMap<String, bool>, sqlx::Error> {
    let json = json_rows(rows.iter().map(|r| {
        let m = r.row;
        (
            &m.clerk_id,
            &m.organization_clerk_id,
            &m.user_clerk_id,
            &m.role,
            m.clerk_created_at_ms,
            &m.data,
            r.via.as_str(),
            m.clerk_updated_at,
        )
    }));
    let keys = rows
        .iter()
        .map(|r| (r.row.clerk_id.as_str(), r.row.clerk_updated_at))
        .collect();
    upsert(tx, "organization_memberships", UPSERT_MEMBERSHIPS, json, keys).await
}
