//! The multi-row upserts of the SQLite backend: one statement per kind for a whole batch, its rows one JSON
//! array (`json_each`), so the statement is prepared once whatever the batch size.
//!
//! SQLite has no xmax, and RETURNING would send a row per record across sqlx's worker thread. Inside the
//! IMMEDIATE transaction this is the only writer, so the state read just before an upsert says exactly what its
//! guard does: no change over a tombstone (a membership's parents' too) or a deleted row, or when the row is as
//! new (for an organization, the rules of `store::sql`'s guard). The upsert's row count checks the prediction.

use std::collections::{HashMap, HashSet};

use sqlx::sqlite::SqliteConnection;

use super::{decode, json_rows};
use crate::store::sql::{
    not_tombstoned, organization_count_only, organization_set, organization_wins, NewMembership, NewOrganization,
    NewUser,
};

/// ISO-8601 UTC with milliseconds, the format of every timestamp column in the SQLite schema.
macro_rules! now {
    () => {
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    };
}

/// The batch's rows as `j(value)`, each parsed once into SQLite's binary JSON. Read straight from `json_each`, every
/// `j.value ->> n` would render the whole row (its ~2 KB payload included) back to text and parse it again: once
/// per column read, most of an upsert's cost. `MATERIALIZED` keeps SQLite from folding `jsonb()` back into each
/// read.
macro_rules! rows {
    () => {
        "WITH j(value) AS MATERIALIZED (SELECT jsonb(value) FROM json_each(?1)) "
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

/// The tombstone check of an upsert (rows `j` of `json_each`, the clerk id first), also run by [`upsert`] to
/// predict it.
macro_rules! record_live {
    () => {
        not_tombstoned!("j.value ->> 0")
    };
}

/// A membership is refused when its organization (element 1) or user (element 2) is tombstoned too: their delete
/// deleted their memberships, and none may be made or brought back afterwards.
macro_rules! membership_live {
    () => {
        not_tombstoned!("j.value ->> 0, j.value ->> 1, j.value ->> 2")
    };
}

/// The users upsert's conflict clause: every synced column, under the ordering guard. Shared with a backfill
/// page's statement (`page.rs`), which brings its rows as parameters instead.
macro_rules! users_on_conflict {
    () => {
        concat!(
            "
     ON CONFLICT (clerk_id) DO UPDATE SET
         email = excluded.email, first_name = excluded.first_name, last_name = excluded.last_name,
         name = excluded.name, username = excluded.username, image_url = excluded.image_url,
         phone_number = excluded.phone_number, external_id = excluded.external_id,
         public_metadata = excluded.public_metadata, banned = excluded.banned,
         last_sign_in_at = excluded.last_sign_in_at, clerk_created_at = excluded.clerk_created_at,
         data = excluded.data, updated_via = excluded.updated_via, clerk_updated_at = excluded.clerk_updated_at,
         updated_at = ",
            $crate::store::sqlite::write::now!(),
            $crate::store::sqlite::write::guard!("users")
        )
    };
}
pub(super) use {guard, now, users_on_conflict};

/// The guard and the `SET` are the backend-independent ones of `store::sql`; [`writes`] predicts them.
const UPSERT_ORGANIZATIONS: &str = concat!(
    rows!(),
    "INSERT INTO organizations (clerk_id, name, slug, image_url, public_metadata, members_count,
                                clerk_created_at, data, created_via, updated_via, clerk_updated_at, embedded,
                                created_at, updated_at)
     SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5, ",
    ts!(6),
    ", j.value ->> 7, j.value ->> 8, j.value ->> 8, j.value ->> 9, j.value ->> 10, ",
    now!(),
    ", ",
    now!(),
    "
     FROM j
     WHERE ",
    record_live!(),
    "
     ON CONFLICT (clerk_id) DO UPDATE SET ",
    organization_set!("organizations"),
    ", updated_at = ",
    now!(),
    " WHERE organizations.deleted_at IS NULL AND (",
    organization_wins!("organizations"),
    " OR ",
    organization_count_only!("organizations"),
    ")"
);

const UPSERT_MEMBERSHIPS: &str = concat!(
    rows!(),
    "INSERT INTO organization_memberships (clerk_id, organization_clerk_id, user_clerk_id, role, clerk_created_at,
                                           data, created_via, updated_via, clerk_updated_at, created_at, updated_at)
     SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, ",
    ts!(4),
    ", j.value ->> 5, j.value ->> 6, j.value ->> 6, j.value ->> 7, ",
    now!(),
    ", ",
    now!(),
    "
     FROM j
     WHERE ",
    membership_live!(),
    "
     ON CONFLICT (clerk_id) DO UPDATE SET
         organization_clerk_id = excluded.organization_clerk_id, user_clerk_id = excluded.user_clerk_id,
         role = excluded.role, clerk_created_at = excluded.clerk_created_at, data = excluded.data,
         updated_via = excluded.updated_via, clerk_updated_at = excluded.clerk_updated_at, updated_at = ",
    now!(),
    guard!("organization_memberships")
);

/// What predicting one table's upsert reads: its tombstone check (refused rows are read with it), and what else its
/// guard reads of the stored row, as JSON: `embedded` and `members_count` (organizations only).
struct Guard {
    table: &'static str,
    live: &'static str,
    guard_columns: &'static str,
}

/// The guard reads nothing but `clerk_updated_at` and `deleted_at` of a user or membership.
const PLAIN_GUARD: &str = "json('false'), NULL";

/// What the guard reads of an incoming row.
pub(super) struct Key<'a> {
    id: &'a str,
    updated_at: i64,
    embedded: bool,
    members_count: Option<i64>,
}

impl<'a> Key<'a> {
    pub(super) fn plain(id: &'a str, updated_at: i64) -> Self {
        Key {
            id,
            updated_at,
            embedded: false,
            members_count: None,
        }
    }
}

/// A stored row as the guard reads it: `clerk_updated_at`, deleted, `embedded`, `members_count`.
pub(super) type Stored = (Option<i64>, bool, bool, Option<i64>);

/// The same with the clerk id first, as the state query returns it.
type StoredRow = (String, Option<i64>, bool, bool, Option<i64>);

/// Whether the guard lets `new` over `stored`: the SQL's `guard!`, and for organizations `organization_wins!`
/// or `organization_count_only!` (a user or membership is never `embedded`, so only a newer one writes).
pub(super) fn writes(stored: &Stored, new: &Key) -> bool {
    let (at, deleted, embedded, count) = *stored;
    let Some(at) = at else { return !deleted };
    let equal = at == new.updated_at;
    !deleted
        && (at < new.updated_at
            || (equal && embedded && !new.embedded)
            || (equal && new.embedded && new.members_count.is_some_and(|n| count != Some(n))))
}

/// Runs `sql` over `json`, whose rows start with the clerk id; `keys` are what its guard reads of each row.
/// Returns the ids written, `true` for the created ones.
async fn upsert(
    tx: &mut SqliteConnection,
    guard: Guard,
    sql: &'static str,
    json: String,
    keys: Vec<Key<'_>>,
) -> Result<HashMap<String, bool>, sqlx::Error> {
    let expected = predict(tx, &guard, &json, keys).await?;
    let done = sqlx::query(sql).bind(&json).execute(&mut *tx).await?;
    check(guard.table, done.rows_affected(), expected.len())?;
    Ok(expected)
}

/// Which rows of `json` (rows that start with the clerk id and hold what `guard.live` reads) the upsert will write,
/// from the stored rows' state: the ids, `true` for the ones it creates.
async fn predict(
    tx: &mut SqliteConnection,
    guard: &Guard,
    json: &str,
    keys: Vec<Key<'_>>,
) -> Result<HashMap<String, bool>, sqlx::Error> {
    let Guard {
        table,
        live,
        guard_columns,
    } = guard;
    // Every part is one of this module's constants, never input.
    let state: (String, String) = sqlx::query_as(&format!(
        "{rows}SELECT (SELECT json_group_array(json_array(r.clerk_id, r.clerk_updated_at, \
                 json(CASE WHEN r.deleted_at IS NULL THEN 'false' ELSE 'true' END), {guard_columns})) \
                 FROM {table} r WHERE r.clerk_id IN (SELECT j.value ->> 0 FROM j)), \
                (SELECT json_group_array(j.value ->> 0) FROM j WHERE NOT ({live}))",
        rows = rows!()
    ))
    .bind(json)
    .fetch_one(&mut *tx)
    .await?;
    let stored: HashMap<String, Stored> = decode::<Vec<StoredRow>>(&state.0)?
        .into_iter()
        .map(|(id, at, deleted, embedded, count)| (id, (at, deleted, embedded, count)))
        .collect();
    let refused: HashSet<String> = decode(&state.1)?;
    Ok(keys
        .into_iter()
        .filter(|key| !refused.contains(key.id))
        .filter_map(|key| match stored.get(key.id) {
            None => Some((key.id.to_owned(), true)),
            Some(row) if writes(row, &key) => Some((key.id.to_owned(), false)),
            Some(_) => None,
        })
        .collect())
}

/// Fails the batch when an upsert wrote other than the rows predicted. Cannot happen with one writer; if it does,
/// failing beats reporting wrong outcomes.
pub(super) fn check(table: &str, written: u64, expected: usize) -> Result<(), sqlx::Error> {
    if written == expected as u64 {
        return Ok(());
    }
    Err(sqlx::Error::Protocol(format!(
        "{table} upsert wrote {written} rows where {expected} were expected"
    )))
}

/// Users go through the bound statement of `users.rs`; the prediction reads only their ids (and the JSON of the
/// ids is all SQLite parses here).
pub(super) async fn users(
    tx: &mut SqliteConnection,
    rows: &[NewUser<'_>],
) -> Result<HashMap<String, bool>, sqlx::Error> {
    let ids = json_rows(rows.iter().map(|r| [&r.row.clerk_id]));
    let keys = rows
        .iter()
        .map(|r| Key::plain(&r.row.clerk_id, r.row.clerk_updated_at))
        .collect();
    let guard = Guard {
        table: "users",
        live: record_live!(),
        guard_columns: PLAIN_GUARD,
    };
    let expected = predict(tx, &guard, &ids, keys).await?;
    let bound: Vec<(&crate::store::UserData, crate::store::Source)> = rows.iter().map(|r| (r.row, r.via)).collect();
    let written = super::users::upsert(tx, &bound).await?;
    check("users", written, expected.len())?;
    Ok(expected)
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
            o.embedded,
        )
    }));
    let keys = rows
        .iter()
        .map(|r| Key {
            id: &r.row.clerk_id,
            updated_at: r.row.clerk_updated_at,
            embedded: r.row.embedded,
            members_count: r.row.members_count,
        })
        .collect();
    let guard = Guard {
        table: "organizations",
        live: record_live!(),
        guard_columns: "json(CASE WHEN r.embedded THEN 'true' ELSE 'false' END), r.members_count",
    };
    upsert(tx, guard, UPSERT_ORGANIZATIONS, json, keys).await
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
        .map(|r| Key::plain(&r.row.clerk_id, r.row.clerk_updated_at))
        .collect();
    let guard = Guard {
        table: "organization_memberships",
        live: membership_live!(),
        guard_columns: PLAIN_GUARD,
    };
    upsert(tx, guard, UPSERT_MEMBERSHIPS, json, keys).await
}
