//! Clerk webhook payloads shaped as in Clerk's docs (envelope + user object).

use serde_json::{json, Value};

pub use crate::ids::{now_ms, now_secs, random_tail, svix_id, user_id};

fn ident_id() -> String {
    format!("idn_{}", random_tail(27))
}

/// The fields of a Clerk user that tests vary.
#[derive(Debug, Clone)]
pub struct ClerkUser {
    pub id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    /// (idn id, address)
    pub emails: Vec<(String, String)>,
    pub primary_email_id: Option<String>,
    /// (idn id, number)
    pub phones: Vec<(String, String)>,
    pub primary_phone_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ClerkUser {
    /// A user with a first/last name, a username, an image and one verified primary email.
    pub fn new(updated_at: i64) -> ClerkUser {
        let id = user_id();
        let tail = id.trim_start_matches("user_").to_lowercase();
        let email_id = ident_id();
        ClerkUser {
            id,
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            username: Some(format!("ada_{}", &tail[..8])),
            image_url: Some(format!("https://img.clerk.com/{tail}")),
            emails: vec![(email_id.clone(), format!("ada.{tail}@example.com"))],
            primary_email_id: Some(email_id),
            phones: vec![],
            primary_phone_id: None,
            created_at: updated_at - 60_000,
            updated_at,
        }
    }

    /// Same user, with a later (or earlier) `updated_at`.
    pub fn at(&self, updated_at: i64) -> ClerkUser {
        ClerkUser {
            updated_at,
            ..self.clone()
        }
    }

    /// Replaces the emails with `[secondary, primary]`: the primary is deliberately not first.
    pub fn with_primary_email_second(mut self, primary: &str, secondary: &str) -> ClerkUser {
        let (p, s) = (ident_id(), ident_id());
        self.emails = vec![(s, secondary.to_string()), (p.clone(), primary.to_string())];
        self.primary_email_id = Some(p);
        self
    }

    /// The address that should end up in `users.email`.
    pub fn primary_email(&self) -> Option<String> {
        let primary = self.primary_email_id.as_ref()?;
        self.emails.iter().find(|(id, _)| id == primary).map(|(_, a)| a.clone())
    }

    pub fn data(&self) -> Value {
        let emails: Vec<Value> = self
            .emails
            .iter()
            .map(|(id, address)| {
                json!({
                    "id": id,
                    "object": "email_address",
                    "email_address": address,
                    "verification": {"status": "verified", "strategy": "ticket", "attempts": null, "expire_at": null},
                    "linked_to": [],
                    "reserved": false
                })
            })
            .collect();
        let phones: Vec<Value> = self
            .phones
            .iter()
            .map(|(id, number)| {
                json!({
                    "id": id,
                    "object": "phone_number",
                    "phone_number": number,
                    "reserved_for_second_factor": false,
                    "default_second_factor": false,
                    "verification": {"status": "verified", "strategy": "phone_code", "attempts": 1, "expire_at": null},
                    "linked_to": [],
                    "backup_codes": null
                })
            })
            .collect();
        json!({
            "id": self.id,
            "object": "user",
            "birthday": "",
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "email_addresses": emails,
            "primary_email_address_id": self.primary_email_id,
            "phone_numbers": phones,
            "primary_phone_number_id": self.primary_phone_id,
            "primary_web3_wallet_id": null,
            "web3_wallets": [],
            "external_accounts": [],
            "external_id": null,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "gender": "",
            "username": self.username,
            "image_url": self.image_url,
            "profile_image_url": self.image_url,
            "has_image": self.image_url.is_some(),
            "password_enabled": true,
            "two_factor_enabled": false,
            "last_sign_in_at": null,
            "public_metadata": {},
            "private_metadata": {},
            "unsafe_metadata": {}
        })
    }

    pub fn created(&self) -> String {
        envelope("user.created", self.data(), now_ms())
    }

    pub fn updated(&self) -> String {
        envelope("user.updated", self.data(), now_ms())
    }

    /// `user.deleted` for this user at `timestamp` (ms, or seconds when under 10^12).
    pub fn deleted(&self, timestamp: i64) -> String {
        deleted(&self.id, timestamp)
    }
}

/// A phone-only user: no email addresses at all.
pub fn phone_only_user(updated_at: i64) -> ClerkUser {
    let phone_id = ident_id();
    ClerkUser {
        emails: vec![],
        primary_email_id: None,
        phones: vec![(phone_id.clone(), "+15555550100".into())],
        primary_phone_id: Some(phone_id),
        username: None,
        ..ClerkUser::new(updated_at)
    }
}

pub fn envelope(event_type: &str, data: Value, timestamp: i64) -> String {
    json!({
        "data": data,
        "object": "event",
        "type": event_type,
        "timestamp": timestamp,
        "instance_id": INSTANCE,
        "event_attributes": {"http_request": {"client_ip": "", "user_agent": ""}}
    })
    .to_string()
}

pub fn deleted(clerk_id: &str, timestamp: i64) -> String {
    envelope(
        "user.deleted",
        json!({"id": clerk_id, "deleted": true, "object": "user"}),
        timestamp,
    )
}

// ---------------------------------------------------------------------------------------------------------------
// The fake Clerk Backend API (wiremock) and Clerk session tokens.

/// The Clerk instance of the tests: webhook envelopes name it, and the fake Clerk's `GET /v1/instance` answers it.
pub const INSTANCE: &str = "ins_2TVSvGyJmr9BVgqmuPrXpQ5qK8a";

/// `GET /v1/instance` answers `id` in `environment`.
pub fn instance_mock(id: &str, environment: &str) -> wiremock::Mock {
    use wiremock::matchers::{method, path};
    wiremock::Mock::given(method("GET"))
        .and(path("/v1/instance"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({
            "object": "instance",
            "id": id,
            "environment_type": environment,
            "allowed_origins": null
        })))
}

/// The `CLERK_SECRET_KEY` the daemon is given in tests; the fake Clerk answers only requests carrying it.
pub const CLERK_SECRET_KEY: &str = "sk_test_clerksyncfakeclerk0000000000000000";

/// The private key Clerk signs session tokens with (its public half is in `jwks.json`).
pub const JWT_KEY: &str = include_str!("../fixtures/jwt_test_key.pem");
/// The PEM public key of [`JWT_KEY`], as `CLERK_JWT_KEY` takes it.
pub const JWT_PUBLIC_KEY: &str = include_str!("../fixtures/jwt_test_key.pub.pem");
/// A key Clerk does not know.
pub const JWT_OTHER_KEY: &str = include_str!("../fixtures/jwt_other_key.pem");
/// What `GET /v1/jwks` serves.
pub const JWKS: &str = include_str!("../fixtures/jwks.json");
/// The key id of [`JWT_KEY`] in [`JWKS`].
pub const JWT_KID: &str = "ins_test_key_1";
/// The `azp` of tokens minted by [`session_token`].
pub const AZP: &str = "https://app.example.com";

fn bearer_secret() -> String {
    format!("Bearer {CLERK_SECRET_KEY}")
}

/// `GET /v1/users/{user.id}` (with the secret key) answers the user object.
pub fn user_mock(user: &ClerkUser) -> wiremock::Mock {
    use wiremock::matchers::{header, method, path};
    wiremock::Mock::given(method("GET"))
        .and(path(format!("/v1/users/{}", user.id)))
        .and(header("authorization", bearer_secret().as_str()))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(user.data()))
}

/// `GET /v1/users/{clerk_id}` answers Clerk's 404.
pub fn not_found_mock(clerk_id: &str) -> wiremock::Mock {
    use wiremock::matchers::{method, path};
    wiremock::Mock::given(method("GET"))
        .and(path(format!("/v1/users/{clerk_id}")))
        .respond_with(wiremock::ResponseTemplate::new(404).set_body_json(json!({
            "errors": [{"code": "resource_not_found", "message": "not found", "long_message": "User not found"}]
        })))
}

/// `GET /v1/users/{clerk_id}` answers `status` with Clerk's error shape.
pub fn failing_mock(clerk_id: &str, status: u16) -> wiremock::Mock {
    use wiremock::matchers::{method, path};
    wiremock::Mock::given(method("GET"))
        .and(path(format!("/v1/users/{clerk_id}")))
        .respond_with(wiremock::ResponseTemplate::new(status).set_body_json(json!({
            "errors": [{"code": "internal_clerk_error", "message": "Oops", "long_message": "Something went wrong"}]
        })))
}

/// What Clerk answers every organizations endpoint of an instance without organizations (verified against real
/// instances: 403, code `organization_not_enabled_in_instance`).
pub fn organizations_off() -> wiremock::ResponseTemplate {
    wiremock::ResponseTemplate::new(403).set_body_json(json!({
        "errors": [{
            "message": "access denied",
            "long_message": "The organizations feature is not enabled for this instance.",
            "code": "organization_not_enabled_in_instance"
        }]
    }))
}

/// `GET /v1/jwks` (with the secret key) answers [`JWKS`].
pub fn jwks_mock() -> wiremock::Mock {
    use wiremock::matchers::{header, method, path};
    wiremock::Mock::given(method("GET"))
        .and(path("/v1/jwks"))
        .and(header("authorization", bearer_secret().as_str()))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_raw(JWKS, "application/json"))
}

/// Claims of a Clerk session token for `sub`, valid from now for `exp_in` seconds.
pub fn session_claims(sub: &str, azp: &str, exp_in: i64) -> Value {
    let now = now_secs();
    json!({
        "sub": sub,
        "azp": azp,
        "iat": now - 5,
        "nbf": now - 10,
        "exp": now + exp_in,
        "iss": "https://clerk.example.com",
        "sid": format!("sess_{}", random_tail(27)),
        "v": 2
    })
}

/// An RS256 token over `claims`, signed with `key` (PEM) under `kid`.
pub fn sign_token(key: &str, kid: &str, claims: &Value) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(key.as_bytes()).expect("test key is not an RSA PEM"),
    )
    .expect("cannot sign the test token")
}

/// A valid session token for `sub` (azp [`AZP`], expires in 60 s), signed by Clerk's key.
pub fn session_token(sub: &str) -> String {
    sign_token(JWT_KEY, JWT_KID, &session_claims(sub, AZP, 60))
}
