//! Realistic Clerk events, for `clerk-sync send-test-event`: try the webhook path with no Clerk account.
//!
//! The shapes follow Clerk's webhook examples (`tests/fixtures/clerk/*.json`, sources in `SOURCES.md` there);
//! ids, names and timestamps are made up per call.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::clerk::{is_membership_id, is_organization_id, is_user_id};

/// The event types `send-test-event` can build. `Created`, `Updated` and `Deleted` are the user events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleType {
    Created,
    Updated,
    Deleted,
    OrganizationCreated,
    OrganizationUpdated,
    OrganizationDeleted,
    MembershipCreated,
    MembershipUpdated,
    MembershipDeleted,
}

/// What an event is about: it picks the id prefix and the shape of `data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Record {
    User,
    Organization,
    Membership,
}

impl SampleType {
    /// Every type, in the order of [`SampleType::NAMES`].
    pub const ALL: [SampleType; 9] = [
        SampleType::Created,
        SampleType::Updated,
        SampleType::Deleted,
        SampleType::OrganizationCreated,
        SampleType::OrganizationUpdated,
        SampleType::OrganizationDeleted,
        SampleType::MembershipCreated,
        SampleType::MembershipUpdated,
        SampleType::MembershipDeleted,
    ];

    /// Every type `--type` accepts.
    pub const NAMES: &'static [&'static str] = crate::telemetry::metrics::SYNCED_EVENT_TYPES;

    pub fn parse(s: &str) -> Option<Self> {
        SampleType::ALL.into_iter().find(|kind| kind.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SampleType::Created => "user.created",
            SampleType::Updated => "user.updated",
            SampleType::Deleted => "user.deleted",
            SampleType::OrganizationCreated => "organization.created",
            SampleType::OrganizationUpdated => "organization.updated",
            SampleType::OrganizationDeleted => "organization.deleted",
            SampleType::MembershipCreated => "organizationMembership.created",
            SampleType::MembershipUpdated => "organizationMembership.updated",
            SampleType::MembershipDeleted => "organizationMembership.deleted",
        }
    }

    fn record(self) -> Record {
        match self {
            SampleType::Created | SampleType::Updated | SampleType::Deleted => Record::User,
            SampleType::OrganizationCreated | SampleType::OrganizationUpdated | SampleType::OrganizationDeleted => {
                Record::Organization
            }
            SampleType::MembershipCreated | SampleType::MembershipUpdated | SampleType::MembershipDeleted => {
                Record::Membership
            }
        }
    }

    fn is_delete(self) -> bool {
        matches!(
            self,
            SampleType::Deleted | SampleType::OrganizationDeleted | SampleType::MembershipDeleted
        )
    }

    /// What the event's id names: `user`, `organization` or `organization membership`.
    pub fn noun(self) -> &'static str {
        match self.record() {
            Record::User => "user",
            Record::Organization => "organization",
            Record::Membership => "organization membership",
        }
    }

    /// Whether `id` is a Clerk id of the kind this event is about (`user_…`, `org_…` or `orgmem_…`).
    pub fn fits(self, id: &str) -> bool {
        match self.record() {
            Record::User => is_user_id(id),
            Record::Organization => is_organization_id(id),
            Record::Membership => is_membership_id(id),
        }
    }

    /// The event that deletes what this one is about (`user.created` → `user.deleted`).
    pub fn deletion(self) -> SampleType {
        match self.record() {
            Record::User => SampleType::Deleted,
            Record::Organization => SampleType::OrganizationDeleted,
            Record::Membership => SampleType::MembershipDeleted,
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// `prefix` and 27 random letters and digits, as Clerk's ids are.
fn fresh_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    // Each RandomState is seeded from the OS; no random-number crate needed for a sample id.
    let tail: String = (0..27)
        .map(|i| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            ALPHABET[(h.finish() % 62) as usize] as char
        })
        .collect();
    format!("{prefix}{tail}")
}

/// A fresh Clerk-style user id: `user_` and 27 letters and digits (random per call).
pub fn user_id() -> String {
    fresh_id("user_")
}

/// A fresh id of the record `kind` is about: `user_…`, `org_…` or `orgmem_…` (random per call).
pub fn id_for(kind: SampleType) -> String {
    match kind.record() {
        Record::User => fresh_id("user_"),
        Record::Organization => fresh_id("org_"),
        Record::Membership => fresh_id("orgmem_"),
    }
}

/// The record id a sample of `kind` carries: `given` when it is an id of the right kind, else a fresh one.
pub fn record_id(kind: SampleType, given: Option<String>) -> String {
    given.filter(|id| kind.fits(id)).unwrap_or_else(|| id_for(kind))
}

/// A readable, stable slug for a sample organization, derived from its id (so a later `organization.deleted`
/// for the same id carries the same slug).
fn slug(organization_id: &str) -> String {
    let tail = organization_id.strip_prefix("org_").unwrap_or(organization_id);
    let short: String = tail.chars().take(8).collect();
    format!("example-{}", short.to_ascii_lowercase())
}

const IMAGE_URL: &str = "https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCJ9";

/// An `Organization` object (Clerk's webhook and Backend API shape), created by `created_by`.
fn organization(id: &str, created_by: &str, now: i64) -> Value {
    json!({
        "object": "organization",
        "id": id,
        "name": "Example Organization",
        "slug": slug(id),
        "image_url": IMAGE_URL,
        "has_image": false,
        "members_count": 1,
        "missing_member_with_elevated_permissions": false,
        "pending_invitations_count": 0,
        "max_allowed_memberships": 5,
        "admin_delete_enabled": true,
        "public_metadata": {},
        "private_metadata": {},
        "created_by": created_by,
        "created_at": now,
        "updated_at": now
    })
}

/// An `OrganizationMembership` object: the member is `user_id`, in a fresh organization it created.
fn membership(id: &str, organization_id: &str, user_id: &str, now: i64) -> Value {
    json!({
        "object": "organization_membership",
        "id": id,
        "role": "org:member",
        "role_name": "Member",
        "permissions": ["org:projects:read"],
        "public_metadata": {},
        "private_metadata": {},
        "organization": organization(organization_id, user_id, now),
        "public_user_data": {
            "user_id": user_id,
            "first_name": "Example",
            "last_name": "User",
            "profile_image_url": "https://www.gravatar.com/avatar?d=mp",
            "image_url": IMAGE_URL,
            "has_image": false,
            "identifier": "example@example.org",
            "username": null
        },
        "created_at": now,
        "updated_at": now
    })
}

fn user(id: &str, now: i64) -> Value {
    json!({
        "id": id,
        "object": "user",
        "first_name": "Example",
        "last_name": "User",
        "username": null,
        "image_url": IMAGE_URL,
        "profile_image_url": "https://www.gravatar.com/avatar?d=mp",
        "has_image": false,
        "primary_email_address_id": "idn_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
        "primary_phone_number_id": null,
        "primary_web3_wallet_id": null,
        "email_addresses": [{
            "id": "idn_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
            "object": "email_address",
            "email_address": "example@example.org",
            "linked_to": [],
            "verification": {"status": "verified", "strategy": "ticket"}
        }],
        "phone_numbers": [],
        "web3_wallets": [],
        "external_accounts": [],
        "external_id": null,
        "public_metadata": {},
        "private_metadata": {},
        "unsafe_metadata": {},
        "password_enabled": true,
        "two_factor_enabled": false,
        "banned": false,
        "locked": false,
        "last_sign_in_at": null,
        "created_at": now,
        "updated_at": now
    })
}

/// The event body Clerk would send, shaped as in Clerk's webhook docs, about the record `id` (when `id` is not
/// an id of the right kind for `kind`, a fresh one is used instead; see [`record_id`]).
///
/// A membership event names a fresh organization (embedded whole, as Clerk does) and a fresh member.
/// `organizationMembership.deleted` carries the whole membership too, as Clerk sends it: only `user.deleted`
/// and `organization.deleted` carry `{id, deleted, object}`.
pub fn event(kind: SampleType, id: &str) -> Value {
    let id = record_id(kind, Some(id.to_owned()));
    let now = now_ms();
    let data = match kind.record() {
        Record::User if kind.is_delete() => json!({"id": id, "deleted": true, "object": "user"}),
        Record::User => user(&id, now),
        Record::Organization if kind.is_delete() => {
            json!({"deleted": true, "id": id, "object": "organization", "slug": slug(&id)})
        }
        Record::Organization => organization(&id, &user_id(), now),
        Record::Membership => membership(&id, &fresh_id("org_"), &user_id(), now),
    };
    // No `instance_id`: a sample naming an instance it made up would pin a fresh database to it (see `clerk::pin`).
    json!({
        "data": data,
        "event_attributes": {"http_request": {"client_ip": "127.0.0.1", "user_agent": "clerk-sync send-test-event"}},
        "object": "event",
        "timestamp": now,
        "type": kind.as_str()
    })
}

/// What an event from [`event`] is about, for people: `organization membership orgmem_… (organization
/// org_…, user user_…)`, or `user user_…`.
pub fn describe(kind: SampleType, event: &Value) -> String {
    let data = &event["data"];
    let id = data["id"].as_str().unwrap_or("?");
    match kind.record() {
        Record::Membership => format!(
            "{} {id} (organization {}, user {})",
            kind.noun(),
            data["organization"]["id"].as_str().unwrap_or("?"),
            data["public_user_data"]["user_id"].as_str().unwrap_or("?"),
        ),
        Record::User | Record::Organization => format!("{} {id}", kind.noun()),
    }
}

#[cfg(test)]
#[path = "sample_tests.rs"]
mod tests;
