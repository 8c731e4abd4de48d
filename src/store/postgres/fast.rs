//! The common batch in one round trip: users created or updated (webhooks, the fallback), nothing else, each record
//! and svix id once. `clerk_sync_apply_users` (migration `20261207000002_apply_users.sql`) does what
//! `store::sql::apply_all` does for such a batch, as one statement in autocommit, where the general path takes
//! BEGIN, the lock statement, the deliveries, the upsert with its feed rows and COMMIT: five round trips and two
//! transaction-control messages per batch. Every other batch — deletes, organizations, memberships, ignored
//! deliveries, a record twice, a record whose prune tombstone the write may lift — goes the general way.

use std::collections::HashSet;

use sqlx::postgres::PgPool;

use super::FEED_LOCK;
use crate::store::{Change, Entity, Outcome, UserData};

/// The batch's users when it is one the function applies, else `None`.
pub(super) fn users(batch: &[Change]) -> Option<Vec<(&UserData, &Change)>> {
    let mut users = Vec::with_capacity(batch.len());
    let (mut ids, mut svix) = (HashSet::with_capacity(batch.len()), HashSet::with_capacity(batch.len()));
    for change in batch {
        let Change::Upsert {
            entity: Entity::User(user),
            delivery,
            ..
        } = change
        else {
            return None;
        };
        if !ids.insert(user.clerk_id.as_str()) {
            return None;
        }
        if let Some(d) = delivery {
            if !svix.insert(d.svix_id.as_str()) {
                return None;
            }
        }
        users.push((user, change));
    }
    (!users.is_empty()).then_some(users)
}

type Row = (String, String, Option<String>, Option<i64>);

/// The delivery a change records, if any.
fn delivery(change: &Change) -> Option<&crate::store::Delivery> {
    match change {
        Change::Upsert { delivery, .. } => delivery.as_ref(),
        _ => None,
    }
}

/// Applies `users` (from [`users`]); `None` when the function declined (a record has a prune tombstone) and wrote
/// nothing. Returns the outcomes in order and the highest feed seq written.
pub(super) async fn apply(
    pool: &PgPool,
    users: &[(&UserData, &Change)],
    feed: bool,
) -> Result<Option<(Vec<Outcome>, Option<i64>)>, sqlx::Error> {
    let text = |f: fn(&UserData) -> Option<&str>| -> Vec<Option<&str>> { users.iter().map(|(u, _)| f(u)).collect() };
    let json = |f: fn(&UserData) -> Option<&crate::store::RawJson>| -> Vec<Option<&str>> {
        users
            .iter()
            .map(|(u, _)| f(u).map(crate::store::RawJson::as_str))
            .collect()
    };
    let via: Vec<&str> = users
        .iter()
        .map(|(_, c)| match c {
            Change::Upsert { via, .. } => via.as_str(),
            _ => "webhook",
        })
        .collect();
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT clerk_id, outcome, prior, seq FROM clerk_sync_apply_users($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
         $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
    )
    .bind(users.iter().map(|(u, _)| u.clerk_id.as_str()).collect::<Vec<_>>())
    .bind(text(|u| u.email.as_deref()))
    .bind(text(|u| u.first_name.as_deref()))
    .bind(text(|u| u.last_name.as_deref()))
    .bind(users.iter().map(|(u, _)| u.name()).collect::<Vec<_>>())
    .bind(text(|u| u.username.as_deref()))
    .bind(text(|u| u.image_url.as_deref()))
    .bind(text(|u| u.phone_number.as_deref()))
    .bind(text(|u| u.external_id.as_deref()))
    .bind(json(|u| u.public_metadata.as_ref()))
    .bind(users.iter().map(|(u, _)| u.banned).collect::<Vec<_>>())
    .bind(users.iter().map(|(u, _)| u.last_sign_in_at_ms).collect::<Vec<_>>())
    .bind(users.iter().map(|(u, _)| u.clerk_created_at_ms).collect::<Vec<_>>())
    .bind(json(|u| u.data.as_ref()))
    .bind(via)
    .bind(users.iter().map(|(u, _)| u.clerk_updated_at).collect::<Vec<_>>())
    .bind(
        users
            .iter()
            .map(|(_, c)| delivery(c).map(|d| d.svix_id.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(
        users
            .iter()
            .map(|(_, c)| delivery(c).map(|d| d.event_type.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(feed)
    .bind(FEED_LOCK.0)
    .bind(FEED_LOCK.1)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    if rows.len() != users.len() {
        return Err(sqlx::Error::Protocol(format!(
            "clerk_sync_apply_users answered {} rows for {} changes",
            rows.len(),
            users.len()
        )));
    }
    let seq = rows.iter().filter_map(|r| r.3).max();
    let outcomes = rows
        .into_iter()
        .map(|(_, outcome, prior, _)| match outcome.as_str() {
            "created" => Ok(Outcome::Created),
            "updated" => Ok(Outcome::Updated),
            "stale" => Ok(Outcome::Stale),
            "tombstoned" => Ok(Outcome::Tombstoned),
            "duplicate" => Ok(Outcome::Duplicate(prior.unwrap_or_else(|| "applied".into()))),
            other => Err(sqlx::Error::Protocol(format!(
                "clerk_sync_apply_users: outcome {other:?}"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((outcomes, seq)))
}
