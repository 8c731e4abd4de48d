//! Forwarding (`forward.url`): every change of the feed POSTed to the application in seq order, signed the
//! Standard Webhooks way, retried until acknowledged, resumed from the saved cursor, refused without a secret.
//!
//! The application is [`Receiver`](crate::forward_receiver::Receiver).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode as ReqwestStatus;
use serde_json::Value;

use crate::clerk::{now_ms, svix_id, ClerkUser};
use crate::clerk_orgs::{ClerkMembership, ClerkOrganization};
use crate::forward_receiver::{feed_head, forward_env, saved_cursor, wait_cursor, Answer, Receiver, Seen};
use crate::helpers::{new_secret, spawn_app_with, spawn_app_with_clerk, TestApp, TestDatabase, SERVICE_TOKEN};

/// Every change of the feed as `GET /v1/changes` shows it, by seq.
async fn feed(app: &TestApp) -> BTreeMap<i64, Value> {
    let answer = app
        .api(
            "GET",
            "/v1/changes?after=0&limit=1000",
            Some(&format!("Bearer {SERVICE_TOKEN}")),
        )
        .await;
    assert_eq!(answer.status, ReqwestStatus::OK, "GET /v1/changes: {}", answer.body);
    answer.json["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("GET /v1/changes without changes: {}", answer.body))
        .iter()
        .map(|c| (c["seq"].as_i64().expect("a change without seq"), c.clone()))
        .collect()
}

/// What every forwarded request must satisfy, whatever the answers were: documented shape, a valid signature
/// with `secret` (and not with another), `change` as `GET /v1/changes` shows it; requests in non-decreasing seq
/// order; each change sent with the same body until its one acknowledgement, and never after it; every change of
/// the feed acknowledged, in seq order.
fn check_deliveries(seen: &[Seen], secret: &str, feed: &BTreeMap<i64, Value>) {
    let verifier = svix::webhooks::Webhook::new(secret).expect("the forwarding secret");
    let stranger = svix::webhooks::Webhook::new(&new_secret()).expect("another secret");
    for (i, request) in seen.iter().enumerate() {
        let seq = request.seq();
        assert_eq!(
            request.header("content-type"),
            "application/json",
            "request {i} (seq {seq})"
        );
        request.header("webhook-timestamp");
        verifier
            .verify(request.body.as_bytes(), &request.headers)
            .unwrap_or_else(|e| panic!("request {i} (seq {seq}) does not verify with forward.signing_secret: {e:?}"));
        assert!(
            stranger.verify(request.body.as_bytes(), &request.headers).is_err(),
            "request {i} (seq {seq}) verifies with a secret that is not forward.signing_secret"
        );
        let body = request.json();
        let keys: Vec<&str> = body
            .as_object()
            .expect("a JSON object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["change", "data", "type"],
            "request {i}: top-level keys of {body}"
        );
        let expected = feed
            .get(&seq)
            .unwrap_or_else(|| panic!("request {i} forwards seq {seq}, which the feed does not have: {body}"));
        assert_eq!(
            &body["change"], expected,
            "request {i}: `change` is not the feed's change {seq}"
        );
        let keys: Vec<&str> = body["change"]
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["at", "clerk_id", "kind", "op", "seq", "via"],
            "request {i}: keys of `change`"
        );
        assert_eq!(
            body["type"],
            format!(
                "{}.{}",
                expected["kind"].as_str().unwrap(),
                expected["op"].as_str().unwrap()
            ),
            "request {i}: `type` is <kind>.<op>"
        );
    }
    let seqs: Vec<i64> = seen.iter().map(Seen::seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] <= w[1]),
        "requests out of seq order (a change sent after a later one): {seqs:?}"
    );
    for (&seq, _) in feed.iter() {
        let attempts: Vec<&Seen> = seen.iter().filter(|s| s.seq() == seq).collect();
        let acks = attempts.iter().filter(|s| s.acked()).count();
        assert_eq!(
            acks,
            1,
            "change {seq} acknowledged {acks} times: {:?}",
            answers(&attempts)
        );
        assert!(
            attempts.last().is_some_and(|s| s.acked()),
            "change {seq} was sent again after it was acknowledged: {:?}",
            answers(&attempts)
        );
        assert!(
            attempts.iter().all(|s| s.body == attempts[0].body),
            "the retries of change {seq} carry different bodies"
        );
    }
    let acked: Vec<i64> = seen.iter().filter(|s| s.acked()).map(Seen::seq).collect();
    assert_eq!(
        acked,
        feed.keys().copied().collect::<Vec<_>>(),
        "acknowledged changes vs the feed"
    );
}

fn answers(attempts: &[&Seen]) -> Vec<Answer> {
    attempts.iter().map(|s| s.answer).collect()
}

/// The record as the `/v1` API shows it now: `(status, json)`. Memberships have no lookup by id: the entry of
/// their organization's list.
async fn api_view(app: &TestApp, kind: &str, clerk_id: &str, orgs: &BTreeMap<String, String>) -> (u16, Value) {
    let bearer = format!("Bearer {SERVICE_TOKEN}");
    match kind {
        "user" | "organization" => {
            let answer = app.api("GET", &format!("/v1/{kind}s/{clerk_id}"), Some(&bearer)).await;
            (answer.status.as_u16(), answer.json)
        }
        "membership" => {
            let org = orgs
                .get(clerk_id)
                .expect("the test knows the membership's organization");
            let answer = app
                .api(
                    "GET",
                    &format!("/v1/organizations/{org}/memberships?limit=500"),
                    Some(&bearer),
                )
                .await;
            assert_eq!(answer.status, ReqwestStatus::OK, "{}", answer.body);
            let entry = answer
                .json
                .as_array()
                .and_then(|list| list.iter().find(|m| m["clerk_id"] == clerk_id).cloned());
            match entry {
                Some(entry) => (200, entry),
                None => (404, Value::Null),
            }
        }
        other => panic!("unexpected kind {other}"),
    }
}

both_backends!(
    a_failing_application_gets_every_change_in_order_once_acknowledged,
    |backend| async move {
        let receiver = Receiver::start().await;
        let secret = new_secret();
        let app = spawn_app_with_clerk(backend, &forward_env(&receiver, &secret)).await;
        let t = now_ms() - 600_000;
        let ada = ClerkUser::new(t);
        let bob = ClerkUser::new(t);
        let org = ClerkOrganization::new(t);
        let member = ClerkMembership::new(&org, t);
        let orgs = BTreeMap::from([(member.id.clone(), org.id.clone())]);

        // Each step: what the application answers first, then the webhook. Data is read when a change is first
        // sent, so after each step the forwarded rows must equal what the API shows.
        let steps: Vec<(Vec<Answer>, String)> = vec![
            (
                // Five refusals: uncapped, the backoff would reach 4 s and 8 s.
                vec![
                    Answer::Status(500),
                    Answer::Status(500),
                    Answer::Status(503),
                    Answer::Status(502),
                    Answer::Status(500),
                ],
                ada.created(),
            ),
            (vec![Answer::Hang(Duration::from_secs(3))], ada.at(t + 1_000).updated()),
            (vec![Answer::Status(429)], org.created()),
            (vec![Answer::Status(404), Answer::Status(301)], member.created()),
            (vec![], bob.created()),
            (vec![Answer::Status(500)], bob.deleted(t + 2_000)),
        ];
        let mut done = 0;
        for (i, (answers, webhook)) in steps.into_iter().enumerate() {
            receiver.script(&answers);
            app.expect_outcome(&webhook, &svix_id(), "applied").await;
            let head = feed_head(&app).await;
            assert!(head > done, "step {i}: the webhook recorded no change");
            receiver.wait_acked_through(head, Duration::from_secs(30)).await;
            let seen = receiver.seen();
            for seq in done + 1..=head {
                let ack = seen
                    .iter()
                    .find(|s| s.acked() && s.seq() == seq)
                    .unwrap_or_else(|| panic!("step {i}: seq {seq} was skipped"))
                    .json();
                let (kind, clerk_id) = (
                    ack["change"]["kind"].as_str().unwrap(),
                    ack["change"]["clerk_id"].as_str().unwrap(),
                );
                let (status, shown) = api_view(&app, kind, clerk_id, &orgs).await;
                if ack["change"]["op"] == "deleted" {
                    assert_eq!(
                        ack["data"],
                        Value::Null,
                        "step {i}: a deleted {kind} forwards data: null"
                    );
                    assert!(
                        status == 410 || status == 404,
                        "step {i}: GET of the deleted {kind}: {status} {shown}"
                    );
                } else {
                    assert_eq!(status, 200, "step {i}: GET of {kind} {clerk_id}: {shown}");
                    assert_eq!(
                        ack["data"], shown,
                        "step {i}: seq {seq}: forwarded data vs the /v1 API's {kind}"
                    );
                }
            }
            done = head;
        }

        let seen = receiver.seen();
        let feed = feed(&app).await;
        assert_eq!(
            feed.keys().copied().collect::<Vec<_>>(),
            (1..=done).collect::<Vec<_>>(),
            "the feed has gaps"
        );
        check_deliveries(&seen, &secret, &feed);
        // The scripted failures were all retried: 5 + 1 + 1 + 2 + 0 + 1 of them, plus one ack per change.
        assert_eq!(
            seen.len() as i64,
            10 + done,
            "requests: {:?}",
            answers(&seen.iter().collect::<Vec<_>>())
        );
        // Retries come quickly (first within 1 s) and the backoff is capped at max_backoff_secs (1 s here).
        for seq in 1..=done {
            let attempts: Vec<&Seen> = seen.iter().filter(|s| s.seq() == seq).collect();
            for pair in attempts.windows(2) {
                let waited = pair[1].at.duration_since(pair[0].at);
                let allowed = match pair[0].answer {
                    Answer::Hang(_) => Duration::from_millis(1000 + 1000 + 1500),
                    Answer::Status(_) | Answer::Redirect(..) => Duration::from_millis(1000 + 1500),
                };
                // Capped at 1 s (plus slack for a loaded machine); uncapped, the fifth wait would be 8 s.
                assert!(
                    waited <= allowed,
                    "seq {seq}: {waited:?} between two attempts ({:?})",
                    pair[0].answer
                );
                // And there is a backoff: a refused change is not retried in a tight loop.
                assert!(
                    waited >= Duration::from_millis(400),
                    "seq {seq}: retried after only {waited:?} ({:?})",
                    pair[0].answer
                );
            }
        }
        let first = seen
            .iter()
            .filter(|s| s.seq() == 1)
            .take(2)
            .map(|s| s.at)
            .collect::<Vec<_>>();
        assert!(
            first[1].duration_since(first[0]) <= Duration::from_millis(1500),
            "the first retry came after {:?}",
            first[1].duration_since(first[0])
        );
        wait_cursor(&app, done, Duration::from_secs(10)).await;
    }
);

both_backends!(
    forwarding_resumes_from_the_saved_cursor_after_a_restart,
    |backend| async move {
        let receiver = Receiver::start().await;
        let secret = new_secret();
        let app = spawn_app_with_clerk(backend, &forward_env(&receiver, &secret)).await;
        let t = now_ms() - 600_000;
        let users: Vec<ClerkUser> = (0..5).map(|i| ClerkUser::new(t + i)).collect();

        // Two changes acknowledged and the cursor saved.
        for user in &users[..2] {
            app.expect_outcome(&user.created(), &svix_id(), "applied").await;
        }
        receiver.wait_acked_through(2, Duration::from_secs(30)).await;
        wait_cursor(&app, 2, Duration::from_secs(10)).await;

        // The application goes down: the third change is refused until after the restart.
        receiver.script(&[Answer::Status(503); 1000]);
        app.expect_outcome(&users[2].created(), &svix_id(), "applied").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !receiver.seen().iter().any(|s| s.seq() == 3) {
            assert!(Instant::now() < deadline, "change 3 was never attempted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let app = app.restart().await;
        assert_eq!(
            saved_cursor(&app).await,
            2,
            "the cursor moved past an unacknowledged change"
        );
        let before_recovery = receiver.seen().len();
        receiver.inbox.lock().expect("inbox lock").script.clear();

        for user in &users[3..] {
            app.expect_outcome(&user.created(), &svix_id(), "applied").await;
        }
        receiver.wait_acked_through(5, Duration::from_secs(30)).await;
        wait_cursor(&app, 5, Duration::from_secs(10)).await;

        let seen = receiver.seen();
        let after: Vec<i64> = seen[before_recovery..].iter().map(Seen::seq).collect();
        assert!(
            after.iter().all(|&seq| seq >= 3),
            "after the restart, acknowledged changes were sent again: {after:?}"
        );
        let feed = feed(&app).await;
        assert_eq!(feed.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        check_deliveries(&seen, &secret, &feed);

        // A second restart with nothing pending sends nothing.
        let count = seen.len();
        let app = app.restart().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(receiver.seen().len(), count, "a restart re-sent acknowledged changes");
        assert_eq!(saved_cursor(&app).await, 5);
    }
);

/// The environment `helpers::settings_for` gives the daemon, plus `extra` (Settings::load directly: the
/// harness's `try_build` panics on a configuration error instead of returning it).
fn load_with(database: &TestDatabase, extra: &[(&str, &str)]) -> Result<clerk_sync::config::Settings, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::from([
        ("DATABASE_URL".to_string(), database.url().to_string()),
        ("CLERK_WEBHOOK_SIGNING_SECRET".to_string(), new_secret()),
        ("CLERK_SYNC_LISTEN".to_string(), "127.0.0.1:0".to_string()),
        ("CLERK_SYNC_METRICS_LISTEN".to_string(), "127.0.0.1:0".to_string()),
    ]);
    for (key, value) in extra {
        env.insert(key.to_string(), value.to_string());
    }
    let lookup = move |key: &str| env.get(key).filter(|v| !v.is_empty()).cloned();
    clerk_sync::config::Settings::load(None, &lookup).map_err(|e| e.to_string())
}

both_backends!(
    forwarding_without_a_valid_signing_secret_refuses_to_start,
    |backend| async move {
        let database = TestDatabase::create(backend).await;
        let url = "http://127.0.0.1:9/hooks";
        for secret in [
            "",
            "   ",
            "not-a-secret",
            "whsec_",
            "whsec_!!!not base64!!!",
            "sk_test_abc",
        ] {
            let error = load_with(
                &database,
                &[
                    ("CLERK_SYNC_FORWARD__URL", url),
                    ("CLERK_SYNC_FORWARD__SIGNING_SECRET", secret),
                ],
            )
            .err()
            .unwrap_or_else(|| panic!("forward.url with signing secret {secret:?} was accepted"));
            assert!(
                error.contains("forward.signing_secret") && error.contains("CLERK_SYNC_FORWARD__SIGNING_SECRET"),
                "secret {secret:?}: the error does not name forward.signing_secret: {error}"
            );
        }

        // The daemon itself exits with EX_CONFIG (78) and says why, before touching the database.
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_clerk-sync"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", database.url())
            .env("CLERK_WEBHOOK_SIGNING_SECRET", new_secret())
            .env("CLERK_SYNC_LISTEN", "127.0.0.1:0")
            .env("CLERK_SYNC_METRICS_LISTEN", "127.0.0.1:0")
            .env("CLERK_SYNC_FORWARD__URL", url)
            .env("CLERK_SYNC_FORWARD__SIGNING_SECRET", "not-a-secret")
            .output()
            .expect("cannot run clerk-sync");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "stderr: {stderr}");
        assert!(stderr.contains("forward.signing_secret"), "stderr: {stderr}");

        // The same URL with a valid secret starts.
        let secret = new_secret();
        assert!(load_with(
            &database,
            &[
                ("CLERK_SYNC_FORWARD__URL", url),
                ("CLERK_SYNC_FORWARD__SIGNING_SECRET", &secret)
            ]
        )
        .is_ok());
        let receiver = Receiver::start().await;
        let app = spawn_app_with(backend, &forward_env(&receiver, &secret)).await;
        app.wait_ready(Duration::from_secs(10)).await;
    }
);
