//! `[forward]`: where changes are forwarded. The URL may carry a token, so it never prints whole; and it must not
//! be the daemon's own webhook endpoint.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize, Serializer};
use url::{Host, Url};

use super::{redact_url, ConfigError, Secret, Settings};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSettings {
    /// Where each change is POSTed; empty: no forwarding.
    pub url: ForwardUrl,
    /// `whsec_…`: signs forwarded changes the Standard Webhooks way.
    pub signing_secret: Secret,
    pub timeout_ms: u64,
    pub max_backoff_secs: u64,
}

/// The application's URL, which may carry a token (`?token=…`, `user:password@`): displayed and serialized
/// redacted, as the database URL is.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct ForwardUrl(String);

impl ForwardUrl {
    pub fn new(value: impl Into<String>) -> Self {
        ForwardUrl(value.into())
    }

    /// The whole URL, token included: for the request only, never for a message.
    pub fn expose(&self) -> &str {
        self.0.trim()
    }

    /// Whether forwarding is on.
    pub fn is_set(&self) -> bool {
        !self.expose().is_empty()
    }
}

impl fmt::Debug for ForwardUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(self.expose()))
    }
}

impl Serialize for ForwardUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redact_url(self.expose()))
    }
}

/// The path of the daemon's own webhook endpoint.
const OWN_WEBHOOKS: &str = "/webhooks/clerk";

/// Checks `[forward]` when forwarding is on. No message quotes the URL.
pub(super) fn validate(settings: &Settings) -> Result<(), ConfigError> {
    let forward = &settings.forward;
    if !forward.url.is_set() {
        return Ok(());
    }
    let url = Url::parse(forward.url.expose())
        .map_err(|e| ConfigError::invalid("forward", "url", format!("not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::invalid("forward", "url", "must be an http(s) URL"));
    }
    if is_own_webhook_endpoint(&url, settings.server.listen) {
        return Err(ConfigError::invalid(
            "forward",
            "url",
            format!(
                "is this daemon's own webhook endpoint ({OWN_WEBHOOKS} on server.listen {}): every forwarded \
                 change would come back as a webhook; use your application's URL",
                settings.server.listen
            ),
        ));
    }
    if !settings.changes.enabled {
        return Err(ConfigError::invalid(
            "forward",
            "url",
            "forwarding follows the change feed: set changes.enabled = true, or unset forward.url",
        ));
    }
    let secret = forward.signing_secret.expose();
    if secret.is_empty() || svix::webhooks::Webhook::new(secret).is_err() {
        return Err(ConfigError::invalid(
            "forward",
            "signing_secret",
            "must be whsec_ followed by base64 when forward.url is set: the application verifies each forwarded \
             change with it",
        ));
    }
    Ok(())
}

/// Whether `url` reaches `POST /webhooks/clerk` of a daemon listening on `listen`: its port, and the listen
/// address itself or any loopback or unspecified address (which reach every local listener), or `localhost`.
/// A name that merely resolves to this host is not caught: that would take a DNS lookup at start-up.
fn is_own_webhook_endpoint(url: &Url, listen: SocketAddr) -> bool {
    // axum does not route a trailing slash to the endpoint, but refusing it too costs nothing.
    if url.path().trim_end_matches('/') != OWN_WEBHOOKS || url.port_or_known_default() != Some(listen.port()) {
        return false;
    }
    let local = |ip: IpAddr| ip.is_loopback() || ip.is_unspecified() || ip == listen.ip();
    match url.host() {
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        Some(Host::Ipv4(ip)) => local(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => local(IpAddr::V6(ip)) || ip.to_ipv4_mapped().is_some_and(|v4| local(IpAddr::V4(v4))),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(url: &str, listen: &str) -> bool {
        is_own_webhook_endpoint(
            &Url::parse(url).expect("a test URL"),
            listen.parse().expect("a test address"),
        )
    }

    #[test]
    fn the_daemons_own_webhook_endpoint_is_recognized() {
        for (url, listen) in [
            ("http://127.0.0.1:3000/webhooks/clerk", "127.0.0.1:3000"),
            ("http://localhost:3000/webhooks/clerk", "127.0.0.1:3000"),
            ("http://LOCALHOST.:3000/webhooks/clerk/", "127.0.0.1:3000"),
            ("http://[::1]:3000/webhooks/clerk?token=x", "127.0.0.1:3000"),
            ("https://127.0.0.2:3000/webhooks/clerk", "127.0.0.1:3000"),
            ("http://0.0.0.0:3000/webhooks/clerk", "0.0.0.0:3000"),
            ("http://127.0.0.1:3000/webhooks/clerk", "0.0.0.0:3000"),
            ("http://[::]:3000/webhooks/clerk", "[::]:3000"),
            ("http://[::ffff:127.0.0.1]:3000/webhooks/clerk", "[::]:3000"),
            ("http://10.0.0.5:3000/webhooks/clerk", "10.0.0.5:3000"),
            ("http://127.0.0.1:3000/webhooks/clerk", "10.0.0.5:3000"),
            ("http://localhost/webhooks/clerk", "127.0.0.1:80"),
            ("https://localhost/webhooks/clerk", "0.0.0.0:443"),
        ] {
            assert!(own(url, listen), "{url} on {listen}");
        }
        for (url, listen) in [
            ("http://127.0.0.1:3001/webhooks/clerk", "127.0.0.1:3000"),
            ("http://127.0.0.1:3000/hooks/clerk-sync", "127.0.0.1:3000"),
            ("http://127.0.0.1:3000/webhooks/clerk/x", "127.0.0.1:3000"),
            ("http://10.0.0.6:3000/webhooks/clerk", "10.0.0.5:3000"),
            ("https://app.example.com:3000/webhooks/clerk", "0.0.0.0:3000"),
            ("http://localhost/webhooks/clerk", "127.0.0.1:3000"),
        ] {
            assert!(!own(url, listen), "{url} on {listen}");
        }
    }

    #[test]
    fn the_urls_secrets_never_print() {
        let url = ForwardUrl::new("https://hooks:pa55@app.example.com/in?tenant=acme&token=t0k&x_api_key=k3y");
        let serialized = serde_json::to_string(&url).expect("serializes");
        for shown in [format!("{url:?}"), serialized] {
            for secret in ["pa55", "t0k", "k3y"] {
                assert!(!shown.contains(secret), "{secret} leaked: {shown}");
            }
            assert!(
                shown.contains("app.example.com/in?tenant=acme&token=[redacted]"),
                "{shown}"
            );
        }
        assert_eq!(
            url.expose(),
            "https://hooks:pa55@app.example.com/in?tenant=acme&token=t0k&x_api_key=k3y"
        );
    }
}
