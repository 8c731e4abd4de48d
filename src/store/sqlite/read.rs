//! Reads of the SQLite backend: one record by clerk id, and pages of memberships.

use sqlx::sqlite::SqliteConnection;

use crate::store::sql::not_tombstoned;
use crate::store::{Kind, MembersOf, MembershipCursor, MembershipRow, OrganizationRow, Row, UserRow};

const BOOKKEEPING: &str =
    "created_via, updated_via, clerk_updated_at, clerk_created_at, deleted_at, created_at, updated_at";

/// The row of `clerk_id`, soft-deleted or not.
pub(super) async fn row(conn: &mut SqliteConnection, kind: Kind, clerk_id: &str) -> Result<Option<Row>, sqlx::Error> {
    Ok(match kind {
        Kind::User => sqlx::query_as::<_, UserRow>(&format!(
            "SELECT CAST(id AS TEXT) AS id, clerk_id, email, first_name, last_name, name, username, image_url, \
             phone_number, external_id, public_metadata, banned, last_sign_in_at, {BOOKKEEPING} \
             FROM users WHERE clerk_id = ?1"
        ))
        .bind(clerk_id)
        .fetch_optional(conn)
        .await?
        .map(Row::User),
        Kind::Organization => sqlx::query_as::<_, OrganizationRow>(&format!(
            "SELECT CAST(id AS TEXT) AS id, clerk_id, name, slug, image_url, public_metadata, members_count, \
             {BOOKKEEPING} FROM organizations WHERE clerk_id = ?1"
        ))
        .bind(clerk_id)
        .fetch_optional(conn)
        .await?
        .map(Row::Organization),
        Kind::Membership => sqlx::query_as::<_, MembershipRow>(&format!(
            "SELECT CAST(id AS TEXT) AS id, clerk_id, organization_clerk_id, user_clerk_id, role, {BOOKKEEPING} \
             FROM organization_memberships WHERE clerk_id = ?1"
        ))
        .bind(clerk_id)
        .fetch_optional(conn)
        .await?
        .map(Row::Membership),
    })
}

/// Live memberships newest first (Clerk's `created_at`, then clerk id), after `cursor`; as on Postgres, a
/// membership whose organization or user is deleted is not live.
pub(super) async fn memberships(
    conn: &mut SqliteConnection,
    of: MembersOf<'_>,
    after: Option<&MembershipCursor>,
    limit: i64,
) -> Result<Vec<MembershipRow>, sqlx::Error> {
    let (column, id) = match of {
        MembersOf::Organization(id) => ("organization_clerk_id", id),
        MembersOf::User(id) => ("user_clerk_id", id),
    };
    let parents_live = not_tombstoned!("m.organization_clerk_id, m.user_clerk_id");
    let sql = format!(
        "SELECT CAST(id AS TEXT) AS id, clerk_id, organization_clerk_id, user_clerk_id, role, {BOOKKEEPING} \
         FROM organization_memberships m WHERE m.{column} = ?1 AND m.deleted_at IS NULL \
         AND {parents_live} \
         AND (?2 IS NULL OR (coalesce(m.clerk_created_at, ''), m.clerk_id) < (?2, ?3)) \
         ORDER BY coalesce(m.clerk_created_at, '') DESC, m.clerk_id DESC LIMIT ?4"
    );
    sqlx::query_as(&sql)
        .bind(id)
        .bind(after.map(|c| c.created_at.as_str()))
        .bind(after.map(|c| c.clerk_id.as_str()))
        .bind(limit)
        .fetch_all(conn)
        .await
}
