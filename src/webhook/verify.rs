//! Svix signature verification over the raw body bytes.
//!
//! Svix's scheme, as the `svix` crate implements it (and its published vectors check): the `svix-*` headers, or
//! the `webhook-*` ones when an `svix-` header is missing; an `i64` timestamp within ±5 minutes; a UTF-8 body;
//! and one of the space-separated `v1,<base64>` signatures equal to base64(HMAC-SHA256(key, `id.timestamp.body`)),
//! compared in constant time. Written out here over `ring`'s HMAC rather than calling the crate's `verify`,
//! which copies the whole body into a new string and hashes it with a portable SHA-256: a fifth of the daemon's
//! instructions per webhook. The crate stays the oracle: the tests and the `verify_signature` fuzz target check
//! this verifier against its `sign`, and it still signs test events and forwarded changes.

use axum::body::Bytes;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http::HeaderMap;
use ring::hmac;
pub use svix::webhooks::WebhookError;

/// The window a timestamp must fall in, either side of now.
const TOLERANCE_SECS: u64 = 5 * 60;

/// Checks Svix signatures with the endpoint's signing secret.
pub struct Verifier {
    key: hmac::Key,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier { secret: [redacted] }")
    }
}

/// The longest `svix-id` accepted. Svix's ids are `msg_` and 27 characters; the id is the primary key of
/// `clerk_sync_deliveries`, and PostgreSQL cannot index a key of several KiB.
pub const MAX_SVIX_ID_LEN: usize = 255;

/// Why a delivery was refused before anything was parsed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Signature(#[from] WebhookError),
    /// Signed, but the id cannot be a Svix message id: empty (every such delivery would be a duplicate of the
    /// first) or over [`MAX_SVIX_ID_LEN`] bytes.
    #[error("the svix-id header is empty or longer than {MAX_SVIX_ID_LEN} bytes")]
    BadId,
}

/// A body whose signature and timestamp verified. Its fields are private: this module is the only way in.
#[derive(Debug)]
pub struct VerifiedBody {
    svix_id: String,
    timestamp_secs: i64,
    body: Bytes,
}

impl VerifiedBody {
    pub fn svix_id(&self) -> &str {
        &self.svix_id
    }

    /// The `svix-timestamp` header, seconds since the epoch.
    pub fn timestamp_secs(&self) -> i64 {
        self.timestamp_secs
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

impl Verifier {
    /// `secret` is Clerk's `whsec_…` signing secret (the prefix is optional, as for Svix).
    pub fn new(secret: &str) -> Result<Self, WebhookError> {
        let secret = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = BASE64.decode(secret)?;
        if key.is_empty() {
            return Err(WebhookError::EmptySecret);
        }
        Ok(Verifier {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
        })
    }

    /// Verifies the raw bytes against the `svix-*` (or `webhook-*`) headers, accepting any of several
    /// space-separated signatures and a timestamp within ±5 minutes.
    pub fn verify(&self, headers: &HeaderMap, body: Bytes) -> Result<VerifiedBody, VerifyError> {
        let svix_id = header(headers, "svix-id", "webhook-id", "id")?;
        let signatures = header(headers, "svix-signature", "webhook-signature", "signature")?;
        let timestamp = header(headers, "svix-timestamp", "webhook-timestamp", "timestamp")?;
        let timestamp_secs: i64 = timestamp.parse().map_err(|_| WebhookError::InvalidTimestamp)?;
        within_tolerance(timestamp_secs)?;
        std::str::from_utf8(&body).map_err(|_| WebhookError::InvalidPayload)?;
        // The signed content is `id.timestamp.body`, fed to the MAC in parts: the body is not copied.
        let mut mac = hmac::Context::with_key(&self.key);
        mac.update(svix_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_secs.to_string().as_bytes());
        mac.update(b".");
        mac.update(&body);
        let expected = BASE64.encode(mac.sign().as_ref());
        let matches = signatures
            .split(' ')
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .any(|(_, signature)| constant_time_eq(signature.as_bytes(), expected.as_bytes()));
        if !matches {
            return Err(WebhookError::InvalidSignature.into());
        }
        if svix_id.is_empty() || svix_id.len() > MAX_SVIX_ID_LEN {
            return Err(VerifyError::BadId);
        }
        Ok(VerifiedBody {
            svix_id: svix_id.to_owned(),
            timestamp_secs,
            body,
        })
    }
}

/// The `svix-` header, else the `webhook-` one, as visible ASCII.
fn header<'a>(
    headers: &'a HeaderMap,
    svix: &'static str,
    unbranded: &'static str,
    name: &'static str,
) -> Result<&'a str, WebhookError> {
    headers
        .get(svix)
        .or_else(|| headers.get(unbranded))
        .ok_or(WebhookError::MissingHeader(name))?
        .to_str()
        .map_err(|_| WebhookError::InvalidHeader(name))
}

/// Within ±5 minutes of now (a clock before 1970, or a timestamp before it, is refused).
fn within_tolerance(timestamp_secs: i64) -> Result<(), WebhookError> {
    let now = std::time::UNIX_EPOCH
        .elapsed()
        .map_err(|_| WebhookError::InvalidTimestamp)?
        .as_secs();
    let ts = u64::try_from(timestamp_secs).map_err(|_| WebhookError::InvalidTimestamp)?;
    if ts.saturating_add(TOLERANCE_SECS) < now {
        Err(WebhookError::TimestampTooOldError)
    } else if ts > now.saturating_add(TOLERANCE_SECS) {
        Err(WebhookError::FutureTimestampError)
    } else {
        Ok(())
    }
}

/// Equal lengths and equal bytes, in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use svix::webhooks::Webhook;

    fn headers(id: &str, ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("svix-id", id.parse().expect("header"));
        h.insert("svix-timestamp", ts.to_string().parse().expect("header"));
        h.insert("svix-signature", sig.parse().expect("header"));
        h
    }

    /// Svix's published test vectors, so our use of the crate matches the scheme Clerk's deliveries use.
    #[test]
    fn svix_published_test_vectors() {
        let cases = [
            (
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                r#"{"email":"test@example.com","username":"test_user"}"#,
                "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
            ),
            (
                "whsec_plJ3nmyCDGBKInavdOK15jsl",
                "msg_loFOjxBNrRLzqYUf",
                1731705121,
                r#"{"event_type":"ping","data":{"success":true}}"#,
                "v1,rAvfW3dJ/X/qxhsaXPOyyCGmRKsaKWcsNccKXlIktD0=",
            ),
        ];
        for (secret, id, ts, body, expected) in cases {
            let webhook = Webhook::new(secret).expect("secret");
            assert_eq!(webhook.sign(id, ts, body.as_bytes()).expect("sign"), expected);
            let h = headers(id, ts, &format!("v1,bm90IGl0 {expected}"));
            webhook
                .verify_ignoring_timestamp(body.as_bytes(), &h)
                .expect("vector verifies");
            // The live path enforces the ±5 min window, so these old vectors are refused there.
            let verifier = Verifier::new(secret).expect("secret");
            assert!(verifier.verify(&h, Bytes::from(body)).is_err());
        }
    }

    #[test]
    fn fresh_signature_verifies_and_tampering_fails() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let verifier = Verifier::new(secret).expect("secret");
        let now = std::time::UNIX_EPOCH.elapsed().expect("clock").as_secs() as i64;
        let body = br#"{"type":"user.created"}"#;
        let sig = Webhook::new(secret)
            .expect("secret")
            .sign("msg_1", now, body)
            .expect("sign");
        let ok = verifier
            .verify(&headers("msg_1", now, &sig), Bytes::from_static(body))
            .expect("verifies");
        assert_eq!(ok.svix_id(), "msg_1");
        assert_eq!(ok.timestamp_secs(), now);
        let tampered = br#"{"type":"user.deleted"}"#;
        assert!(verifier
            .verify(&headers("msg_1", now, &sig), Bytes::from_static(tampered))
            .is_err());
        assert!(verifier
            .verify(&headers("msg_1", now - 301, &sig), Bytes::from_static(body))
            .is_err());
    }

    #[test]
    fn signed_but_empty_or_huge_ids_are_refused() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let verifier = Verifier::new(secret).expect("secret");
        let now = std::time::UNIX_EPOCH.elapsed().expect("clock").as_secs() as i64;
        let body = br#"{"type":"user.created"}"#;
        let longest = "m".repeat(MAX_SVIX_ID_LEN);
        for (id, ok) in [("", false), (longest.as_str(), true), (&format!("{longest}m"), false)] {
            let sig = Webhook::new(secret).expect("secret").sign(id, now, body).expect("sign");
            let result = verifier.verify(&headers(id, now, &sig), Bytes::from_static(body));
            assert_eq!(result.is_ok(), ok, "id of {} bytes: {result:?}", id.len());
            if !ok {
                assert!(matches!(result, Err(VerifyError::BadId)), "{result:?}");
            }
        }
    }

    /// This verifier agrees with the `svix` crate's own `verify` on what it accepts (ours adds only the id rule),
    /// whatever the headers, timestamps, bodies and signatures.
    #[test]
    fn agrees_with_the_svix_crate() {
        use proptest::prelude::*;
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let (ours, theirs) = (
            Verifier::new(secret).expect("secret"),
            Webhook::new(secret).expect("secret"),
        );
        let now = std::time::UNIX_EPOCH.elapsed().expect("clock").as_secs() as i64;
        // Weighted so that about a third of the cases are deliveries Svix accepts: the check must see both.
        let strategy = (
            prop_oneof![
                1 => proptest::string::string_regex("[ -~]{0,8}").expect("regex"),
                3 => proptest::string::string_regex("msg_[a-zA-Z0-9]{27}").expect("regex"),
            ],
            prop_oneof![
                6 => -290i64..290,
                1 => -400i64..400,
                1 => prop_oneof![Just(-301i64), Just(300), Just(i64::MIN / 2)],
            ],
            prop_oneof![
                3 => proptest::string::string_regex("[ -~é]{0,64}")
                    .expect("regex")
                    .prop_map(String::into_bytes),
                1 => proptest::collection::vec(any::<u8>(), 0..64),
            ],
            (
                proptest::bool::weighted(0.75),
                any::<bool>(),
                proptest::bool::weighted(0.1),
            )
                .prop_map(|(good, unbranded, no_ts)| u8::from(good) | u8::from(unbranded) << 1 | u8::from(no_ts) << 2),
            proptest::string::string_regex("(v[0-9],[A-Za-z0-9+/=]{0,44} ?){0,3}").expect("regex"),
        );
        let accepted = std::cell::Cell::new(0);
        proptest!(ProptestConfig::with_cases(512), |((id, skew, body, flags, noise) in strategy)| {
            let ts = now.saturating_add(skew);
            let mut signature = noise.clone();
            if flags & 1 != 0 {
                if let Ok(good) = theirs.sign(&id, ts, &body) {
                    signature = format!("{noise} {good}");
                }
            }
            let prefix = if flags & 2 != 0 { "webhook" } else { "svix" };
            let mut h = HeaderMap::new();
            for (name, value) in [("id", id.clone()), ("timestamp", ts.to_string()), ("signature", signature)] {
                if let Ok(v) = value.parse() {
                    h.insert(http::HeaderName::from_bytes(format!("{prefix}-{name}").as_bytes()).expect("name"), v);
                }
            }
            if flags & 4 != 0 {
                h.remove(format!("{prefix}-timestamp").as_str());
            }
            let svix_says = theirs.verify(&body, &h).is_ok() && !id.is_empty() && id.len() <= MAX_SVIX_ID_LEN;
            // The window's edges may tick over between the two calls.
            if (298..=302).contains(&skew.abs()) {
                return Ok(());
            }
            prop_assert_eq!(ours.verify(&h, Bytes::from(body.clone())).is_ok(), svix_says);
            accepted.set(accepted.get() + u32::from(svix_says));
        });
        assert!(
            accepted.get() > 20,
            "only {} accepted cases: the check says little",
            accepted.get()
        );
    }
}
