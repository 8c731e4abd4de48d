//! The checks behind the fuzz targets. Each takes the raw fuzz input, must never panic on its own, and panics
//! (an assertion) when clerk-sync breaks one of its promises for that input.
//!
//! This file is also compiled into the normal test suite (`tests/fuzz_regressions.rs` includes it with
//! `#[path]`), which replays the seed corpus and every kept finding on stable: keep its dependencies to
//! crates the main package has (clerk-sync, svix, http, axum, serde_json).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use clerk_sync::clerk::{is_membership_id, is_organization_id, is_user_id};
use clerk_sync::store::{Change, Delivery, Entity, Kind, UserData};
use clerk_sync::telemetry::metrics::SYNCED_EVENT_TYPES as SYNCED;
use clerk_sync::webhook::{is_sane_event_ms, EventKind, VerifiedEvent, Verifier, VerifyError, MAX_SVIX_ID_LEN};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

/// The signing secret every target signs with.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The svix id the body targets deliver under.
pub const SVIX_ID: &str = "msg_2Lh9KRb6pzqBjHMFl5wd3Ehq1Ab";

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn webhook() -> svix::webhooks::Webhook {
    svix::webhooks::Webhook::new(SECRET).expect("the fuzz secret decodes")
}

fn verifier() -> Verifier {
    Verifier::new(SECRET).expect("the fuzz secret decodes")
}

/// Signs `body` as Svix would, now, and verifies it: every UTF-8 body verifies, any other is refused.
fn sign_and_verify(body: &[u8]) -> Option<clerk_sync::webhook::VerifiedBody> {
    let now = now_secs();
    let signature = webhook().sign(SVIX_ID, now, body);
    let Ok(signature) = signature else {
        assert!(std::str::from_utf8(body).is_err(), "svix refused to sign a UTF-8 body");
        return None;
    };
    let mut headers = HeaderMap::new();
    headers.insert("svix-id", HeaderValue::from_static(SVIX_ID));
    headers.insert("svix-timestamp", HeaderValue::from(now));
    headers.insert(
        "svix-signature",
        HeaderValue::from_str(&signature).expect("a signature is a header value"),
    );
    let verified = verifier()
        .verify(&headers, Bytes::copy_from_slice(body))
        .unwrap_or_else(|e| panic!("a freshly signed body did not verify: {e}"));
    assert_eq!(verified.svix_id(), SVIX_ID);
    assert_eq!(verified.body(), body);
    Some(verified)
}

fn assert_no_nul(what: &str, value: Option<&str>) {
    if let Some(v) = value {
        assert!(!v.contains('\0'), "{what} still holds U+0000: {v:?}");
    }
}

/// What the stored columns must look like, whatever the payload was.
fn assert_storable(user: &UserData) {
    assert!(is_user_id(&user.clerk_id), "stored clerk id {:?}", user.clerk_id);
    assert!(
        is_sane_event_ms(user.clerk_updated_at),
        "clerk_updated_at {} out of range",
        user.clerk_updated_at
    );
    for (what, value) in [
        ("email", &user.email),
        ("first_name", &user.first_name),
        ("last_name", &user.last_name),
        ("username", &user.username),
        ("image_url", &user.image_url),
    ] {
        assert_no_nul(what, value.as_deref());
        if let Some(v) = value {
            assert!(!v.trim().is_empty(), "{what} is blank but not NULL: {v:?}");
        }
    }
}

/// An organization or membership the backends can store alike: ids of the right kinds, a sane `updated_at`.
fn assert_entity_storable(entity: &Entity) {
    match entity {
        Entity::User(user) => assert_storable(user),
        Entity::Organization(o) => {
            assert!(is_organization_id(&o.clerk_id), "organization id {:?}", o.clerk_id);
            assert!(
                is_sane_event_ms(o.clerk_updated_at),
                "updated_at {}",
                o.clerk_updated_at
            );
            assert!(o.members_count.is_none_or(|n| n >= 0));
        }
        Entity::Membership(m) => {
            assert!(is_membership_id(&m.clerk_id), "membership id {:?}", m.clerk_id);
            assert!(
                is_organization_id(&m.organization_clerk_id),
                "{:?}",
                m.organization_clerk_id
            );
            assert!(is_user_id(&m.user_clerk_id), "{:?}", m.user_clerk_id);
            assert!(
                is_sane_event_ms(m.clerk_updated_at),
                "updated_at {}",
                m.clerk_updated_at
            );
        }
    }
}

fn is_clerk_id(kind: Kind, id: &str) -> bool {
    match kind {
        Kind::User => is_user_id(id),
        Kind::Organization => is_organization_id(id),
        Kind::Membership => is_membership_id(id),
    }
}

/// The text Clerk sent in `data[key]`, as the stored column must hold it (NUL removed, blank → NULL).
fn expected_text(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .map(|s| s.replace('\0', ""))
        .filter(|s| !s.trim().is_empty())
}

/// The primary email as the README defines it: the entry whose id is `primary_email_address_id`.
fn expected_email(data: &Value) -> Option<String> {
    let primary = data.get("primary_email_address_id")?.as_str()?;
    let entry = data
        .get("email_addresses")?
        .as_array()?
        .iter()
        .find(|e| e.get("id").and_then(Value::as_str) == Some(primary))?;
    expected_text(entry.get("email_address"))
}

/// A timestamp of Clerk's as the README reads it: under 10^12 it is seconds (Clerk's SDK fixtures), else
/// milliseconds.
fn expected_ms(value: Option<&Value>) -> Option<i64> {
    let ts = value?.as_i64()?;
    Some(if ts < 1_000_000_000_000 {
        ts.saturating_mul(1000)
    } else {
        ts
    })
}

/// An optional timestamp as its column must hold it: in ms, NULL when no backend can store it.
fn expected_column_ms(value: Option<&Value>) -> Option<i64> {
    expected_ms(value).filter(|ms| (0..253_402_300_800_000).contains(ms))
}

/// What holds for every parsed event, whatever the body.
fn assert_event_invariants(event: &VerifiedEvent) {
    assert_no_nul("event_type", Some(event.event_type()));
    assert!(
        is_sane_event_ms(event.timestamp_ms()),
        "timestamp {}",
        event.timestamp_ms()
    );
    match event.kind() {
        EventKind::Upsert { entity, embedded } => {
            let prefix = match entity.kind() {
                Kind::User => "user.",
                Kind::Organization => "organization.",
                Kind::Membership => "organizationMembership.",
            };
            assert!(
                event.event_type().starts_with(prefix),
                "{} for a {:?}",
                event.event_type(),
                entity.kind()
            );
            assert!(!event.event_type().ends_with(".deleted"));
            assert_entity_storable(entity);
            if let Some(o) = embedded {
                assert_eq!(
                    entity.kind(),
                    Kind::Membership,
                    "only a membership embeds an organization"
                );
                assert_entity_storable(&Entity::Organization(o.clone()));
            }
        }
        EventKind::Delete {
            kind,
            clerk_id,
            deleted_at_ms,
        } => {
            assert!(event.event_type().ends_with(".deleted"), "{}", event.event_type());
            assert!(is_clerk_id(*kind, clerk_id), "deleted clerk id {clerk_id:?}");
            assert!(is_sane_event_ms(*deleted_at_ms), "deleted_at_ms {deleted_at_ms}");
            assert_eq!(*deleted_at_ms, event.timestamp_ms());
        }
        EventKind::Other { clerk_id } => {
            assert!(!SYNCED.contains(&event.event_type()));
            if let Some(id) = clerk_id {
                assert!(is_user_id(id), "other event's clerk id {id:?}");
            }
        }
        EventKind::Ignored { reason } => {
            assert!(SYNCED.contains(&event.event_type()), "{}", event.event_type());
            assert!(!reason.is_empty());
        }
    }
}

/// Compares a parsed event with the same body read as plain JSON.
fn assert_matches_json(event: &VerifiedEvent, json: &Value) {
    assert_eq!(
        Some(event.event_type()),
        json.get("type")
            .and_then(Value::as_str)
            .map(|t| t.replace('\0', ""))
            .as_deref(),
        "event type"
    );
    let data = &json["data"];
    match event.kind() {
        EventKind::Upsert {
            entity: Entity::User(user),
            ..
        } => {
            assert_eq!(Some(user.clerk_id.as_str()), data["id"].as_str(), "clerk id");
            assert_eq!(
                Some(user.clerk_updated_at),
                expected_ms(data.get("updated_at")),
                "updated_at"
            );
            assert_eq!(
                user.clerk_created_at_ms,
                expected_column_ms(data.get("created_at")),
                "created_at"
            );
            assert_eq!(
                user.last_sign_in_at_ms,
                expected_column_ms(data.get("last_sign_in_at")),
                "last_sign_in_at"
            );
            assert_eq!(user.first_name, expected_text(data.get("first_name")), "first_name");
            assert_eq!(user.last_name, expected_text(data.get("last_name")), "last_name");
            assert_eq!(user.username, expected_text(data.get("username")), "username");
            assert_eq!(user.image_url, expected_text(data.get("image_url")), "image_url");
            assert_eq!(user.email, expected_email(data), "email");
        }
        EventKind::Upsert { entity, .. } => {
            assert_eq!(Some(entity.clerk_id()), data["id"].as_str(), "clerk id");
            assert_eq!(
                Some(entity.clerk_updated_at()),
                expected_ms(data.get("updated_at")),
                "updated_at"
            );
            let created_at_ms = match entity {
                Entity::Organization(o) => o.clerk_created_at_ms,
                Entity::Membership(m) => m.clerk_created_at_ms,
                Entity::User(u) => u.clerk_created_at_ms,
            };
            assert_eq!(created_at_ms, expected_column_ms(data.get("created_at")), "created_at");
        }
        EventKind::Delete { clerk_id, .. } => {
            assert_eq!(Some(clerk_id.as_str()), data["id"].as_str(), "clerk id");
        }
        EventKind::Ignored { .. } if event.event_type().ends_with(".deleted") => {
            assert!(
                data.get("id").is_none_or(Value::is_null),
                "a deleted id was ignored: {data}"
            );
        }
        EventKind::Ignored { .. } => {
            let member = data.get("public_user_data").and_then(|p| p.get("user_id"));
            assert!(
                member.is_none_or(Value::is_null),
                "a membership's member was ignored: {data}"
            );
        }
        EventKind::Other { .. } => {}
    }
}

/// Target `parse_event`: the body is signed so it verifies, then parsed. The event must agree with the same
/// body read as plain JSON, and never carry text or timestamps the backends cannot store alike.
pub fn parse_event(body: &[u8]) {
    let Some(verified) = sign_and_verify(body) else {
        return;
    };
    match verified.parse() {
        Ok(event) => {
            assert_eq!(event.svix_id(), SVIX_ID);
            assert_event_invariants(&event);
            // serde skips fields it ignores without decoding their escapes, so a body may parse as an event
            // while not as a `Value` (a lone surrogate in an ignored field): then there is nothing to compare.
            if let Ok(json) = serde_json::from_slice::<Value>(body) {
                assert_matches_json(&event, &json);
            }
        }
        Err(invalid) => {
            assert_eq!(invalid.svix_id, SVIX_ID);
            assert_no_nul("invalid event_type", Some(&invalid.event_type));
            assert!(!invalid.reason.is_empty());
        }
    }
}

/// Target `verify_signature`. Input: one flags byte, then `id \n timestamp \n signature \n body`.
/// Flags: bit 0 sends `webhook-*` instead of `svix-*`; bit 1 appends the correct signature to the fuzzed
/// ones; bit 2 replaces the timestamp with now; bit 3 sends both header families.
/// The verifier must accept exactly when Svix's rules say so and then hand back the exact id and bytes.
pub fn verify_signature(input: &[u8]) {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let mut parts = rest.splitn(4, |&b| b == b'\n');
    let (id, ts, sig, body) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let now = now_secs();
    let ts: Vec<u8> = if flags & 4 != 0 {
        now.to_string().into_bytes()
    } else {
        ts.to_vec()
    };
    let ts_value = std::str::from_utf8(&ts).ok().and_then(|t| t.parse::<i64>().ok());
    let id_text = std::str::from_utf8(id).ok();
    let mut sig = sig.to_vec();
    if flags & 2 != 0 {
        let signed = id_text
            .zip(ts_value)
            .and_then(|(id, ts)| webhook().sign(id, ts, body).ok());
        if let Some(signature) = signed {
            sig.push(b' ');
            sig.extend_from_slice(signature.as_bytes());
        }
    }
    let prefix = if flags & 1 != 0 { "webhook" } else { "svix" };
    let mut headers = HeaderMap::new();
    let mut all_valid = true;
    for (name, value) in [("id", id), ("timestamp", ts.as_slice()), ("signature", sig.as_slice())] {
        match HeaderValue::from_bytes(value) {
            Ok(v) => {
                if flags & 8 != 0 {
                    let other = if prefix == "svix" { "webhook" } else { "svix" };
                    let header = HeaderName::from_bytes(format!("{other}-{name}").as_bytes()).expect("header name");
                    headers.insert(header, v.clone());
                }
                let header = HeaderName::from_bytes(format!("{prefix}-{name}").as_bytes()).expect("header name");
                headers.insert(header, v);
            }
            Err(_) => all_valid = false,
        }
    }
    let result = verifier().verify(&headers, Bytes::copy_from_slice(body));

    // Svix's rules, written out independently: each header readable as visible ASCII, the timestamp an i64
    // within ±300 s, the body UTF-8, one `v1,<base64>` entry equal to HMAC(id.timestamp.body); and our own
    // rule on top: a non-empty id of at most MAX_SVIX_ID_LEN bytes.
    let readable = |v: &[u8]| v.iter().all(|&b| b == b'\t' || (32..127).contains(&b));
    let expected_sig = match (id_text, ts_value) {
        (Some(id), Some(ts)) => webhook().sign(id, ts, body).ok(),
        _ => None,
    };
    let sig_text = std::str::from_utf8(&sig).unwrap_or("");
    let signature_matches = expected_sig.is_some_and(|expected| {
        readable(&sig)
            && sig_text
                .split(' ')
                .filter_map(|x| x.split_once(','))
                .any(|(version, value)| version == "v1" && Some(value) == expected.split_once(',').map(|x| x.1))
    });
    let skew = ts_value.map(|t| t.saturating_sub(now).saturating_abs());
    if skew.is_some_and(|s| (298..=302).contains(&s)) {
        return; // the clock may tick between here and the verifier: no verdict at the edge of the window
    }
    let should_verify = all_valid
        && readable(id)
        && readable(&ts)
        && skew.is_some_and(|s| s <= 300)
        && signature_matches
        && !id.is_empty()
        && id.len() <= MAX_SVIX_ID_LEN;
    match result {
        Ok(verified) => {
            assert!(should_verify, "verified, but Svix's rules refuse it");
            assert_eq!(verified.svix_id().as_bytes(), id);
            assert_eq!(Some(verified.timestamp_secs()), ts_value);
            assert_eq!(verified.body(), body);
        }
        Err(e) => {
            assert!(!should_verify, "refused ({e}), but Svix's rules accept it");
            if matches!(e, VerifyError::BadId) {
                assert!(id.is_empty() || id.len() > MAX_SVIX_ID_LEN);
            }
        }
    }
}

/// Target `pipeline`: verify → parse → `into_change`, as the daemon runs it. The first byte picks the delete
/// mode; the rest is the body. Every change must be one the store can commit on both backends.
pub fn pipeline(input: &[u8]) {
    let Some((&mode, body)) = input.split_first() else {
        return;
    };
    let hard = mode & 1 == 1;
    let Some(verified) = sign_and_verify(body) else {
        return;
    };
    let change = match verified.parse() {
        Ok(event) => {
            let clerk_id = event.clerk_id().map(str::to_owned);
            let event_type = event.event_type().to_owned();
            let (change, embedded) = event.into_changes(hard);
            if let Some(Change::Upsert { entity, delivery, .. }) = &embedded {
                assert_eq!(entity.kind(), Kind::Organization);
                assert!(
                    delivery.is_none(),
                    "the embedded organization is recorded with its membership"
                );
            }
            let delivery = change_delivery(&change);
            assert_eq!(delivery.clerk_id, clerk_id);
            assert_eq!(delivery.event_type, event_type);
            change
        }
        Err(invalid) => {
            let change = invalid.into_change();
            assert!(
                matches!(change, Change::Record { .. }),
                "an invalid event must only be recorded"
            );
            assert_eq!(change_delivery(&change).clerk_id, None);
            change
        }
    };
    let delivery = change_delivery(&change);
    assert_eq!(delivery.svix_id, SVIX_ID);
    assert_no_nul("delivery event_type", Some(&delivery.event_type));
    if let Some(id) = &delivery.clerk_id {
        assert!(
            Kind::of(id).is_some_and(|k| is_clerk_id(k, id)),
            "delivery clerk id {id:?}"
        );
    }
    match &change {
        Change::Upsert { entity, .. } => assert_entity_storable(entity),
        Change::Delete {
            kind,
            clerk_id,
            deleted_at_ms,
            hard: h,
            ..
        } => {
            assert!(is_clerk_id(*kind, clerk_id));
            assert!(is_sane_event_ms(*deleted_at_ms), "deleted_at_ms {deleted_at_ms}");
            assert_eq!(*h, hard);
        }
        Change::Record { .. } => {}
    }
}

fn change_delivery(change: &Change) -> &Delivery {
    match change {
        Change::Upsert { delivery, .. } | Change::Delete { delivery, .. } => {
            delivery.as_ref().expect("a webhook change carries its delivery")
        }
        Change::Record { delivery, .. } => delivery,
    }
}
