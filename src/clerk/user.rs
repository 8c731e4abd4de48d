//! The Clerk `User` object (the `data` of `user.created` / `user.updated`, and the Backend API's user).

use serde::Deserialize;

use crate::store::UserData;

/// The fields of Clerk's user object that clerk-sync stores; everything else is ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct ClerkUser {
    pub id: String,
    #[serde(default)]
    pub email_addresses: Vec<EmailAddress>,
    pub primary_email_address_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    /// Milliseconds since the epoch; orders updates.
    pub updated_at: i64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EmailAddress {
    pub id: String,
    pub email_address: String,
}

impl ClerkUser {
    /// The entry of `email_addresses` whose id is `primary_email_address_id` — never simply the first one.
    pub fn primary_email(&self) -> Option<&str> {
        let primary = self.primary_email_address_id.as_deref()?;
        self.email_addresses
            .iter()
            .find(|e| e.id == primary)
            .map(|e| e.email_address.as_str())
    }

    /// The stored columns. U+0000 is removed from every text (PostgreSQL cannot store it, SQLite can: both
    /// backends store the same), then blank values become NULL. Not from the id: an id holding U+0000 is not a
    /// Clerk id and is refused, never turned into another user's id.
    pub fn into_user_data(self) -> UserData {
        let blank_to_none = |s: Option<String>| s.map(strip_nul).filter(|v| !v.trim().is_empty());
        let email = blank_to_none(self.primary_email().map(str::to_owned));
        UserData {
            clerk_id: self.id,
            email,
            first_name: blank_to_none(self.first_name),
            last_name: blank_to_none(self.last_name),
            username: blank_to_none(self.username),
            image_url: blank_to_none(self.image_url),
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
    id.strip_prefix("user_")
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
    }
}
