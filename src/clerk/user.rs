//! The Clerk `User` object (the `data` of `user.created` / `user.updated`, and the Backend API's user).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::timestamp::{millis, millis_opt};
use crate::store::{RawJson, UserData};

/// The fields of Clerk's user object that clerk-sync stores in columns; the whole object goes to `data`.
#[derive(Clone, Debug, Deserialize)]
pub struct ClerkUser {
    pub id: String,
    #[serde(default)]
    pub email_addresses: Vec<EmailAddress>,
    pub primary_email_address_id: Option<String>,
    #[serde(default)]
    pub phone_numbers: Vec<PhoneNumber>,
    pub primary_phone_number_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    pub external_id: Option<String>,
    pub public_metadata: Option<RawJson>,
    pub banned: Option<bool>,
    /// Timestamps are milliseconds since the epoch, whether Clerk sent seconds or milliseconds.
    #[serde(default, deserialize_with = "millis_opt")]
    pub last_sign_in_at: Option<i64>,
    #[serde(default, deserialize_with = "millis_opt")]
    pub created_at: Option<i64>,
    /// Orders updates.
    #[serde(deserialize_with = "millis")]
    pub updated_at: i64,
    /// The object as Clerk sent it (set by [`ClerkUser::from_raw`]).
    #[serde(skip)]
    pub raw: Option<RawJson>,
}

/// Clerk's spec does not require the `id` of an entry: one without it is kept, but cannot be the primary.
#[derive(Clone, Debug, Deserialize)]
pub struct EmailAddress {
    pub id: Option<String>,
    pub email_address: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PhoneNumber {
    pub id: Option<String>,
    pub phone_number: String,
}

/// A timestamp of Clerk's (ms) both backends can store: from 1970 up to year 9999 (SQLite's `strftime` has no
/// later year). Anything else is stored as NULL rather than failing the write on every retry.
pub fn storable_ms(ms: Option<i64>) -> Option<i64> {
    ms.filter(|ms| (0..253_402_300_800_000).contains(ms))
}

/// `s` with U+0000 dropped, or `None` when nothing but blanks is left.
pub(super) fn blank_to_none(s: Option<String>) -> Option<String> {
    s.map(strip_nul).filter(|v| !v.trim().is_empty())
}

impl ClerkUser {
    /// Reads the user from Clerk's JSON text and keeps that text for the `data` column.
    pub fn from_raw(raw: &RawValue) -> Result<ClerkUser, serde_json::Error> {
        if !crate::store::nesting_within_limit(raw.get()) {
            return Err(serde::de::Error::custom("nested too deeply"));
        }
        let mut user: ClerkUser = serde_json::from_str(raw.get())?;
        user.raw = Some(RawJson::from_raw(raw));
        Ok(user)
    }

    /// [`ClerkUser::from_raw`] of a parsed value.
    pub fn from_value(value: Value) -> Result<ClerkUser, serde_json::Error> {
        let raw = serde_json::value::to_raw_value(&value)?;
        ClerkUser::from_raw(&raw)
    }

    /// The entry of `phone_numbers` whose id is `primary_phone_number_id`.
    pub fn primary_phone(&self) -> Option<&str> {
        let primary = self.primary_phone_number_id.as_deref()?;
        self.phone_numbers
            .iter()
            .find(|p| p.id.as_deref() == Some(primary))
            .map(|p| p.phone_number.as_str())
    }

    /// The entry of `email_addresses` whose id is `primary_email_address_id` — never simply the first one.
    pub fn primary_email(&self) -> Option<&str> {
        let primary = self.primary_email_address_id.as_deref()?;
        self.email_addresses
            .iter()
            .find(|e| e.id.as_deref() == Some(primary))
            .map(|e| e.email_address.as_str())
    }

    /// The stored columns. U+0000 is removed from every text (PostgreSQL cannot store it, SQLite can: both
    /// backends store the same), then blank values become NULL. Not from the id: an id holding U+0000 is not a
    /// Clerk id and is refused, never turned into another user's id.
    pub fn into_user_data(self) -> UserData {
        let email = blank_to_none(self.primary_email().map(str::to_owned));
        let phone_number = blank_to_none(self.primary_phone().map(str::to_owned));
        UserData {
            clerk_id: self.id,
            email,
            first_name: blank_to_none(self.first_name),
            last_name: blank_to_none(self.last_name),
            username: blank_to_none(self.username),
            image_url: blank_to_none(self.image_url),
            phone_number,
            external_id: blank_to_none(self.external_id),
            public_metadata: self.public_metadata,
            banned: self.banned,
            last_sign_in_at_ms: storable_ms(self.last_sign_in_at),
            clerk_created_at_ms: storable_ms(self.created_at),
            data: self.raw,
            clerk_updated_at: self.updated_at,
        }
    }
}

/// `s` without U+0000: PostgreSQL's `text` cannot hold it (SQLSTATE 22021), so a name carrying one would fail
/// on every retry there while SQLite stored it.
pub fn strip_nul(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "")
    } else {
        s
    }
}

/// Whether `id` can be a Clerk user id (`user_` followed by letters and digits). Checked before any lookup,
/// so a typo never reaches the database or Clerk.
pub fn is_user_id(id: &str) -> bool {
    is_id(id, "user_")
}

/// Whether `id` can be a Clerk organization id (`org_…`).
pub fn is_organization_id(id: &str) -> bool {
    is_id(id, "org_")
}

/// Whether `id` can be a Clerk organization membership id (`orgmem_…`).
pub fn is_membership_id(id: &str) -> bool {
    is_id(id, "orgmem_")
}

fn is_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|rest| (1..=64).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_email_is_matched_by_id_not_position() {
        let user: ClerkUser = serde_json::from_value(serde_json::json!({
            "id": "user_2abc",
            "email_addresses": [
                {"id": "idn_old", "email_address": "old@example.com"},
                {"id": "idn_new", "email_address": "new@example.com"}
            ],
            "primary_email_address_id": "idn_new",
            "first_name": "Ada", "last_name": null, "username": null, "image_url": "",
            "updated_at": 1_700_000_000_000_i64
        }))
        .expect("valid user");
        let data = user.into_user_data();
        assert_eq!(data.email.as_deref(), Some("new@example.com"));
        assert_eq!(data.image_url, None);
        assert_eq!(data.name().as_deref(), Some("Ada"));
    }

    #[test]
    fn phone_only_user_has_no_email() {
        let user: ClerkUser = serde_json::from_value(serde_json::json!({
            "id": "user_2abc", "email_addresses": [], "primary_email_address_id": null,
            "updated_at": 1
        }))
        .expect("valid user");
        assert_eq!(user.primary_email(), None);
    }

    #[test]
    fn nul_is_stripped_from_every_text() {
        let user: ClerkUser = serde_json::from_value(serde_json::json!({
            "id": "user_2abc",
            "email_addresses": [{"id": "idn_1", "email_address": "a\u{0}@example.com"}],
            "primary_email_address_id": "idn_1",
            "first_name": "A\u{0}B", "last_name": "\u{0}", "username": "u\u{0}", "image_url": "https://x/\u{0}y",
            "updated_at": 1_700_000_000_000_i64
        }))
        .expect("valid user");
        let data = user.into_user_data();
        assert_eq!(data.email.as_deref(), Some("a@example.com"));
        assert_eq!(data.first_name.as_deref(), Some("AB"));
        assert_eq!(data.last_name, None, "a NUL-only name is blank");
        assert_eq!(data.username.as_deref(), Some("u"));
        assert_eq!(data.image_url.as_deref(), Some("https://x/y"));
        assert_eq!(strip_nul("plain".into()), "plain");
    }

    #[test]
    fn a_blank_primary_email_is_null() {
        let user: ClerkUser = serde_json::from_value(serde_json::json!({
            "id": "user_2abc",
            "email_addresses": [{"id": "idn_1", "email_address": " \u{0} "}],
            "primary_email_address_id": "idn_1",
            "updated_at": 1_700_000_000_000_i64
        }))
        .expect("valid user");
        assert_eq!(user.into_user_data().email, None);
    }

    #[test]
    fn user_ids() {
        assert!(is_user_id("user_29w83sxmDNGwOuEthce5gg56FcC"));
        assert!(!is_user_id("user_"));
        assert!(!is_user_id("sess_29w83sxmDNGwOuEthce5gg56FcC"));
        assert!(!is_user_id("user_../../etc"));
        assert!(is_organization_id("org_2abc"));
        assert!(!is_organization_id("orgmem_2abc"));
        assert!(is_membership_id("orgmem_2abc"));
        assert!(!is_membership_id("org_2abc"));
    }

    #[test]
    fn the_full_profile() {
        let value = serde_json::json!({
            "id": "user_2abc",
            "phone_numbers": [
                {"id": "idn_a", "phone_number": "+15550000001"},
                {"id": "idn_b", "phone_number": "+15550000002"}
            ],
            "primary_phone_number_id": "idn_b",
            "external_id": "legacy-42",
            "public_metadata": {"role": "admin"},
            "private_metadata": {"stripe": "cus_1"},
            "banned": true,
            "last_sign_in_at": 1_700_000_000_456_i64,
            "created_at": 1_600_000_000_000_i64,
            "updated_at": 1_700_000_000_000_i64
        });
        let data = ClerkUser::from_value(value.clone())
            .expect("valid user")
            .into_user_data();
        assert_eq!(
            data.phone_number.as_deref(),
            Some("+15550000002"),
            "the primary, not the first"
        );
        assert_eq!(data.external_id.as_deref(), Some("legacy-42"));
        assert_eq!(
            data.public_metadata.map(|m| m.to_value()),
            Some(serde_json::json!({"role": "admin"}))
        );
        assert_eq!(data.banned, Some(true));
        assert_eq!(data.last_sign_in_at_ms, Some(1_700_000_000_456));
        assert_eq!(data.clerk_created_at_ms, Some(1_600_000_000_000));
        assert_eq!(data.data.map(|d| d.to_value()), Some(value), "the whole object");
    }

    #[test]
    fn every_timestamp_in_seconds_is_read_as_seconds() {
        // The JS SDK's `fixtures/user.json`: every timestamp in seconds.
        let user = ClerkUser::from_value(serde_json::json!({
            "id": "user_cafebabe", "email_addresses": [], "primary_email_address_id": null,
            "last_sign_in_at": 1_611_948_436, "created_at": 1_611_948_436, "updated_at": 1_611_948_436
        }))
        .expect("valid user")
        .into_user_data();
        assert_eq!(user.clerk_created_at_ms, Some(1_611_948_436_000));
        assert_eq!(user.last_sign_in_at_ms, Some(1_611_948_436_000));
        assert_eq!(user.clerk_updated_at, 1_611_948_436_000);
    }

    #[test]
    fn email_and_phone_entries_need_no_id() {
        let user = ClerkUser::from_value(serde_json::json!({
            "id": "user_2abc",
            "email_addresses": [
                {"email_address": "no-id@example.com"},
                {"id": "idn_1", "email_address": "primary@example.com"}
            ],
            "primary_email_address_id": "idn_1",
            "phone_numbers": [{"phone_number": "+15550000001"}],
            "primary_phone_number_id": null,
            "updated_at": 1_700_000_000_000_i64
        }))
        .expect("the spec does not require the ids")
        .into_user_data();
        assert_eq!(user.email.as_deref(), Some("primary@example.com"));
        assert_eq!(user.phone_number, None);
    }

    #[test]
    fn unstorable_timestamps_are_null() {
        assert_eq!(storable_ms(Some(-1)), None);
        assert_eq!(storable_ms(Some(i64::MAX)), None);
        assert_eq!(storable_ms(Some(253_402_300_799_999)), Some(253_402_300_799_999));
        assert_eq!(storable_ms(None), None);
    }
}
