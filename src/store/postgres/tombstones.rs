//! Tombstones on Postgres: who has one, making them (and making a prune's final when Clerk announces the
//! deletion), and lifting a prune's (see `store::sql::lift`).

use std::collections::{HashMap, HashSet};

use sqlx::postgres::PgConnection;

use crate::store::sql::{not_tombstoned, Lift, Removal};
use crate::store::Kind;

pub(super) async fn tombstoned(conn: &mut PgConnection, clerk_ids: &[&str]) -> Result<HashSet<String>, sqlx::Error> {
    let found: Vec<String> = sqlx::query_scalar("SELECT clerk_id FROM clerk_sync_tombstones WHERE clerk_id = ANY($1)")
        .bind(clerk_ids)
        .fetch_all(conn)
        .await?;
    Ok(found.into_iter().collect())
}

/// Whether `clerk_id` has a tombstone, and if so whether a prune made it.
pub(super) async fn tomb(conn: &mut PgConnection, clerk_id: &str) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar("SELECT prune_run IS NOT NULL FROM clerk_sync_tombstones WHERE clerk_id = $1")
        .bind(clerk_id)
        .fetch_optional(conn)
        .await
}

pub(super) async fn pruned(
    conn: &mut PgConnection,
    clerk_ids: &[&str],
) -> Result<HashMap<String, Option<i64>>, sqlx::Error> {
    let found: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT t.clerk_id, coalesce(u.clerk_updated_at, o.clerk_updated_at, m.clerk_updated_at) \
         FROM clerk_sync_tombstones t \
         LEFT JOIN users u ON u.clerk_id = t.clerk_id \
         LEFT JOIN organizations o ON o.clerk_id = t.clerk_id \
         LEFT JOIN organization_memberships m ON m.clerk_id = t.clerk_id \
         WHERE t.clerk_id = ANY($1) AND t.prune_run IS NOT NULL",
    )
    .bind(clerk_ids)
    .fetch_all(conn)
    .await?;
    Ok(found.into_iter().collect())
}

pub(super) async fn insert(conn: &mut PgConnection, rows: &[Removal<'_>]) -> Result<HashSet<String>, sqlx::Error> {
    let ids: Vec<&str> = rows.iter().map(|r| r.clerk_id).collect();
    let at: Vec<i64> = rows.iter().map(|r| r.deleted_at_ms).collect();
    let runs: Vec<Option<&str>> = rows.iter().map(|r| r.prune_run).collect();
    let parents: Vec<Option<&str>> = rows.iter().map(|r| r.cascade_of).collect();
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO clerk_sync_tombstones AS t (clerk_id, deleted_at_ms, prune_run, cascade_of) \
         SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[]) ORDER BY 1 \
         ON CONFLICT (clerk_id) DO UPDATE SET deleted_at_ms = excluded.deleted_at_ms, prune_run = NULL, \
             cascade_of = NULL, recorded_at = now() \
         WHERE t.prune_run IS NOT NULL AND excluded.prune_run IS NULL \
         RETURNING clerk_id",
    )
    .bind(ids)
    .bind(at)
    .bind(runs)
    .bind(parents)
    .fetch_all(conn)
    .await?;
    Ok(inserted.into_iter().collect())
}

pub(super) async fn lift(conn: &mut PgConnection, which: Lift<'_>) -> Result<Vec<String>, sqlx::Error> {
    match which {
        Lift::Records(ids) => {
            sqlx::query_scalar(
                "DELETE FROM clerk_sync_tombstones \
                 WHERE prune_run IS NOT NULL AND (clerk_id = ANY($1) OR cascade_of = ANY($1)) RETURNING clerk_id",
            )
            .bind(ids)
            .fetch_all(conn)
            .await
        }
        Lift::Run(run) => {
            sqlx::query_scalar("DELETE FROM clerk_sync_tombstones WHERE prune_run = $1 RETURNING clerk_id")
                .bind(run)
                .fetch_all(conn)
                .await
        }
    }
}

pub(super) async fn restore(
    conn: &mut PgConnection,
    kind: Kind,
    clerk_ids: &[&str],
    forget: bool,
) -> Result<Vec<String>, sqlx::Error> {
    let covered = match kind {
        Kind::Membership => not_tombstoned!("r.clerk_id, r.organization_clerk_id, r.user_clerk_id"),
        Kind::User | Kind::Organization => not_tombstoned!("r.clerk_id"),
    };
    let forget = if forget { ", clerk_updated_at = NULL" } else { "" };
    // The table name comes from `Kind`, never from input.
    sqlx::query_scalar(&format!(
        "UPDATE {} r SET deleted_at = NULL, updated_at = now(){forget} \
         WHERE r.clerk_id = ANY($1) AND r.deleted_at IS NOT NULL AND {covered} RETURNING r.clerk_id",
        kind.table()
    ))
    .bind(clerk_ids)
    .fetch_all(conn)
    .await
}
