//! Svix signature verification: what is refused with 401 (writing nothing) and what is accepted.

use reqwest::StatusCode;

use crate::clerk::{now_secs, svix_id, ClerkUser};
use crate::helpers::{into_json, new_secret, sign, spawn_app, TestApp};

/// Headers for `body` signed with `secret` at `timestamp`, under the `svix-` or `webhook-` prefix.
fn headers(prefix: &str, id: &str, timestamp: i64, signature: String) -> Vec<(String, String)> {
    vec![
        (format!("{prefix}-id"), id.to_string()),
        (format!("{prefix}-timestamp"), timestamp.to_string()),
        (format!("{prefix}-signature"), signature),
    ]
}

async fn post(app: &TestApp, body: &str, headers: &[(String, String)]) -> (StatusCode, serde_json::Value) {
    let headers: Vec<(&str, String)> = headers.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    into_json(app.post_webhook_raw(body.as_bytes().to_vec(), &headers).await).await
}

/// Asserts 401 invalid_signature and that nothing at all was written.
async fn assert_refused(app: &TestApp, body: &str, headers: &[(String, String)], what: &str) {
    let (status, json) = post(app, body, headers).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "{what}: expected 401, got {status} {json}"
    );
    assert_eq!(json["error"], "invalid_signature", "{what}: body {json}");
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: 401 needs a message: {json}"
    );
    assert_eq!(
        app.db.count_deliveries().await,
        0,
        "{what}: a refused delivery was recorded"
    );
    assert_eq!(
        app.db.count_all_users().await,
        0,
        "{what}: a refused delivery changed users"
    );
}

both_backends!(missing_headers_are_refused, |backend| async move {
    let app = spawn_app(backend).await;
    let body = ClerkUser::new(crate::clerk::now_ms()).created();
    let id = svix_id();
    let ts = now_secs();
    let full = headers("svix", &id, ts, sign(&app.secret, &id, ts, body.as_bytes()));
    for missing in 0..full.len() {
        let mut partial = full.clone();
        let (name, _) = partial.remove(missing);
        assert_refused(&app, &body, &partial, &format!("without {name}")).await;
    }
    assert_refused(&app, &body, &[], "without any header").await;
});

both_backends!(tampered_or_foreign_signatures_are_refused, |backend| async move {
    let app = spawn_app(backend).await;
    let user = ClerkUser::new(crate::clerk::now_ms());
    let body = user.created();
    let id = svix_id();
    let ts = now_secs();

    let good = sign(&app.secret, &id, ts, body.as_bytes());
    let tampered = body.replace("Lovelace", "Lovelacf");
    assert_refused(
        &app,
        &tampered,
        &headers("svix", &id, ts, good.clone()),
        "tampered body",
    )
    .await;
    assert_refused(
        &app,
        &body,
        &headers("svix", "msg_other", ts, good.clone()),
        "other svix-id",
    )
    .await;
    assert_refused(
        &app,
        &body,
        &headers("svix", &id, ts + 1, good.clone()),
        "other timestamp",
    )
    .await;

    let foreign = sign(&new_secret(), &id, ts, body.as_bytes());
    assert_refused(
        &app,
        &body,
        &headers("svix", &id, ts, foreign),
        "signed with another secret",
    )
    .await;
    let unprefixed = good.trim_start_matches("v1,").to_string();
    assert_refused(&app, &body, &headers("svix", &id, ts, unprefixed), "no v1, prefix").await;
    assert_refused(&app, &body, &headers("svix", &id, ts, "v1,garbage".into()), "garbage").await;
    assert_refused(&app, &body, &headers("svix", &id, ts, String::new()), "empty signature").await;
    assert_refused(&app, &body, &headers("svix", &id, 0, good), "timestamp 0").await;
});

both_backends!(timestamps_outside_five_minutes_are_refused, |backend| async move {
    let app = spawn_app(backend).await;
    let user = ClerkUser::new(crate::clerk::now_ms());
    let body = user.created();
    let id = svix_id();
    for (offset, what) in [(-6 * 60, "6 minutes old"), (6 * 60, "6 minutes ahead")] {
        let ts = now_secs() + offset;
        let signature = sign(&app.secret, &id, ts, body.as_bytes());
        assert_refused(&app, &body, &headers("svix", &id, ts, signature), what).await;
    }
    // Four minutes off either way is still accepted.
    let ts = now_secs() - 4 * 60;
    let signature = sign(&app.secret, &id, ts, body.as_bytes());
    let (status, json) = post(&app, &body, &headers("svix", &id, ts, signature)).await;
    assert_eq!(
        (status, json["outcome"].as_str()),
        (StatusCode::OK, Some("applied")),
        "{json}"
    );
    let later = user.at(user.updated_at + 1).updated();
    let (id2, ts) = (svix_id(), now_secs() + 4 * 60);
    let signature = sign(&app.secret, &id2, ts, later.as_bytes());
    let (status, json) = post(&app, &later, &headers("svix", &id2, ts, signature)).await;
    assert_eq!(
        (status, json["outcome"].as_str()),
        (StatusCode::OK, Some("applied")),
        "{json}"
    );
    assert_eq!(app.db.count_users(&user.id).await, 1);
});

both_backends!(webhook_prefixed_headers_are_accepted, |backend| async move {
    let app = spawn_app(backend).await;
    let user = ClerkUser::new(crate::clerk::now_ms());
    let body = user.created();
    let id = svix_id();
    let ts = now_secs();
    let signature = sign(&app.secret, &id, ts, body.as_bytes());
    let (status, json) = post(&app, &body, &headers("webhook", &id, ts, signature)).await;
    assert_eq!(
        (status, json["outcome"].as_str()),
        (StatusCode::OK, Some("applied")),
        "{json}"
    );
    assert_eq!(app.db.count_users(&user.id).await, 1);
    assert_eq!(
        app.db.delivery(&id).await.map(|d| d.outcome).as_deref(),
        Some("applied")
    );
});

both_backends!(any_of_several_signatures_may_match, |backend| async move {
    let app = spawn_app(backend).await;
    let user = ClerkUser::new(crate::clerk::now_ms());
    let body = user.created();
    let id = svix_id();
    let ts = now_secs();
    let old = sign(&new_secret(), &id, ts, body.as_bytes());
    let good = sign(&app.secret, &id, ts, body.as_bytes());

    // Only wrong ones: refused.
    let also_wrong = sign(&new_secret(), &id, ts, body.as_bytes());
    assert_refused(
        &app,
        &body,
        &headers("svix", &id, ts, format!("{old} {also_wrong}")),
        "two wrong",
    )
    .await;

    // Secret rotation: the old secret's signature first, the current one second.
    let (status, json) = post(&app, &body, &headers("svix", &id, ts, format!("{old} {good}"))).await;
    assert_eq!(
        (status, json["outcome"].as_str()),
        (StatusCode::OK, Some("applied")),
        "{json}"
    );
    assert_eq!(app.db.count_users(&user.id).await, 1);
});
