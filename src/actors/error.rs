//! Why a fallback lookup gave no record: shared by the flight (`fallback`) and the jobs it runs in a user's actor (`job`).

use std::time::Duration;

use crate::clerk::ClerkError;
use crate::store::writer::WriteError;
use crate::store::StoreError;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FallbackError {
    #[error("Clerk has no such record")]
    NotFound,
    #[error("the record was deleted")]
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
            ClerkError::Refused { .. } | ClerkError::Malformed(_) => FallbackError::ClerkFailed(e.to_string()),
        }
    }
}
