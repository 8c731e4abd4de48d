//! The values that flow through storage: changes to apply, their outcomes, and users as read back.

use super::RawJson;

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

/// The three kinds of Clerk records clerk-sync keeps, told apart by their id's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    User,
    Organization,
    Membership,
}

impl Kind {
    /// The kind an id names (`user_…`, `org_…`, `orgmem_…`); `None` for anything else.
    pub fn of(clerk_id: &str) -> Option<Kind> {
        // `orgmem_` before `org_`: the shorter prefix is not one of the longer one's.
        if clerk_id.starts_with("orgmem_") {
            Some(Kind::Membership)
        } else if clerk_id.starts_with("org_") {
            Some(Kind::Organization)
        } else if clerk_id.starts_with("user_") {
            Some(Kind::User)
        } else {
            None
        }
    }

    /// The table holding this kind's rows.
    pub fn table(self) -> &'static str {
        match self {
            Kind::User => "users",
            Kind::Organization => "organizations",
            Kind::Membership => "organization_memberships",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Organization => "organization",
            Kind::Membership => "membership",
        }
    }
}

/// The daemon's own columns of one user, as Clerk last described them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserData {
    pub clerk_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    /// The entry of `phone_numbers` whose id is `primary_phone_number_id`.
    pub phone_number: Option<String>,
    pub external_id: Option<String>,
    pub public_metadata: Option<RawJson>,
    pub banned: Option<bool>,
    /// Clerk's `last_sign_in_at` and `created_at`, ms since the epoch.
    pub last_sign_in_at_ms: Option<i64>,
    pub clerk_created_at_ms: Option<i64>,
    /// The whole Clerk user object as applied (dropped before the write when `sync.store_payload` is off).
    pub data: Option<RawJson>,
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

/// The columns of one organization.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrganizationData {
    pub clerk_id: String,
    pub name: Option<String>,
    pub slug: Option<String>,
    pub image_url: Option<String>,
    pub public_metadata: Option<RawJson>,
    /// Only when Clerk sends it (the Backend API includes it on request; webhooks usually do not).
    pub members_count: Option<i64>,
    pub clerk_created_at_ms: Option<i64>,
    pub data: Option<RawJson>,
    pub clerk_updated_at: i64,
    /// A membership event's copy of its organization rather than the organization's own event or Clerk's API.
    /// Clerk changes `members_count` without changing `updated_at`, so at an equal `updated_at` the own event wins
    /// over a copy, and a copy brings only its count (stored in column `embedded`, for the guard to tell).
    pub embedded: bool,
}

/// The columns of one organization membership.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipData {
    pub clerk_id: String,
    pub organization_clerk_id: String,
    pub user_clerk_id: String,
    pub role: Option<String>,
    pub clerk_created_at_ms: Option<i64>,
    pub data: Option<RawJson>,
    pub clerk_updated_at: i64,
}

/// One Clerk record to create or update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entity {
    User(UserData),
    Organization(OrganizationData),
    Membership(MembershipData),
}

impl Entity {
    pub fn clerk_id(&self) -> &str {
        match self {
            Entity::User(u) => &u.clerk_id,
            Entity::Organization(o) => &o.clerk_id,
            Entity::Membership(m) => &m.clerk_id,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Entity::User(_) => Kind::User,
            Entity::Organization(_) => Kind::Organization,
            Entity::Membership(_) => Kind::Membership,
        }
    }

    /// Clerk's `updated_at` (ms): the ordering guard.
    pub fn clerk_updated_at(&self) -> i64 {
        match self {
            Entity::User(u) => u.clerk_updated_at,
            Entity::Organization(o) => o.clerk_updated_at,
            Entity::Membership(m) => m.clerk_updated_at,
        }
    }

    pub(super) fn data_mut(&mut self) -> &mut Option<RawJson> {
        match self {
            Entity::User(u) => &mut u.data,
            Entity::Organization(o) => &mut o.data,
            Entity::Membership(m) => &mut m.data,
        }
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
    /// Sent by another Clerk instance than the one the database mirrors (see `clerk::pin`).
    WrongInstance,
}

/// One unit of work for the writer.
// `Record` is the rare variant (ignored and invalid deliveries); boxing the common one would cost an allocation
// per change.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Create or update, applied only when newer than the stored row and never over a tombstone.
    Upsert {
        entity: Entity,
        via: Source,
        delivery: Option<Delivery>,
    },
    /// Tombstone the record; soft-delete (or, with `hard`, remove) the row.
    Delete {
        kind: Kind,
        clerk_id: String,
        deleted_at_ms: i64,
        via: Source,
        hard: bool,
        delivery: Option<Delivery>,
        /// The prune run that inferred this deletion (`backfill --prune`, `reconcile.prune`); `None` when Clerk
        /// announced it. A prune's tombstone is lifted when Clerk shows the record alive; an announced one is final.
        pruned_by: Option<String>,
    },
    /// Only remember that a delivery was seen.
    Record { delivery: Delivery, outcome: RecordOnly },
}

impl Change {
    pub(super) fn delivery(&self) -> Option<&Delivery> {
        match self {
            Change::Upsert { delivery, .. } | Change::Delete { delivery, .. } => delivery.as_ref(),
            Change::Record { delivery, .. } => Some(delivery),
        }
    }

    /// The records whose writes this change must not interleave with (each transaction locks them, so other
    /// connections and replicas wait): its own, and for a membership also its organization and user, whose
    /// deletes delete it. Without those two a membership made while its user is deleted could miss the delete
    /// and stay live.
    pub(super) fn lock_ids(&self) -> impl Iterator<Item = &str> {
        let parents = match self {
            Change::Upsert {
                entity: Entity::Membership(m),
                ..
            } => [Some(m.organization_clerk_id.as_str()), Some(m.user_clerk_id.as_str())],
            _ => [None, None],
        };
        self.clerk_id().into_iter().chain(parents.into_iter().flatten())
    }

    /// The record this change writes, if any.
    pub fn clerk_id(&self) -> Option<&str> {
        match self {
            Change::Upsert { entity, .. } => Some(entity.clerk_id()),
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
            Outcome::Recorded(RecordOnly::WrongInstance) => "wrong_instance",
            Outcome::Duplicate(prior) => prior,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(first: Option<&str>, last: Option<&str>) -> UserData {
        UserData {
            clerk_id: "user_1".into(),
            first_name: first.map(Into::into),
            last_name: last.map(Into::into),
            clerk_updated_at: 1,
            ..UserData::default()
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
            entity: Entity::User(UserData {
                email: Some("a\0@example.com".into()),
                public_metadata: Some(serde_json::json!({"r\u{0}ole": ["ad\u{0}min", {"k": "\u{0}"}]}).into()),
                ..user(Some("A\0B"), Some("\0"))
            }),
            via: Source::Webhook,
            delivery: Some(Delivery {
                svix_id: "msg_\u{0}1".into(),
                event_type: "user.created".into(),
                clerk_id: Some("user_1\0".into()),
            }),
        };
        change.prepare(true);
        let Change::Upsert {
            entity: Entity::User(user),
            delivery,
            ..
        } = change
        else {
            unreachable!("still a user upsert")
        };
        assert_eq!(
            user.public_metadata.map(|m| m.to_value()),
            Some(serde_json::json!({"role": ["admin", {"k": ""}]})),
            "keys and nested strings alike"
        );
        assert_eq!(user.first_name.as_deref(), Some("AB"));
        assert_eq!(user.last_name.as_deref(), Some(""));
        assert_eq!(user.email.as_deref(), Some("a@example.com"));
        let delivery = delivery.expect("delivery kept");
        assert_eq!(delivery.svix_id, "msg_1");
        assert_eq!(delivery.clerk_id.as_deref(), Some("user_1"));
    }

    #[test]
    fn without_store_payload_the_clerk_object_is_dropped() {
        let mut change = Change::Upsert {
            entity: Entity::Organization(OrganizationData {
                clerk_id: "org_1".into(),
                data: Some(serde_json::json!({"private_metadata": {"secret": 1}}).into()),
                clerk_updated_at: 1,
                ..OrganizationData::default()
            }),
            via: Source::Webhook,
            delivery: None,
        };
        change.prepare(true);
        assert!(matches!(&change, Change::Upsert { entity: Entity::Organization(o), .. } if o.data.is_some()));
        change.prepare(false);
        assert!(matches!(&change, Change::Upsert { entity: Entity::Organization(o), .. } if o.data.is_none()));
    }

    #[test]
    fn kinds_by_prefix() {
        assert_eq!(Kind::of("user_2x"), Some(Kind::User));
        assert_eq!(Kind::of("org_2x"), Some(Kind::Organization));
        assert_eq!(Kind::of("orgmem_2x"), Some(Kind::Membership));
        assert_eq!(Kind::of("sess_2x"), None);
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
