//! Verification of Clerk session JWTs (RS256 only), against Clerk's JWKS or a configured PEM key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use super::{ClerkClient, ClerkError};
use crate::config::ClerkSettings;

/// Why a session token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A valid token of a pending session (`sts: "pending"`: tasks left, such as choosing an organization).
    /// Clerk's SDKs treat it as signed out by default (`treatPendingAsSignedOut`), and so does clerk-sync.
    #[error("the session is pending")]
    Pending,
    /// The keys could not be fetched from Clerk: not the caller's fault.
    #[error("cannot fetch Clerk's signing keys: {0}")]
    Keys(ClerkError),
}

/// The claims clerk-sync reads from a Clerk session token.
#[derive(Clone, Debug, Deserialize)]
pub struct SessionClaims {
    /// The Clerk user id.
    pub sub: String,
    /// The origin that requested the token.
    pub azp: Option<String>,
    /// Issued at, seconds since the epoch (a NumericDate may have a fraction). Optional, as in Clerk's SDK.
    pub iat: Option<f64>,
    /// The session's status (`active` or `pending`); absent for instances that have not opted in.
    pub sts: Option<String>,
}

enum Keys {
    /// `CLERK_JWT_KEY`: networkless.
    Pem(DecodingKey),
    /// Keys by `kid`, from `{CLERK_API_URL}/v1/jwks`.
    Jwks {
        client: Arc<ClerkClient>,
        cache: RwLock<HashMap<String, DecodingKey>>,
        /// The last fetch; held while fetching, so concurrent misses fetch once.
        fetch: Mutex<FetchState>,
        refetch_interval: Duration,
    },
}

/// What the last JWKS fetch did, so a fetch is throttled whatever its outcome: otherwise every token with an
/// unknown kid would cost a full retried fetch while Clerk fails (or answers an empty set), spending the
/// Clerk budget the fallback needs.
#[derive(Default)]
struct FetchState {
    /// When the last fetch that counts towards the throttle started (not the first successful load, so a key
    /// rotated right after start-up is still found at once).
    at: Option<Instant>,
    /// Whether Clerk ever answered with a key set (possibly empty).
    loaded: bool,
    /// Why the last fetch failed while nothing was ever loaded: answered again, without calling Clerk, until
    /// the interval passes.
    failure: Option<ClerkError>,
}

pub struct JwtVerifier {
    keys: Keys,
    validation: Validation,
    authorized_parties: Vec<String>,
}

/// Refuses a token issued more than `leeway` seconds in the future, as Clerk's SDK does (`jsonwebtoken` checks
/// only `exp` and `nbf`).
fn check_issued_at(iat: Option<f64>, leeway: u64, now: Duration) -> Result<(), AuthError> {
    match iat {
        Some(iat) if iat > now.as_secs_f64() + leeway as f64 => {
            Err(AuthError::Invalid("the token is issued in the future (iat)".into()))
        }
        _ => Ok(()),
    }
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.keys {
            Keys::Pem(_) => "pem",
            Keys::Jwks { .. } => "jwks",
        };
        f.debug_struct("JwtVerifier")
            .field("keys", &mode)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// PEM mode when `clerk.jwt_key` is set (validated by the configuration), JWKS mode otherwise.
    pub fn new(settings: &ClerkSettings, client: Arc<ClerkClient>) -> Result<Self, jsonwebtoken::errors::Error> {
        let keys = if settings.jwt_key.trim().is_empty() {
            Keys::Jwks {
                client,
                cache: RwLock::new(HashMap::new()),
                fetch: Mutex::new(FetchState::default()),
                refetch_interval: Duration::from_millis(settings.jwks_refetch_interval_ms),
            }
        } else {
            Keys::Pem(DecodingKey::from_rsa_pem(settings.jwt_key.as_bytes())?)
        };
        // Only RS256: `none`, HS256 (alg confusion with the public key) and everything else are refused.
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = settings.jwt_leeway_secs;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(JwtVerifier {
            keys,
            validation,
            authorized_parties: settings.authorized_parties.clone(),
        })
    }

    pub async fn verify(&self, token: &str) -> Result<SessionClaims, AuthError> {
        let header = decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let claims = match &self.keys {
            Keys::Pem(key) => self.decode(token, key)?,
            Keys::Jwks { .. } => {
                let kid = header
                    .kid
                    .ok_or_else(|| AuthError::Invalid("token has no kid".into()))?;
                let key = self.jwks_key(&kid).await?;
                self.decode(token, &key)?
            }
        };
        // A clock before 1970 reads as 0: every `iat` is then in the future, refused rather than accepted.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        check_issued_at(claims.iat, self.validation.leeway, now)?;
        if !self.authorized_parties.is_empty() {
            let azp = claims.azp.as_deref().unwrap_or_default();
            if !self.authorized_parties.iter().any(|p| p == azp) {
                return Err(AuthError::Invalid(format!("azp {azp:?} is not an authorized party")));
            }
        }
        // Last, so only an otherwise valid token is told its session is pending.
        if claims.sts.as_deref() == Some("pending") {
            return Err(AuthError::Pending);
        }
        Ok(claims)
    }

    fn decode(&self, token: &str, key: &DecodingKey) -> Result<SessionClaims, AuthError> {
        decode::<SessionClaims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// The key for `kid`: cached, else fetched; fetches (after the first successful one) happen at most once per
    /// interval, whether they succeed or fail. Once keys were loaded, a kid Clerk does not list is the caller's
    /// problem (401) even while Clerk is failing; before that, a failing Clerk is a 503.
    async fn jwks_key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        let Keys::Jwks {
            client,
            cache,
            fetch,
            refetch_interval,
        } = &self.keys
        else {
            return Err(AuthError::Invalid("no JWKS configured".into()));
        };
        let unknown = || AuthError::Invalid(format!("unknown key id {kid:?}"));
        if let Some(key) = cache.read().await.get(kid) {
            return Ok(key.clone());
        }
        let mut state = fetch.lock().await;
        // Another request may have refreshed while we waited for the lock.
        if let Some(key) = cache.read().await.get(kid) {
            return Ok(key.clone());
        }
        if state.at.is_some_and(|t| t.elapsed() < *refetch_interval) {
            return match &state.failure {
                Some(e) if !state.loaded => Err(AuthError::Keys(e.clone())),
                _ => Err(unknown()),
            };
        }
        let first_load = !state.loaded;
        let started = Instant::now();
        match client.jwks().await {
            Ok(set) => {
                state.loaded = true;
                state.failure = None;
                if !first_load {
                    state.at = Some(started);
                }
                let fresh: HashMap<String, DecodingKey> = set
                    .keys
                    .iter()
                    .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
                    .collect();
                if fresh.is_empty() {
                    tracing::warn!("Clerk's JWKS holds no usable key: no session token can be verified");
                }
                let found = fresh.get(kid).cloned();
                *cache.write().await = fresh;
                found.ok_or_else(unknown)
            }
            Err(e) => {
                state.at = Some(started);
                if state.loaded {
                    tracing::warn!(error = %e, "cannot refetch Clerk's JWKS; keeping the known keys");
                    Err(unknown())
                } else {
                    state.failure = Some(e.clone());
                    Err(AuthError::Keys(e))
                }
            }
        }
    }
}
