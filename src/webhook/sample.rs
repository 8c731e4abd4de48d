//! Realistic Clerk events, for `clerk-sync send-test-event`: try the webhook path with no Clerk account.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The event types `send-test-event` can build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleType {
    Created,
    Updated,
    Deleted,
}

impl SampleType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user.created" => Some(SampleType::Created),
            "user.updated" => Some(SampleType::Updated),
            "user.deleted" => Some(SampleType::Deleted),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SampleType::Created => "user.created",
            SampleType::Updated => "user.updated",
            SampleType::Deleted => "user.deleted",
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A fresh Clerk-style user id: `user_` and 27 letters and digits (random per call).
pub fn user_id() -> String {
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
    format!("user_{tail}")
}

/// The event body Clerk would send, shaped as in Clerk's webhook docs.
pub fn event(kind: SampleType, user_id: &str) -> Value {
    let now = now_ms();
    let data = match kind {
        SampleType::Deleted => json!({"id": user_id, "deleted": true, "object": "user"}),
        SampleType::Created | SampleType::Updated => json!({
            "id": user_id,
            "object": "user",
            "first_name": "Example",
            "last_name": "User",
            "username": null,
            "image_url": "https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCJ9",
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
        }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_ids_are_clerk_ids() {
        assert!(crate::clerk::is_user_id(&user_id()));
        assert_eq!(event(SampleType::Deleted, "user_x")["data"]["deleted"], true);
    }
}
