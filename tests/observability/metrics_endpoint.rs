//! `GET /metrics` of a real daemon process: every exported name described and typed, histograms (not
//! summaries), build info, no identifiers in labels, route templates, and request ids echoed.

use clerk_sync::telemetry::metrics::ALL;
use reqwest::StatusCode;
use wiremock::MockServer;

use crate::common::{clerk_knows, clerk_user, email_of, envelope, now_ms, svix_id, user_id};
use crate::daemon::Daemon;

/// The sample lines (`name{labels} value`) of metric `name` (exact name, so `x_bucket` is not `x`).
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_exports_every_metric_without_identifiers() {
    let clerk = MockServer::start().await;
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let database_url = format!("sqlite://{}", dir.path().join("clerk-sync.db").display());
    let daemon = Daemon::start(&database_url, &clerk.uri(), &[]).await;

    // One webhook (created from the webhook) ...
    let (webhook_user, webhook_svix) = (user_id(), svix_id());
    let body = envelope("user.created", clerk_user(&webhook_user, now_ms()));
    let (status, text) = daemon.post_webhook(&body, &webhook_svix).await;
    assert_eq!(status, StatusCode::OK, "user.created webhook: {text}");
    assert!(text.contains("applied"), "user.created webhook: {text}");

    // ... and one GET, of a user only Clerk knows (the fallback creates it), with a caller's request id.
    let fallback_user = user_id();
    clerk_knows(&clerk, &clerk_user(&fallback_user, now_ms())).await;
    let response = daemon
        .client
        .get(format!("{}/v1/users/{fallback_user}", daemon.url))
        .bearer_auth("tok_test")
        .header("x-request-id", "obs-test-request-42")
        .send()
        .await
        .expect("GET /v1/users/{id}");
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "fallback GET of a user Clerk knows"
    );
    assert_eq!(
        response.headers().get("x-request-id").and_then(|v| v.to_str().ok()),
        Some("obs-test-request-42"),
        "a given x-request-id must be echoed unchanged"
    );

    // An unmatched path, without a request id: one is generated and echoed.
    let mut generated = Vec::new();
    for _ in 0..2 {
        let response = daemon
            .client
            .get(format!("{}/nope", daemon.url))
            .send()
            .await
            .expect("GET /nope");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET /nope");
        let id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let id = id.expect("a response to a request without x-request-id must carry a generated one");
        assert!(!id.trim().is_empty(), "the generated x-request-id is empty");
        generated.push(id);
    }
    assert_ne!(
        generated[0], generated[1],
        "two requests got the same generated x-request-id"
    );

    let text = daemon.metrics().await;
    let described = |name: &str| text.lines().any(|l| l.starts_with(&format!("# HELP {name} ")));
    let typed = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(&format!("# TYPE {name} "))
                .map(str::trim)
                .map(str::to_owned)
        })
    };
    let mut missing = Vec::new();
    // `_seconds` names are histograms, except Unix timestamps and the forwarding lag (the age of the oldest
    // unforwarded change, sampled), which are gauges.
    let histogram = |name: &str| {
        name.ends_with("_seconds") && !name.ends_with("_timestamp_seconds") && name != "clerk_sync_forward_lag_seconds"
    };
    for name in ALL {
        if !described(name) {
            missing.push(format!("{name}: no `# HELP` line"));
        }
        match typed(name) {
            None => missing.push(format!("{name}: no `# TYPE` line")),
            Some(kind) if histogram(name) && kind != "histogram" => {
                missing.push(format!("{name}: `# TYPE {name} {kind}`, expected histogram"))
            }
            Some(_) => {}
        }
        if histogram(name)
            && !samples(&text, &format!("{name}_bucket"))
                .iter()
                .any(|l| l.contains("le=\""))
        {
            missing.push(format!("{name}: no `{name}_bucket{{…le=…}}` sample"));
        }
    }
    assert!(
        missing.is_empty(),
        "GET /metrics is missing:\n{}\n\nfull text:\n{text}",
        missing.join("\n")
    );

    let version = env!("CARGO_PKG_VERSION");
    let build = samples(&text, "clerk_sync_build_info");
    assert!(
        build
            .iter()
            .any(|l| *l == format!("clerk_sync_build_info{{version=\"{version}\"}} 1")),
        "expected clerk_sync_build_info{{version=\"{version}\"}} 1, got {build:?}"
    );

    for secret in [
        &webhook_user,
        &fallback_user,
        &email_of(&webhook_user),
        &email_of(&fallback_user),
        &webhook_svix,
    ] {
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(secret.as_str())).collect();
        assert!(leaks.is_empty(), "GET /metrics exposes {secret:?}: {leaks:#?}");
    }

    let http = samples(&text, "http_server_request_duration_seconds_count");
    let route = |r: &str| http.iter().any(|l| l.contains(&format!("http_route=\"{r}\"")));
    assert!(
        route("/v1/users/{clerk_id}"),
        "http_server_request_duration_seconds has no http_route=\"/v1/users/{{clerk_id}}\": {http:#?}"
    );
    assert!(
        route("unmatched"),
        "GET /nope is not http_route=\"unmatched\": {http:#?}"
    );
    assert!(route("/webhooks/clerk"), "no http_route=\"/webhooks/clerk\": {http:#?}");
    assert!(
        !http
            .iter()
            .any(|l| l.contains("http_route=\"/v1/users/user_") || l.contains("/nope")),
        "raw paths used as http_route: {http:#?}"
    );

    daemon.stop().await;
}

/// A Clerk organization object with `id`.
fn organization(id: &str, updated_at: i64) -> serde_json::Value {
    serde_json::json!({
        "object": "organization", "id": id, "name": "Acme", "slug": id.to_lowercase(), "has_image": false,
        "max_allowed_memberships": 5, "admin_delete_enabled": true, "public_metadata": {},
        "created_at": updated_at - 60_000, "updated_at": updated_at
    })
}

/// `clerk_sync_{organizations,memberships}_created_total` count committed inserts exactly, by path, like users:
/// a membership that brings its organization counts that organization once; a duplicate or a stale event
/// counts nothing. Read straight from `GET /metrics` of a daemon process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizations_and_memberships_created_are_counted_by_path() {
    let clerk = MockServer::start().await;
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let database_url = format!("sqlite://{}", dir.path().join("clerk-sync.db").display());
    let daemon = Daemon::start(&database_url, &clerk.uri(), &[]).await;
    let t = now_ms() - 60_000;
    let tail = crate::common::random_hex;
    let (org_a, org_b) = (format!("org_{}", tail()), format!("org_{}", tail()));
    let membership = serde_json::json!({
        "object": "organization_membership", "id": format!("orgmem_{}", tail()), "role": "org:member",
        "organization": organization(&org_b, t), "public_user_data": {"user_id": user_id()},
        "created_at": t, "updated_at": t
    });
    let created = envelope("organizationMembership.created", membership);
    let msg = svix_id();
    for (what, body, id, outcome) in [
        (
            "organization.created",
            envelope("organization.created", organization(&org_a, t)),
            svix_id(),
            "applied",
        ),
        (
            "organization.updated (stale)",
            envelope("organization.updated", organization(&org_a, t - 1)),
            svix_id(),
            "stale",
        ),
        (
            "organizationMembership.created",
            created.clone(),
            msg.clone(),
            "applied",
        ),
        ("its redelivery", created, msg, "duplicate"),
    ] {
        let (status, text) = daemon.post_webhook(&body, &id).await;
        assert_eq!(status, StatusCode::OK, "{what}: {text}");
        assert!(text.contains(outcome), "{what}: expected {outcome}, got {text}");
    }
    let text = daemon.metrics().await;
    // Every `label="value"` fragment of `labels` (comma-separated), in whatever order the exporter writes them.
    let value = |name: &str, labels: &str| -> f64 {
        samples(&text, name)
            .into_iter()
            .find(|l| labels.split(',').all(|fragment| l.contains(fragment)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample {name}{{{labels}}} in:\n{text}"))
    };
    assert_eq!(
        value("clerk_sync_organizations_created_total", "source=\"webhook\""),
        2.0
    );
    assert_eq!(
        value("clerk_sync_organizations_created_total", "source=\"fallback\""),
        0.0
    );
    assert_eq!(value("clerk_sync_memberships_created_total", "source=\"webhook\""), 1.0);
    assert_eq!(
        value("clerk_sync_users_created_total", "source=\"webhook\""),
        0.0,
        "a membership makes no user"
    );
    let events = "clerk_sync_webhook_events_total";
    assert_eq!(
        value(
            events,
            "event_type=\"organizationMembership.created\",outcome=\"applied\""
        ),
        1.0
    );
    assert_eq!(
        value(
            events,
            "event_type=\"organizationMembership.created\",outcome=\"duplicate\""
        ),
        1.0
    );
    assert_eq!(
        value(events, "event_type=\"organization.updated\",outcome=\"stale\""),
        1.0
    );
    daemon.stop().await;
}
