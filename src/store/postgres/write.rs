//! The multi-row upserts of the Postgres backend: one statement per kind for a whole batch, rows passed as
//! parallel arrays (`UNNEST`). `ORDER BY` makes concurrent batches take row locks in one order; the `WHERE` of
//! `DO UPDATE` is the ordering guard, the `NOT EXISTS` the tombstone check, and `xmax = 0` tells an insert.

use std::collections::HashMap;
use std::sync::LazyLock;

use sqlx::postgres::PgConnection;

use super::FEED_LOCK;
use crate::store::sql::{
    not_tombstoned, organization_count_only, organization_set, organization_wins, NewMembership, NewOrganization,
    NewUser,
};

/// Clerk's milliseconds as `timestamptz`.
macro_rules! ts {
    ($ms:literal) => {
        concat!("to_timestamp(", $ms, "::double precision / 1000)")
    };
}

const UPSERT_USERS: &str = concat!(
    "INSERT INTO users AS u (clerk_id, email, first_name, last_name, name, username, image_url, phone_number,
                        external_id, public_metadata, banned, last_sign_in_at, clerk_created_at, data,
                        created_via, updated_via, clerk_updated_at, created_at, updated_at)
SELECT i.clerk_id, i.email, i.first_name, i.last_name, i.name, i.username, i.image_url, i.phone_number,
       i.external_id, i.public_metadata::jsonb, i.banned, ",
    ts!("i.last_sign_in_at"),
    ", ",
    ts!("i.clerk_created_at"),
    ", i.data::jsonb,
       i.via, i.via, i.clerk_updated_at, now(), now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::text[], $10::text[], $11::bool[], $12::int8[], $13::int8[], $14::text[], $15::text[], $16::int8[])
     AS i(clerk_id, email, first_name, last_name, name, username, image_url, phone_number, external_id,
          public_metadata, banned, last_sign_in_at, clerk_created_at, data, via, clerk_updated_at)
WHERE ",
    not_tombstoned!("i.clerk_id"),
    "
ORDER BY i.clerk_id
ON CONFLICT (clerk_id) DO UPDATE SET
    email = EXCLUDED.email, first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
    name = EXCLUDED.name, username = EXCLUDED.username, image_url = EXCLUDED.image_url,
    phone_number = EXCLUDED.phone_number, external_id = EXCLUDED.external_id,
    public_metadata = EXCLUDED.public_metadata, banned = EXCLUDED.banned,
    last_sign_in_at = EXCLUDED.last_sign_in_at, clerk_created_at = EXCLUDED.clerk_created_at, data = EXCLUDED.data,
    updated_via = EXCLUDED.updated_via, clerk_updated_at = EXCLUDED.clerk_updated_at, updated_at = now()
WHERE u.deleted_at IS NULL AND (u.clerk_updated_at IS NULL OR u.clerk_updated_at < EXCLUDED.clerk_updated_at)
RETURNING u.clerk_id, (u.xmax = 0)"
);

/// `members_count` only when Clerk sent it: an event without it keeps the stored count. The guard and the `SET`
/// are the backend-independent ones of `store::sql` (an equal `updated_at` is decided by `embedded`).
const UPSERT_ORGANIZATIONS: &str = concat!(
    "INSERT INTO organizations AS o (clerk_id, name, slug, image_url, public_metadata, members_count,
                                clerk_created_at, data, created_via, updated_via, clerk_updated_at, embedded,
                                created_at, updated_at)
SELECT i.clerk_id, i.name, i.slug, i.image_url, i.public_metadata::jsonb, i.members_count, ",
    ts!("i.clerk_created_at"),
    ", i.data::jsonb, i.via, i.via, i.clerk_updated_at, i.embedded, now(), now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::int8[], $8::text[],
            $9::text[], $10::int8[], $11::bool[])
     AS i(clerk_id, name, slug, image_url, public_metadata, members_count, clerk_created_at, data, via,
          clerk_updated_at, embedded)
WHERE ",
    not_tombstoned!("i.clerk_id"),
    "
ORDER BY i.clerk_id
ON CONFLICT (clerk_id) DO UPDATE SET ",
    organization_set!("o"),
    ", updated_at = now()
WHERE o.deleted_at IS NULL AND (",
    organization_wins!("o"),
    " OR ",
    organization_count_only!("o"),
    ")
RETURNING o.clerk_id, (o.xmax = 0)"
);

const UPSERT_MEMBERSHIPS: &str = concat!(
    "INSERT INTO organization_memberships AS m (clerk_id, organization_clerk_id, user_clerk_id, role,
                                           clerk_created_at, data, created_via, updated_via, clerk_updated_at,
                                           created_at, updated_at)
SELECT i.clerk_id, i.organization_clerk_id, i.user_clerk_id, i.role, ",
    ts!("i.clerk_created_at"),
    ", i.data::jsonb, i.via, i.via, i.clerk_updated_at, now(), now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], $8::int8[])
     AS i(clerk_id, organization_clerk_id, user_clerk_id, role, clerk_created_at, data, via, clerk_updated_at)
WHERE ",
    not_tombstoned!("i.clerk_id, i.organization_clerk_id, i.user_clerk_id"),
    "
ORDER BY i.clerk_id
ON CONFLICT (clerk_id) DO UPDATE SET
    organization_clerk_id = EXCLUDED.organization_clerk_id, user_clerk_id = EXCLUDED.user_clerk_id,
    role = EXCLUDED.role, clerk_created_at = EXCLUDED.clerk_created_at, data = EXCLUDED.data,
    updated_via = EXCLUDED.updated_via, clerk_updated_at = EXCLUDED.clerk_updated_at, updated_at = now()
WHERE m.deleted_at IS NULL AND (m.clerk_updated_at IS NULL OR m.clerk_updated_at < EXCLUDED.clerk_updated_at)
RETURNING m.clerk_id, (m.xmax = 0)"
);

/// `upsert` (which ends `RETURNING <alias>.clerk_id, (<alias>.xmax = 0)`) as one statement that also appends
/// a feed row for every row it wrote — `created` for an insert, `updated` otherwise — and returns the highest
/// seq beside each written id. Parameters `$lock` and `$lock + 1` are the feed lock, taken (shared) before the
/// first seq is handed out: every feed row joins the lock's one row.
fn with_feed(upsert: &str, alias: &str, kind: &str, lock: usize) -> String {
    let returning = format!("RETURNING {alias}.clerk_id, ({alias}.xmax = 0)");
    let body = upsert.strip_suffix(returning.as_str()).unwrap_or(upsert);
    format!(
        "WITH up AS ({body} RETURNING {alias}.clerk_id, ({alias}.xmax = 0) AS created, {alias}.updated_via AS via), \
         feed AS (INSERT INTO clerk_sync_changes (kind, clerk_id, op, via) \
                  SELECT '{kind}', up.clerk_id, CASE WHEN up.created THEN 'created' ELSE 'updated' END, up.via \
                  FROM (SELECT pg_advisory_xact_lock_shared(${lock}, ${})) AS lock, up \
                  ORDER BY up.clerk_id RETURNING seq) \
         SELECT up.clerk_id, up.created, (SELECT max(seq) FROM feed) FROM up",
        lock + 1
    )
}

static UPSERT_USERS_FEED: LazyLock<String> = LazyLock::new(|| with_feed(UPSERT_USERS, "u", "user", 17));
static UPSERT_ORGANIZATIONS_FEED: LazyLock<String> =
    LazyLock::new(|| with_feed(UPSERT_ORGANIZATIONS, "o", "organization", 12));
static UPSERT_MEMBERSHIPS_FEED: LazyLock<String> =
    LazyLock::new(|| with_feed(UPSERT_MEMBERSHIPS, "m", "membership", 9));

/// Runs an upsert built with `sqlx::query_as`, with the feed (its statement ends in the lock's parameters) or
/// without; returns the written ids (`true`: created) and the highest feed seq.
macro_rules! run_upsert {
    ($tx:expr, $feed:expr, $plain:expr, $with_feed:expr, |$q:ident| $binds:expr) => {{
        if $feed {
            let $q = sqlx::query_as::<_, (String, bool, Option<i64>)>($with_feed.as_str());
            let rows = $binds.bind(FEED_LOCK.0).bind(FEED_LOCK.1).fetch_all(&mut *$tx).await?;
            let seq = rows.iter().filter_map(|r| r.2).max();
            Ok((rows.into_iter().map(|(id, created, _)| (id, created)).collect(), seq))
        } else {
            let $q = sqlx::query_as::<_, (String, bool)>($plain);
            let rows = $binds.fetch_all(&mut *$tx).await?;
            Ok((rows.into_iter().collect(), None))
        }
    }};
}

/// What an upsert wrote: ids (`true`: created), and the highest feed seq when it appended to the feed.
type Written = (HashMap<String, bool>, Option<i64>);

/// A JSON value's text, for a `::jsonb` cast in SQL (binding text needs no sqlx JSON feature): borrowed, not
/// serialized again.
fn json_text(value: Option<&crate::store::RawJson>) -> Option<&str> {
    value.map(crate::store::RawJson::as_str)
}

pub(super) async fn users(tx: &mut PgConnection, rows: &[NewUser<'_>], feed: bool) -> Result<Written, sqlx::Error> {
    let text = |f: fn(&crate::store::UserData) -> Option<&str>| -> Vec<Option<&str>> {
        rows.iter().map(|r| f(r.row)).collect()
    };
    run_upsert!(tx, feed, UPSERT_USERS, UPSERT_USERS_FEED, |q| q
        .bind(rows.iter().map(|r| r.row.clerk_id.as_str()).collect::<Vec<_>>())
        .bind(text(|u| u.email.as_deref()))
        .bind(text(|u| u.first_name.as_deref()))
        .bind(text(|u| u.last_name.as_deref()))
        .bind(rows.iter().map(|r| r.row.name()).collect::<Vec<_>>())
        .bind(text(|u| u.username.as_deref()))
        .bind(text(|u| u.image_url.as_deref()))
        .bind(text(|u| u.phone_number.as_deref()))
        .bind(text(|u| u.external_id.as_deref()))
        .bind(
            rows.iter()
                .map(|r| json_text(r.row.public_metadata.as_ref()))
                .collect::<Vec<_>>()
        )
        .bind(rows.iter().map(|r| r.row.banned).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.row.last_sign_in_at_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.row.clerk_created_at_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| json_text(r.row.data.as_ref())).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.via.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.row.clerk_updated_at).collect::<Vec<_>>()))
}

pub(super) async fn organizations(
    tx: &mut PgConnection,
    rows: &[NewOrganization<'_>],
    feed: bool,
) -> Result<Written, sqlx::Error> {
    run_upsert!(tx, feed, UPSERT_ORGANIZATIONS, UPSERT_ORGANIZATIONS_FEED, |q| q
        .bind(rows.iter().map(|r| r.row.clerk_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.row.name.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.row.slug.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.row.image_url.as_deref()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| json_text(r.row.public_metadata.as_ref()))
                .collect::<Vec<_>>()
        )
        .bind(rows.iter().map(|r| r.row.members_count).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.row.clerk_created_at_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| json_text(r.row.data.as_ref())).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.via.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.row.clerk_updated_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.row.embedded).collect::<Vec<_>>()))
}

pub(super) async fn memberships(
    tx: &mut PgConnection,
    rows: &[NewMembership<'_>],
    feed: bool,
) -> Result<Written, sqlx::Error> {
    run_upsert!(tx, feed, UPSERT_MEMBERSHIPS, UPSERT_MEMBERSHIPS_FEED, |q| q
        .bind(rows.iter().map(|r| r.row.clerk_id.as_str()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.row.organization_clerk_id.as_str())
                .collect::<Vec<_>>()
        )
        .bind(rows.iter().map(|r| r.row.user_clerk_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.row.role.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.row.clerk_created_at_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| json_text(r.row.data.as_ref())).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.via.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.row.clerk_updated_at).collect::<Vec<_>>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_variants_keep_the_upserts_and_number_the_lock_after_their_parameters() {
        for (sql, plain, lock) in [
            (&*UPSERT_USERS_FEED, UPSERT_USERS, "$17, $18"),
            (&*UPSERT_ORGANIZATIONS_FEED, UPSERT_ORGANIZATIONS, "$12, $13"),
            (&*UPSERT_MEMBERSHIPS_FEED, UPSERT_MEMBERSHIPS, "$9, $10"),
        ] {
            let body = &plain[..plain.rfind("RETURNING").expect("a RETURNING clause")];
            assert!(sql.contains(body.trim_end()), "{sql}");
            assert!(sql.contains(&format!("pg_advisory_xact_lock_shared({lock})")), "{sql}");
            assert!(sql.ends_with("FROM up"), "{sql}");
            assert_eq!(
                sql.matches("RETURNING").count(),
                2,
                "the upsert's and the feed's: {sql}"
            );
        }
    }
}
