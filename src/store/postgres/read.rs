//! Reads of the Postgres backend: one record by clerk id, and pages of memberships. Timestamps come back as
//! RFC 3339 UTC text and JSON columns as text, so both backends return the same shape.

use sqlx::postgres::PgConnection;

use crate::store::sql::not_tombstoned;
use crate::store::{Kind, MembersOf, MembershipCursor, MembershipRow, OrganizationRow, Row, UserRow};

macro_rules! rfc3339 {
    ($col:literal) => {
        concat!(
            "to_char(",
            $col,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS ",
            $col
        )
    };
}

/// The bookkeeping columns every synced table has.
macro_rules! bookkeeping {
    () => {
        concat!(
            "created_via, updated_via, clerk_updated_at, ",
            rfc3339!("clerk_created_at"),
            ", ",
            rfc3339!("deleted_at"),
            ", ",
            rfc3339!("created_at"),
            ", ",
            rfc3339!("updated_at")
        )
    };
}

const USER: &str = concat!(
    "SELECT id::text AS id, clerk_id, email, first_name, last_name, name, username, image_url, phone_number, \
     external_id, public_metadata::text AS public_metadata, banned, ",
    rfc3339!("last_sign_in_at"),
    ", ",
    bookkeeping!(),
    " FROM users WHERE clerk_id = $1"
);

const ORGANIZATION: &str = concat!(
    "SELECT id::text AS id, clerk_id, name, slug, image_url, public_metadata::text AS public_metadata, \
     members_count, ",
    bookkeeping!(),
    " FROM organizations WHERE clerk_id = $1"
);

const MEMBERSHIP_COLUMNS: &str = concat!(
    "SELECT id::text AS id, clerk_id, organization_clerk_id, user_clerk_id, role, ",
    bookkeeping!(),
    " FROM organization_memberships m"
);

/// The row of `clerk_id`, soft-deleted or not.
pub(super) async fn row(conn: &mut PgConnection, kind: Kind, clerk_id: &str) -> Result<Option<Row>, sqlx::Error> {
    Ok(match kind {
        Kind::User => sqlx::query_as::<_, UserRow>(USER)
            .bind(clerk_id)
            .fetch_optional(conn)
            .await?
            .map(Row::User),
        Kind::Organization => sqlx::query_as::<_, OrganizationRow>(ORGANIZATION)
            .bind(clerk_id)
            .fetch_optional(conn)
            .await?
            .map(Row::Organization),
        Kind::Membership => sqlx::query_as::<_, MembershipRow>(&format!("{MEMBERSHIP_COLUMNS} WHERE clerk_id = $1"))
            .bind(clerk_id)
            .fetch_optional(conn)
            .await?
            .map(Row::Membership),
    })
}

/// Live memberships newest first (Clerk's `created_at`, then clerk id), after `cursor`. A membership whose
/// organization or user is deleted is not live, whether or not its own delete event has arrived.
pub(super) async fn memberships(
    conn: &mut PgConnection,
    of: MembersOf<'_>,
    after: Option<&MembershipCursor>,
    limit: i64,
) -> Result<Vec<MembershipRow>, sqlx::Error> {
    let (column, id) = match of {
        MembersOf::Organization(id) => ("organization_clerk_id", id),
        MembersOf::User(id) => ("user_clerk_id", id),
    };
    let key = "coalesce(to_char(m.clerk_created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), '')";
    let parents_live = not_tombstoned!("m.organization_clerk_id, m.user_clerk_id");
    let sql = format!(
        "{MEMBERSHIP_COLUMNS} WHERE m.{column} = $1 AND m.deleted_at IS NULL \
         AND {parents_live} \
         AND ($2::text IS NULL OR ({key}, m.clerk_id) < ($2::text, $3::text)) \
         ORDER BY {key} DESC, m.clerk_id DESC LIMIT $4"
    );
    sqlx::query_as(&sql)
        .bind(id)
        .bind(after.map(|c| c.created_at.as_str()))
        .bind(after.map(|c| c.clerk_id.as_str()))
        .bind(limit)
        .fetch_all(conn)
        .await
}
