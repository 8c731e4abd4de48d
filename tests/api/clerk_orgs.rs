//! Clerk organizations and memberships shaped as in Clerk's webhook and Backend API schemas (see
//! tests/fixtures/clerk/SOURCES.md), and the fake Backend API's answers for them.

use serde_json::{json, Value};

use crate::clerk::{envelope, now_ms, random_tail, user_id, CLERK_SECRET_KEY};

pub fn org_id() -> String {
    format!("org_{}", random_tail(27))
}

pub fn membership_id() -> String {
    format!("orgmem_{}", random_tail(27))
}

/// The fields of a Clerk organization that tests vary.
#[derive(Debug, Clone)]
pub struct ClerkOrganization {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub public_metadata: Value,
    pub members_count: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ClerkOrganization {
    pub fn new(updated_at: i64) -> ClerkOrganization {
        let id = org_id();
        let slug = format!("acme-{}", id[4..12].to_lowercase());
        ClerkOrganization {
            id,
            name: "Acme Inc".into(),
            slug,
            public_metadata: json!({"plan": "pro"}),
            members_count: None,
            created_at: updated_at - 60_000,
            updated_at,
        }
    }

    /// Same organization at another `updated_at`, renamed so a test can tell versions apart.
    pub fn at(&self, updated_at: i64, name: &str) -> ClerkOrganization {
        ClerkOrganization {
            updated_at,
            name: name.into(),
            ..self.clone()
        }
    }

    pub fn data(&self) -> Value {
        let mut data = json!({
            "object": "organization",
            "id": self.id,
            "name": self.name,
            "slug": self.slug,
            "image_url": "https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCJ9",
            "has_image": false,
            "max_allowed_memberships": 5,
            "admin_delete_enabled": true,
            "public_metadata": self.public_metadata,
            "private_metadata": {"stripe_customer": "cus_secret"},
            "created_by": "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
            "created_at": self.created_at,
            "updated_at": self.updated_at
        });
        if let Some(n) = self.members_count {
            data["members_count"] = json!(n);
        }
        data
    }

    pub fn created(&self) -> String {
        envelope("organization.created", self.data(), now_ms())
    }

    pub fn updated(&self) -> String {
        envelope("organization.updated", self.data(), now_ms())
    }

    /// `organization.deleted` as Clerk documents it: no `updated_at`, ordered by the envelope timestamp.
    pub fn deleted(&self, timestamp: i64) -> String {
        envelope(
            "organization.deleted",
            json!({"object": "organization", "id": self.id, "slug": self.slug, "deleted": true}),
            timestamp,
        )
    }
}

/// The fields of a Clerk organization membership that tests vary.
#[derive(Debug, Clone)]
pub struct ClerkMembership {
    pub id: String,
    pub organization: ClerkOrganization,
    pub user_id: String,
    pub role: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ClerkMembership {
    /// A membership of a fresh user in `organization`.
    pub fn new(organization: &ClerkOrganization, updated_at: i64) -> ClerkMembership {
        ClerkMembership {
            id: membership_id(),
            organization: organization.clone(),
            user_id: user_id(),
            role: "org:member".into(),
            created_at: updated_at - 1_000,
            updated_at,
        }
    }

    pub fn at(&self, updated_at: i64, role: &str) -> ClerkMembership {
        ClerkMembership {
            updated_at,
            role: role.into(),
            ..self.clone()
        }
    }

    pub fn data(&self) -> Value {
        json!({
            "object": "organization_membership",
            "id": self.id,
            "role": self.role,
            "role_name": "Member",
            "permissions": ["org:billing:read"],
            "public_metadata": {},
            "private_metadata": {},
            "organization": self.organization.data(),
            "public_user_data": {
                "user_id": self.user_id,
                "first_name": "Ada",
                "last_name": "Lovelace",
                "image_url": "https://img.clerk.com/x",
                "has_image": false,
                "identifier": "ada@example.com",
                "username": null
            },
            "created_at": self.created_at,
            "updated_at": self.updated_at
        })
    }

    pub fn created(&self) -> String {
        envelope("organizationMembership.created", self.data(), now_ms())
    }

    pub fn updated(&self) -> String {
        envelope("organizationMembership.updated", self.data(), now_ms())
    }

    /// `organizationMembership.deleted` carries the whole membership (Clerk's webhook schema).
    pub fn deleted(&self, timestamp: i64) -> String {
        envelope("organizationMembership.deleted", self.data(), timestamp)
    }
}

/// `GET /v1/organizations/{id}` (with the secret key) answers the organization.
pub fn organization_mock(organization: &ClerkOrganization) -> wiremock::Mock {
    slow_organization_mock(organization, std::time::Duration::ZERO)
}

/// The same, answered after `delay`.
pub fn slow_organization_mock(organization: &ClerkOrganization, delay: std::time::Duration) -> wiremock::Mock {
    use wiremock::matchers::{header, method, path};
    wiremock::Mock::given(method("GET"))
        .and(path(format!("/v1/organizations/{}", organization.id)))
        .and(header("authorization", format!("Bearer {CLERK_SECRET_KEY}").as_str()))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(organization.data())
                .set_delay(delay),
        )
}

/// `GET /v1/organizations/{id}` answers Clerk's 404.
pub fn organization_not_found_mock(clerk_id: &str) -> wiremock::Mock {
    use wiremock::matchers::{method, path};
    wiremock::Mock::given(method("GET"))
        .and(path(format!("/v1/organizations/{clerk_id}")))
        .respond_with(wiremock::ResponseTemplate::new(404).set_body_json(json!({
            "errors": [{"code": "resource_not_found", "message": "not found", "long_message": "Organization not found"}]
        })))
}
