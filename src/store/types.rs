//! The values that flow through storage: changes to apply, their outcomes, and users as read back.

/// Which path wrote a row; stored in `created_via` / `updated_via` and counted by the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Webhook,
    Fallback,
    Backfill,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::Fallback => "fallback",
            Source::Backfill => "backfill",
        }
    }
}

/// The daemon's own columns of one user, as Clerk last described them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserData {
    pub clerk_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    /// Clerk's `updated_at` in ms since the epoch: the ordering guard.
    pub clerk_updated_at: i64,
}

impl UserData {
    /// First and last name joined by a space; `None` when both are missing.
    pub fn name(&self) -> Option<String> {
        let parts: Vec<&str> = [&self.first_name, &self.last_name]
            .into_iter()
            .flatten()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// The Svix message a change came from; recorded in the same transaction, which makes redelivery a no-op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub svix_id: String,
    pub event_type: String,
    pub clerk_id: Option<String>,
}

/// What is recorded for a delivery that changes no user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordOnly {
    Ignored,
    InvalidPayload,
}

/// One unit of work for the writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Create or update, applied only when newer than the stored row and never over a tombstone.
    Upsert {
        user: UserData,
        via: Source,
        delivery: Option<Delivery>,
    },
    /// Tombstone the user; soft-delete (or, with `hard`, remove) the row.
    Delete {
        clerk_id: String,
        deleted_at_ms: i64,
        via: Source,
        hard: bool,
        delivery: Option<Delivery>,
    },
    /// Only remember that a delivery was seen.
    Record { delivery: Delivery, outcome: RecordOnly },
}

/// Postgres text cannot hold U+0000 (SQLite can): a user's own data must never make its writes fail for ever,
/// so NULs are dropped from every text the daemon writes, on both backends alike.
fn strip_nul(s: &mut String) {
    if s.contains('\0') {
        s.retain(|c| c != '\0');
    }
}

fn strip_nul_opt(s: &mut Option<String>) {
    if let Some(s) = s {
        strip_nul(s);
    }
}

impl UserData {
    pub fn strip_nul(&mut self) {
        strip_nul(&mut self.clerk_id);
        for field in [
            &mut self.email,
            &mut self.first_name,
            &mut self.last_name,
            &mut self.username,
            &mut self.image_url,
        ] {
            strip_nul_opt(field);
        }
    }
}

impl Delivery {
    fn strip_nul(&mut self) {
        strip_nul(&mut self.svix_id);
        strip_nul(&mut self.event_type);
        strip_nul_opt(&mut self.clerk_id);
    }
}

impl Change {
    /// Drops U+0000 from every text of the change (see [`UserData::strip_nul`]).
    pub fn strip_nul(&mut self) {
        match self {
            Change::Upsert { user, delivery, .. } => {
                user.strip_nul();
                delivery.iter_mut().for_each(Delivery::strip_nul);
            }
            Change::Delete { clerk_id, delivery, .. } => {
                strip_nul(clerk_id);
                delivery.iter_mut().for_each(Delivery::strip_nul);
            }
            Change::Record { delivery, .. } => delivery.strip_nul(),
        }
    }

    pub(super) fn delivery(&self) -> Option<&Delivery> {
        match self {
            Change::Upsert { delivery, .. } | Change::Delete { delivery, .. } => delivery.as_ref(),
            Change::Record { delivery, .. } => Some(delivery),
        }
    }

    /// The user this change writes, if any.
    pub(super) fn clerk_id(&self) -> Option<&str> {
        match self {
            Change::Upsert { user, .. } => Some(&user.clerk_id),
            Change::Delete { clerk_id, .. } => Some(clerk_id),
            Change::Record { .. } => None,
        }
    }
}

/// What applying a [`Change`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    /// Older than (or as old as) the stored row: nothing changed.
    Stale,
    /// The user is deleted: nothing brings it back.
    Tombstoned,
    Deleted,
    Recorded(RecordOnly),
    /// This svix id was processed before; carries the outcome stored then.
    Duplicate(String),
}

impl Outcome {
    /// The value of `clerk_sync_deliveries.outcome` for this result.
    pub fn delivery_outcome(&self) -> &str {
        match self {
            Outcome::Created | Outcome::Updated | Outcome::Deleted => "applied",
            Outcome::Stale => "stale",
            Outcome::Tombstoned => "tombstoned",
            Outcome::Recorded(RecordOnly::Ignored) => "ignored",
            Outcome::Recorded(RecordOnly::InvalidPayload) => "invalid_payload",
            Outcome::Duplicate(prior) => prior,
        }
    }
}

/// A user as the API returns it: every daemon-owned column. Timestamps are RFC 3339 strings in UTC.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub clerk_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    pub created_via: String,
    pub updated_via: Option<String>,
    pub clerk_updated_at: Option<i64>,
    pub deleted_at: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// What the database knows about one clerk id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(std::sync::Arc<UserRow>),
    /// Deleted in Clerk (soft-deleted row, or a tombstone without a row): never re-created.
    Tombstoned,
    Missing,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(first: Option<&str>, last: Option<&str>) -> UserData {
        UserData {
            clerk_id: "user_1".into(),
            email: None,
            first_name: first.map(Into::into),
            last_name: last.map(Into::into),
            username: None,
            image_url: None,
            clerk_updated_at: 1,
        }
    }

    #[test]
    fn name_joins_present_parts() {
        assert_eq!(
            user(Some("Ada"), Some("Lovelace")).name().as_deref(),
            Some("Ada Lovelace")
        );
        assert_eq!(user(Some("Ada"), None).name().as_deref(), Some("Ada"));
        assert_eq!(user(None, Some("Lovelace")).name().as_deref(), Some("Lovelace"));
        assert_eq!(user(None, None).name(), None);
        assert_eq!(user(Some(" "), None).name(), None);
    }

    #[test]
    fn nul_characters_are_dropped_from_every_text() {
        let mut change = Change::Upsert {
            user: UserData {
                email: Some("a\0@example.com".into()),
                ..user(Some("A\0B"), Some("\0"))
            },
            via: Source::Webhook,
            delivery: Some(Delivery {
                svix_id: "msg_\u{0}1".into(),
                event_type: "user.created".into(),
                clerk_id: Some("user_1\0".into()),
            }),
        };
        change.strip_nul();
        let Change::Upsert { user, delivery, .. } = change else {
            unreachable!("still an upsert")
        };
        assert_eq!(user.first_name.as_deref(), Some("AB"));
        assert_eq!(user.last_name.as_deref(), Some(""));
        assert_eq!(user.email.as_deref(), Some("a@example.com"));
        let delivery = delivery.expect("delivery kept");
        assert_eq!(delivery.svix_id, "msg_1");
        assert_eq!(delivery.clerk_id.as_deref(), Some("user_1"));
    }

    #[test]
    fn delivery_outcomes_name_the_stored_values() {
        assert_eq!(Outcome::Created.delivery_outcome(), "applied");
        assert_eq!(Outcome::Deleted.delivery_outcome(), "applied");
        assert_eq!(Outcome::Stale.delivery_outcome(), "stale");
        assert_eq!(Outcome::Tombstoned.delivery_outcome(), "tombstoned");
        assert_eq!(
            Outcome::Recorded(RecordOnly::InvalidPayload).delivery_outcome(),
            "invalid_payload"
        );
        assert_eq!(Outcome::Duplicate("ignored".into()).delivery_outcome(), "ignored");
    }
}
