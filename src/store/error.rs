//! Storage errors, split by what the caller should do about them.

/// A storage failure. `Unavailable` means "try again later" (503 + `Retry-After`, Svix retries);
/// `Rejected` means the database refused this write (a constraint of the application's own columns, say).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database rejected the write: {0}")]
    Rejected(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The application's `users` table cannot be adopted; the message says why and what to do.
    #[error("{0}")]
    Adopt(String),
    #[error("database is not ready: {0}")]
    NotReady(String),
    /// The writer has shut down (only during shutdown).
    #[error("the write queue is closed")]
    Closed,
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::NotReady(_) | StoreError::Closed
        )
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_transient(&e) {
            StoreError::Unavailable(e)
        } else {
            StoreError::Rejected(e)
        }
    }
}

/// Whether an error says the database cannot be reached or used right now, rather than refusing this write.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLite (numeric, possibly extended) result codes: BUSY, LOCKED, IOERR, FULL, CANTOPEN, PROTOCOL.
                code.parse::<i32>()
                    .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 10 | 13 | 14 | 15))
            } else {
                // Postgres SQLSTATE classes: connection exception, insufficient resources, operator
                // intervention (shutdown, terminated backend), object not in prerequisite state (database
                // does not allow connections), transaction rollback (serialization, deadlock).
                ["08", "53", "57", "55", "40"].iter().any(|c| code.starts_with(c))
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_io_errors_are_transient() {
        assert!(StoreError::from(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(StoreError::from(sqlx::Error::Io(std::io::Error::other("reset"))).is_unavailable());
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_unavailable());
    }
}
