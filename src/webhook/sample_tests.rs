//! Unit tests of the send-test-event samples.

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
        // Left out on purpose: a sample naming an instance it made up would pin a fresh database to it, and every
        // real webhook after it would be refused as another instance's.
        want.retain(|field| !field.starts_with(".instance_id"));
        shape(&event(kind, &id_for(kind)), "", &mut got);
        assert_eq!(
            got.symmetric_difference(&want).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{kind:?}: fields that differ from {}",
            path.display()
        );
    }
}
