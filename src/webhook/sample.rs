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
    json!({
        "data": data,
        "event_attributes": {"http_request": {"client_ip": "127.0.0.1", "user_agent": "clerk-sync send-test-event"}},
        "instance_id": "ins_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
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
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Bytes;
    use http::HeaderMap;

    use super::*;
    use crate::store::{Entity, Kind};
    use crate::webhook::{EventKind, Verifier};

    #[test]
    fn sample_ids_are_clerk_ids() {
        assert!(is_user_id(&user_id()));
        assert_eq!(event(SampleType::Deleted, "user_x")["data"]["deleted"], true);
        for kind in SampleType::ALL {
            let id = id_for(kind);
            assert!(kind.fits(&id), "{kind:?}: {id}");
            assert_eq!(id.split_once('_').map(|(_, tail)| tail.len()), Some(27), "{id}");
        }
        assert_ne!(user_id(), user_id(), "fresh ids are random");
    }

    #[test]
    fn every_name_parses_and_round_trips() {
        assert_eq!(SampleType::NAMES.len(), SampleType::ALL.len());
        for (name, kind) in SampleType::NAMES.iter().zip(SampleType::ALL) {
            assert_eq!(SampleType::parse(name), Some(kind), "{name}");
            assert_eq!(kind.as_str(), *name);
        }
        for bad in [
            "",
            "user",
            "organization.created ",
            "Organization.created",
            "organizationMembership",
        ] {
            assert_eq!(SampleType::parse(bad), None, "{bad:?}");
        }
    }

    /// (prefix of the record id, of the embedded organization id, of the member id) per type.
    fn prefixes(kind: SampleType) -> (&'static str, Option<&'static str>, Option<&'static str>) {
        match kind.record() {
            Record::User => ("user_", None, None),
            Record::Organization => ("org_", None, None),
            Record::Membership => ("orgmem_", Some("org_"), Some("user_")),
        }
    }

    #[test]
    fn every_type_builds_an_event_of_that_type_with_ids_of_the_right_kind() {
        for kind in SampleType::ALL {
            let given = id_for(kind);
            let body = event(kind, &given);
            assert_eq!(body["type"], kind.as_str(), "{kind:?}");
            assert_eq!(body["object"], "event");
            let data = &body["data"];
            assert_eq!(data["id"], given.as_str(), "{kind:?}: the given id is kept");
            let (id_prefix, organization, member) = prefixes(kind);
            assert!(given.starts_with(id_prefix), "{kind:?}: {given}");
            let object = match kind.record() {
                Record::User => "user",
                Record::Organization => "organization",
                Record::Membership => "organization_membership",
            };
            assert_eq!(data["object"], object, "{kind:?}");
            if let Some(prefix) = organization {
                let org = data["organization"]["id"].as_str().expect("embedded organization id");
                assert!(org.starts_with(prefix) && is_organization_id(org), "{kind:?}: {org}");
            }
            if let Some(prefix) = member {
                let user = data["public_user_data"]["user_id"].as_str().expect("member id");
                assert!(user.starts_with(prefix) && is_user_id(user), "{kind:?}: {user}");
            }
            let described = describe(kind, &body);
            assert!(
                described.starts_with(kind.noun()) && described.contains(&given),
                "{described}"
            );
        }
    }

    #[test]
    fn an_id_of_the_wrong_kind_is_replaced_by_a_fresh_one() {
        let user = user_id();
        for kind in SampleType::ALL {
            let body = event(kind, &user);
            let id = body["data"]["id"].as_str().expect("id");
            assert!(kind.fits(id), "{kind:?}: {id}");
            assert_eq!(id == user, kind.record() == Record::User, "{kind:?}: {id}");
        }
        assert!(is_organization_id(&record_id(SampleType::OrganizationCreated, None)));
        assert!(is_membership_id(&record_id(
            SampleType::MembershipDeleted,
            Some("org_abc".into())
        )));
        assert_eq!(
            record_id(SampleType::MembershipUpdated, Some("orgmem_abc".into())),
            "orgmem_abc"
        );
        assert_eq!(SampleType::MembershipCreated.deletion(), SampleType::MembershipDeleted);
        assert_eq!(
            SampleType::OrganizationUpdated.deletion(),
            SampleType::OrganizationDeleted
        );
        assert_eq!(SampleType::Created.deletion(), SampleType::Deleted);
    }

    /// Each sample, signed and verified like a delivery, parses into the change its type names.
    #[test]
    fn every_sample_parses_as_the_daemon_reads_it() {
        const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let verifier = Verifier::new(SECRET).expect("secret");
        let signer = svix::webhooks::Webhook::new(SECRET).expect("secret");
        for (i, kind) in SampleType::ALL.into_iter().enumerate() {
            let id = id_for(kind);
            let body = event(kind, &id).to_string();
            let now = now_ms() / 1000;
            let svix_id = format!("msg_sample_{i}");
            let signature = signer.sign(&svix_id, now, body.as_bytes()).expect("sign");
            let mut headers = HeaderMap::new();
            headers.insert("svix-id", svix_id.parse().expect("header"));
            headers.insert("svix-timestamp", now.to_string().parse().expect("header"));
            headers.insert("svix-signature", signature.parse().expect("header"));
            let parsed = verifier
                .verify(&headers, Bytes::from(body))
                .expect("verifies")
                .parse()
                .unwrap_or_else(|e| panic!("{kind:?}: {}", e.reason));
            assert_eq!(parsed.event_type(), kind.as_str());
            assert_eq!(parsed.clerk_id(), Some(id.as_str()), "{kind:?}");
            match (kind.record(), kind.is_delete(), parsed.kind()) {
                (
                    Record::User,
                    false,
                    EventKind::Upsert {
                        entity: Entity::User(_),
                        ..
                    },
                )
                | (
                    Record::Organization,
                    false,
                    EventKind::Upsert {
                        entity: Entity::Organization(_),
                        ..
                    },
                ) => {}
                (
                    Record::Membership,
                    false,
                    EventKind::Upsert {
                        entity: Entity::Membership(m),
                        embedded,
                    },
                ) => {
                    assert!(is_organization_id(&m.organization_clerk_id) && is_user_id(&m.user_clerk_id));
                    assert_eq!(embedded.as_ref().map(|o| &o.clerk_id), Some(&m.organization_clerk_id));
                }
                (Record::User, true, EventKind::Delete { kind: Kind::User, .. })
                | (
                    Record::Organization,
                    true,
                    EventKind::Delete {
                        kind: Kind::Organization,
                        ..
                    },
                )
                | (
                    Record::Membership,
                    true,
                    EventKind::Delete {
                        kind: Kind::Membership, ..
                    },
                ) => {}
                (_, _, other) => panic!("{kind:?} parsed as {other:?}"),
            }
        }
    }

    /// The keys of every object in `value`, by path (array elements share their array's path).
    fn shape(value: &Value, path: &str, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let at = format!("{path}.{key}");
                    out.insert(at.clone());
                    // Metadata is free-form: its keys are the application's, not Clerk's shape.
                    if !key.ends_with("_metadata") {
                        shape(child, &at, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| shape(item, &format!("{path}[]"), out)),
            _ => {}
        }
    }

    /// The organization and membership samples have exactly the fields of Clerk's documented examples.
    #[test]
    fn organization_and_membership_samples_match_the_fixtures() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clerk");
        for kind in [
            SampleType::OrganizationCreated,
            SampleType::OrganizationDeleted,
            SampleType::MembershipCreated,
            SampleType::MembershipDeleted,
        ] {
            let path = dir.join(format!("{}.json", kind.as_str()));
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let fixture: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let (mut want, mut got) = (BTreeSet::new(), BTreeSet::new());
            shape(&fixture, "", &mut want);
            shape(&event(kind, &id_for(kind)), "", &mut got);
            assert_eq!(
                got.symmetric_difference(&want).collect::<Vec<_>>(),
                Vec::<&String>::new(),
                "{kind:?}: fields that differ from {}",
                path.display()
            );
        }
    }
}
