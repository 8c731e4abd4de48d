//! The published contract: `GET /v1/openapi.json` is the committed `openapi.json`, and the answers the daemon
//! makes before any handler runs (no route, wrong method, unreadable path or body) carry the documented `Error`
//! body like every other error. schemathesis checks the rest against the real daemon (scripts/contract/run).

use reqwest::StatusCode;

use crate::api_checks::assert_error;
use crate::helpers::*;

/// The committed document, from which applications generate their types.
fn committed() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

both_backends!(the_served_document_is_the_committed_one, |backend| async move {
    let app = spawn_app(backend).await;
    // No token: the document describes the API, not data.
    let answer = app.api("GET", "/v1/openapi.json", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json["openapi"], "3.1.0", "{}", answer.body);
    assert!(
        answer.body == committed(),
        "openapi.json at the repository root differs from what GET /v1/openapi.json serves; regenerate it with\n    \
         cargo run -- openapi > openapi.json\nand commit it (the API changed: check the README still says what it does)"
    );
});

both_backends!(refusals_before_any_handler_carry_the_error_body, |backend| async move {
    let app = spawn_app_with(backend, &[("CLERK_SYNC_API_TOKENS", "tok_a")]).await;

    let answer = app.api("GET", "/v1/no-such-route", Some("Bearer tok_a")).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "route_not_found", "an unknown route");

    let answer = app.api("DELETE", "/v1/users/user_2abc", Some("Bearer tok_a")).await;
    assert_error(
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "a method the route does not take",
    );

    // A path segment that is not UTF-8 once decoded: axum refuses it before the handler sees it.
    let answer = app.api("GET", "/v1/users/%FF", Some("Bearer tok_a")).await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "a path that is not UTF-8",
    );

    let response = app
        .post_webhook_raw(vec![b' '; clerk_sync::http::WEBHOOK_BODY_LIMIT + 1], &[])
        .await;
    let status = response.status();
    let body = response.text().await.expect("the 413's body");
    let answer = ApiAnswer {
        status,
        json: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        body,
        retry_after: None,
    };
    assert_error(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "a webhook body over the limit",
    );
});

both_backends!(the_allow_header_survives_on_a_405, |backend| async move {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .delete(format!("{}/livez", app.address))
        .send()
        .await
        .expect("DELETE /livez");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = response
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    assert!(
        allow.as_deref().is_some_and(|a| a.contains("GET")),
        "a 405 names the methods the route takes: {allow:?}"
    );
    assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
});

/// The keys of a JSON object, sorted.
fn keys(value: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

both_backends!(bodies_have_exactly_the_documented_keys, |backend| async move {
    use crate::clerk::{now_ms, ClerkUser};
    use crate::clerk_orgs::{ClerkMembership, ClerkOrganization};

    let app = spawn_app_with(backend, &[("CLERK_SYNC_API_TOKENS", "tok_a")]).await;
    let (user, organization) = (ClerkUser::new(now_ms()), ClerkOrganization::new(now_ms()));
    let membership = ClerkMembership::new(&organization, now_ms());
    for (i, body) in [user.created(), organization.created(), membership.created()]
        .iter()
        .enumerate()
    {
        app.expect_outcome(body, &format!("msg_contract_{i}"), "applied").await;
    }
    let document = app.api("GET", "/v1/openapi.json", None).await.json;
    let schema = |name: &str| {
        let schema = &document["components"]["schemas"][name];
        let required: Vec<String> = serde_json::from_value(schema["required"].clone()).unwrap_or_default();
        let mut required = required;
        required.sort();
        assert_eq!(
            required,
            keys(&schema["properties"]),
            "{name}: every documented key is required"
        );
        required
    };
    let get = |path: String| {
        let app = &app;
        async move {
            let answer = app.api("GET", &path, Some("Bearer tok_a")).await;
            assert_eq!(answer.status, StatusCode::OK, "GET {path}: {}", answer.body);
            answer.json
        }
    };

    assert_eq!(keys(&get(format!("/v1/users/{}", user.id)).await), schema("User"));
    let organization_path = format!("/v1/organizations/{}", organization.id);
    assert_eq!(keys(&get(organization_path.clone()).await), schema("Organization"));
    let memberships = get(format!("{organization_path}/memberships")).await;
    assert_eq!(memberships.as_array().map(Vec::len), Some(1), "{memberships}");
    assert_eq!(keys(&memberships[0]), schema("Membership"));
    let page = get("/v1/changes?after=0".to_owned()).await;
    assert_eq!(keys(&page), schema("ChangesPage"));
    assert_eq!(keys(&page["changes"][0]), schema("Change"));
    assert_eq!(keys(&get("/livez".to_owned()).await), schema("Health"));
    let (status, answer) = app.deliver(&user.updated(), "msg_contract_update").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(keys(&answer), schema("WebhookAnswer"));
    let error = app.api("GET", "/v1/users/nope", Some("Bearer tok_a")).await;
    assert_eq!(keys(&error.json), schema("Error"), "{}", error.body);
});
