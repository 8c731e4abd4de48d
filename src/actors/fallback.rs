//! The fallback path, run inside a user's actor: get-or-create from Clerk, and on-demand re-sync.
//!
//! Because it runs in the actor, N concurrent requests for one unknown user queue behind the first: it calls
//! Clerk once and inserts; the others then find the row (in the cache) — single flight without extra locks.

use std::sync::Arc;
use std::time::Duration;

use super::user::UserState;
use crate::clerk::ClerkError;
use crate::store::writer::WriteError;
use crate::store::{Change, Lookup, Outcome, Source, Store, StoreError, UserRow};

/// What a fallback request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchMode {
    /// Return the stored user, creating it from Clerk when missing.
    GetOrCreate,
    /// Fetch from Clerk now and apply under the ordering guard and tombstone rule.
    Sync,
}

/// A user returned by the fallback path, and where it came from.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub row: Arc<UserRow>,
    pub hit: Hit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hit {
    /// Filled by an earlier request while this one waited in the actor's mailbox.
    Cache,
    Database,
    /// This request fetched the user from Clerk (and, unless `Created`, found the row already there).
    Clerk,
    /// This request inserted the row.
    Created,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FallbackError {
    #[error("Clerk has no such user")]
    NotFound,
    #[error("the user was deleted")]
    Gone,
    #[error("CLERK_SECRET_KEY is not configured")]
    NotConfigured,
    #[error("Clerk is unavailable")]
    ClerkUnavailable(Option<Duration>),
    #[error("Clerk answered unexpectedly: {0}")]
    ClerkFailed(String),
    #[error("{0}")]
    Store(WriteError),
}

impl From<StoreError> for FallbackError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "fallback: database read failed");
        FallbackError::Store(WriteError::from(&e))
    }
}

impl From<ClerkError> for FallbackError {
    fn from(e: ClerkError) -> Self {
        match e {
            ClerkError::NotFound => FallbackError::NotFound,
            ClerkError::NotConfigured => FallbackError::NotConfigured,
            ClerkError::Unavailable(_) | ClerkError::RateLimited(_) => FallbackError::ClerkUnavailable(e.retry_after()),
            ClerkError::Refused(_) | ClerkError::Malformed(_) => FallbackError::ClerkFailed(e.to_string()),
        }
    }
}

pub(super) async fn fetch(state: &UserState, mode: FetchMode) -> Result<Fetched, FallbackError> {
    let id = state.clerk_id.as_str();
    let common = &state.common;
    if mode == FetchMode::GetOrCreate {
        // Requests queued behind the one that created the row are answered from here.
        if let Some(row) = common.cache.get(id).await {
            return Ok(Fetched { row, hit: Hit::Cache });
        }
    }
    // Both modes: a deleted user is gone, whatever Clerk says now (it answers 404 after a delete).
    let stored = common.db.lookup(id).await?;
    let row_exists = matches!(stored, Lookup::Found(_));
    match stored {
        Lookup::Tombstoned => return Err(FallbackError::Gone),
        Lookup::Found(row) if mode == FetchMode::GetOrCreate => {
            return Ok(Fetched {
                row: cache(state, row).await,
                hit: Hit::Database,
            })
        }
        Lookup::Missing if mode == FetchMode::GetOrCreate && common.cache.known_missing(id).await => {
            return Err(FallbackError::NotFound)
        }
        Lookup::Found(_) | Lookup::Missing => {}
    }
    let user = match common.clerk.get_user(id).await {
        Err(ClerkError::NotFound) => {
            // A stored row stays readable until its user.deleted arrives; only a true miss is remembered.
            if !row_exists {
                common.cache.remember_missing(id).await;
            }
            return Err(FallbackError::NotFound);
        }
        other => other?,
    };
    if user.id != id {
        return Err(FallbackError::ClerkFailed(format!(
            "asked for {id}, Clerk returned {}",
            user.id
        )));
    }
    let change = Change::Upsert {
        user: user.into_user_data(),
        via: Source::Fallback,
        delivery: None,
    };
    let outcome = common.writer.submit(change).await.map_err(FallbackError::Store)?;
    common.cache.invalidate(id).await;
    if outcome == Outcome::Created {
        tracing::info!(
            clerk_id = id,
            "user not found in the database; created from Clerk (fallback)"
        );
    }
    match common.db.lookup(id).await? {
        Lookup::Found(row) => Ok(Fetched {
            row: cache(state, row).await,
            hit: if outcome == Outcome::Created {
                Hit::Created
            } else {
                Hit::Clerk
            },
        }),
        Lookup::Tombstoned => Err(FallbackError::Gone),
        // Only a concurrent hard delete by another replica gets here.
        Lookup::Missing => Err(FallbackError::Gone),
    }
}

async fn cache(state: &UserState, row: Arc<UserRow>) -> Arc<UserRow> {
    state.common.cache.put(row.clone()).await;
    row
}
