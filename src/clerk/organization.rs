//! Clerk's `Organization` and `OrganizationMembership` objects (the `data` of `organization.*` and
//! `organizationMembership.*` events, and the Backend API's).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::timestamp::{millis, millis_opt};
use super::user::{blank_to_none, storable_ms};
use crate::store::{MembershipData, OrganizationData, RawJson};

/// The fields of an organization stored in columns; the whole object goes to `data`.
#[derive(Clone, Debug, Deserialize)]
pub struct ClerkOrganization {
    pub id: String,
    pub name: Option<String>,
    pub slug: Option<String>,
    pub image_url: Option<String>,
    pub public_metadata: Option<RawJson>,
    /// Present only when Clerk was asked for it (`include_members_count`).
    pub members_count: Option<i64>,
    /// Milliseconds, whether Clerk sent seconds or milliseconds (as for every timestamp).
    #[serde(default, deserialize_with = "millis_opt")]
    pub created_at: Option<i64>,
    #[serde(deserialize_with = "millis")]
    pub updated_at: i64,
    #[serde(skip)]
    pub raw: Option<RawJson>,
}

impl ClerkOrganization {
    /// Reads the organization from Clerk's JSON text and keeps that text for the `data` column.
    pub fn from_raw(raw: &RawValue) -> Result<ClerkOrganization, serde_json::Error> {
        if !crate::store::nesting_within_limit(raw.get()) {
            return Err(serde::de::Error::custom("nested too deeply"));
        }
        let mut organization: ClerkOrganization = serde_json::from_str(raw.get())?;
        organization.raw = Some(RawJson::from_raw(raw));
        Ok(organization)
    }

    /// [`ClerkOrganization::from_raw`] of a parsed value.
    pub fn from_value(value: Value) -> Result<ClerkOrganization, serde_json::Error> {
        ClerkOrganization::from_raw(&serde_json::value::to_raw_value(&value)?)
    }

    pub fn into_data(self) -> OrganizationData {
        OrganizationData {
            clerk_id: self.id,
            name: blank_to_none(self.name),
            slug: blank_to_none(self.slug),
            image_url: blank_to_none(self.image_url),
            public_metadata: self.public_metadata,
            members_count: self.members_count.filter(|n| *n >= 0),
            clerk_created_at_ms: storable_ms(self.created_at),
            data: self.raw,
            clerk_updated_at: self.updated_at,
            embedded: false,
        }
    }
}

/// The member as a membership shows it: too little to make a `users` row of.
#[derive(Clone, Debug, Deserialize)]
pub struct PublicUserData {
    pub user_id: String,
}

/// The fields of a membership stored in columns; the whole object goes to `data`.
#[derive(Clone, Debug)]
pub struct ClerkMembership {
    pub id: String,
    pub role: Option<String>,
    /// The organization, embedded whole.
    pub organization: ClerkOrganization,
    /// The member. Clerk's spec does not require it; without it there is no row to write.
    pub public_user_data: Option<PublicUserData>,
    pub created_at: Option<i64>,
    pub updated_at: i64,
    pub raw: Option<RawJson>,
}

/// A membership as Clerk's JSON holds it, its organization still as text.
#[derive(Deserialize)]
struct Fields<'a> {
    id: String,
    role: Option<String>,
    #[serde(borrow)]
    organization: &'a RawValue,
    public_user_data: Option<PublicUserData>,
    #[serde(default, deserialize_with = "millis_opt")]
    created_at: Option<i64>,
    #[serde(deserialize_with = "millis")]
    updated_at: i64,
}

impl ClerkMembership {
    /// Reads the membership (and its embedded organization) from Clerk's JSON text, keeping both texts.
    pub fn from_raw(raw: &RawValue) -> Result<ClerkMembership, serde_json::Error> {
        if !crate::store::nesting_within_limit(raw.get()) {
            return Err(serde::de::Error::custom("nested too deeply"));
        }
        let fields: Fields = serde_json::from_str(raw.get())?;
        Ok(ClerkMembership {
            id: fields.id,
            role: fields.role,
            organization: ClerkOrganization::from_raw(fields.organization)?,
            public_user_data: fields.public_user_data,
            created_at: fields.created_at,
            updated_at: fields.updated_at,
            raw: Some(RawJson::from_raw(raw)),
        })
    }

    /// [`ClerkMembership::from_raw`] of a parsed value.
    pub fn from_value(value: Value) -> Result<ClerkMembership, serde_json::Error> {
        ClerkMembership::from_raw(&serde_json::value::to_raw_value(&value)?)
    }

    /// The membership's columns, and the embedded organization's, marked as a copy (`embedded`): applied when
    /// newer than the stored row, or only its `members_count` when as new. `None` when Clerk names no member,
    /// since a membership row needs its user.
    pub fn into_data(self) -> Option<(MembershipData, OrganizationData)> {
        let membership = MembershipData {
            clerk_id: self.id,
            organization_clerk_id: self.organization.id.clone(),
            user_clerk_id: self.public_user_data?.user_id,
            role: blank_to_none(self.role),
            clerk_created_at_ms: storable_ms(self.created_at),
            data: self.raw,
            clerk_updated_at: self.updated_at,
        };
        let organization = OrganizationData {
            embedded: true,
            ..self.organization.into_data()
        };
        Some((membership, organization))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_membership_carries_its_organization_and_member() {
        let value = serde_json::json!({
            "id": "orgmem_2abc", "object": "organization_membership", "role": "org:admin",
            "organization": {
                "id": "org_2xyz", "object": "organization", "name": "Acme", "slug": "acme",
                "image_url": "https://img.clerk.com/x", "public_metadata": {"plan": "pro"},
                "created_at": 1_690_000_000_000_i64, "updated_at": 1_700_000_000_000_i64
            },
            "public_user_data": {"user_id": "user_2def", "first_name": "Ada", "identifier": "ada@example.com"},
            "created_at": 1_695_000_000_000_i64, "updated_at": 1_696_000_000_000_i64
        });
        let (membership, organization) = ClerkMembership::from_value(value.clone())
            .expect("valid")
            .into_data()
            .expect("a member");
        assert_eq!(membership.organization_clerk_id, "org_2xyz");
        assert_eq!(membership.user_clerk_id, "user_2def");
        assert_eq!(membership.role.as_deref(), Some("org:admin"));
        assert_eq!(membership.data.map(|d| d.to_value()), Some(value.clone()));
        assert_eq!(organization.clerk_id, "org_2xyz");
        assert_eq!(organization.slug.as_deref(), Some("acme"));
        assert_eq!(organization.members_count, None);
        assert_eq!(
            organization.data.map(|d| d.to_value()),
            value.get("organization").cloned()
        );
        assert_eq!(organization.clerk_updated_at, 1_700_000_000_000);
        assert!(
            organization.embedded,
            "a membership's copy, not the organization's own event"
        );
    }

    #[test]
    fn a_negative_members_count_is_not_stored() {
        let organization = ClerkOrganization::from_value(serde_json::json!({
            "id": "org_1", "members_count": -3, "updated_at": 1_700_000_000_000_i64
        }))
        .expect("valid")
        .into_data();
        assert_eq!(organization.members_count, None);
    }

    #[test]
    fn a_membership_without_its_member_has_no_row() {
        let membership = ClerkMembership::from_value(serde_json::json!({
            "id": "orgmem_2abc", "role": "org:member",
            "organization": {"id": "org_2xyz", "created_at": 1_742_307_845, "updated_at": 1_742_307_845},
            "created_at": 1_742_307_845, "updated_at": 1_742_307_846
        }))
        .expect("public_user_data is optional in Clerk's spec");
        assert_eq!(
            membership.created_at,
            Some(1_742_307_845_000),
            "seconds, read as seconds"
        );
        assert_eq!(membership.updated_at, 1_742_307_846_000);
        assert_eq!(membership.organization.created_at, Some(1_742_307_845_000));
        assert!(membership.into_data().is_none());
    }
}
