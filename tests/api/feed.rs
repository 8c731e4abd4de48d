//! The change feed: `clerk_sync_changes` holds exactly the committed changes, `GET /v1/changes` pages and streams
//! them (JSON and Server-Sent Events, resuming with `Last-Event-ID`), retention answers 410, and every replica
//! drops what another one changed from its cache within 1 s.

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::api_checks::assert_error;
use crate::clerk::{envelope, now_ms, svix_id, user_mock, ClerkUser};
use crate::clerk_orgs::{ClerkMembership, ClerkOrganization};
use crate::helpers::{spawn_app_with_clerk, ApiAnswer, Backend, SseEvent, TestApp, SERVICE_TOKEN};

/// (kind, clerk_id, op, via) of one change.
type Change = (String, String, String, String);

fn change(kind: &str, clerk_id: &str, op: &str, via: &str) -> Change {
    (kind.into(), clerk_id.into(), op.into(), via.into())
}

fn webhook(kind: &str, clerk_id: &str, op: &str) -> Change {
    change(kind, clerk_id, op, "webhook")
}

/// The (kind, clerk_id, op, via) of a change as the API shows it, after checking its shape.
fn tuple_of(c: &Value) -> Change {
    let object = c
        .as_object()
        .unwrap_or_else(|| panic!("a change is not an object: {c}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["at", "clerk_id", "kind", "op", "seq", "via"], "fields of {c}");
    assert!(c["seq"].as_i64().is_some_and(|s| s > 0), "seq of {c}");
    let at = c["at"].as_str().unwrap_or_else(|| panic!("at of {c}"));
    assert!(
        at.len() == 24 && at.as_bytes()[10] == b'T' && at.ends_with('Z'),
        "at is RFC 3339 UTC with milliseconds: {c}"
    );
    let text = |name: &str| c[name].as_str().unwrap_or_else(|| panic!("{name} of {c}")).to_string();
    (text("kind"), text("clerk_id"), text("op"), text("via"))
}

fn seq_of(c: &Value) -> i64 {
    c["seq"].as_i64().unwrap_or_else(|| panic!("seq of {c}"))
}

fn assert_strictly_increasing(changes: &[Value], context: &str) {
    let seqs: Vec<i64> = changes.iter().map(seq_of).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "{context}: seqs not strictly increasing: {seqs:?}"
    );
}

/// `GET /v1/changes{query}` with the service token.
async fn changes_api(app: &TestApp, query: &str) -> ApiAnswer {
    app.api(
        "GET",
        &format!("/v1/changes{query}"),
        Some(&format!("Bearer {SERVICE_TOKEN}")),
    )
    .await
}

/// A 200 page: its changes and `next`.
async fn page(app: &TestApp, query: &str) -> (Vec<Value>, i64) {
    let answer = changes_api(app, query).await;
    assert_eq!(answer.status, StatusCode::OK, "GET /v1/changes{query}: {}", answer.body);
    let changes = answer.json["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("GET /v1/changes{query}: no changes array: {}", answer.body))
        .clone();
    let next = answer.json["next"]
        .as_i64()
        .unwrap_or_else(|| panic!("GET /v1/changes{query}: no next: {}", answer.body));
    (changes, next)
}

/// Every change in the feed, in one page.
async fn all_changes(app: &TestApp) -> Vec<Value> {
    let (changes, _) = page(app, "?after=0&limit=1000").await;
    assert_strictly_increasing(&changes, "the whole feed");
    changes
}

/// The feed as the table holds it, in seq order.
async fn table_changes(app: &TestApp) -> Vec<Change> {
    app.db
        .strings("SELECT kind || ' ' || clerk_id || ' ' || op || ' ' || via FROM clerk_sync_changes ORDER BY seq")
        .await
        .into_iter()
        .map(|row| {
            let row = row.expect("a NULL feed column");
            let parts: Vec<&str> = row.split(' ').collect();
            change(parts[0], parts[1], parts[2], parts[3])
        })
        .collect()
}

async fn feed_rows(app: &TestApp) -> i64 {
    app.db.int("SELECT count(*) FROM clerk_sync_changes").await
}

/// An event type the daemon does not sync: recorded as ignored.
fn ignored_event() -> String {
    envelope(
        "session.created",
        json!({"id": "sess_2Lh9KRb6pzqBjHMFl5wd3Ehq1Ab", "object": "session", "user_id": "user_29w83sxmDNGwOuEthce5gg56FcC",
               "status": "active", "created_at": now_ms(), "updated_at": now_ms()}),
        now_ms(),
    )
}

/// Checks an event against the change the JSON page shows for the same seq.
fn assert_event_is(event: &SseEvent, change: &Value) {
    let (kind, _, op, _) = tuple_of(change);
    assert_eq!(
        event.id.as_deref(),
        Some(seq_of(change).to_string().as_str()),
        "id of {event:?}"
    );
    assert_eq!(
        event.event.as_deref(),
        Some(format!("{kind}.{op}").as_str()),
        "event name of {event:?}"
    );
    let data: Value = serde_json::from_str(&event.data).unwrap_or_else(|e| panic!("data of {event:?}: {e}"));
    assert_eq!(&data, change, "data of the event with id {:?}", event.id);
}

/// Polls `probe` every 10 ms until it gives `Some` (at most 5 s, so a failure shows the real latency); returns
/// the value and how long after `since` it came.
async fn poll_until<T, F, Fut>(since: Instant, what: &str, mut probe: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    loop {
        if let Some(value) = probe().await {
            return (value, since.elapsed());
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "{what}: still not the case 5 s later"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 1. JSON pages after a mixed load.

both_backends!(json_pages_list_exactly_the_committed_changes, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let t = now_ms() - 60_000;
    let (u1, u2, fetched) = (ClerkUser::new(t), ClerkUser::new(t), ClerkUser::new(t));
    let org = ClerkOrganization::new(t);
    user_mock(&fetched).expect(1).mount(app.clerk()).await;

    app.expect_outcome(&u1.created(), &svix_id(), "applied").await;
    let update = svix_id();
    app.expect_outcome(&u1.at(t + 10).updated(), &update, "applied").await;
    app.expect_outcome(&u1.at(t + 10).updated(), &update, "duplicate").await;
    app.expect_outcome(&u1.at(t + 5).updated(), &svix_id(), "stale").await;
    app.expect_outcome(&u1.at(t + 10).updated(), &svix_id(), "stale").await;
    // An update before its create: it inserts the row, so it is the creation; the create is then stale.
    app.expect_outcome(&u2.at(t + 10).updated(), &svix_id(), "applied")
        .await;
    app.expect_outcome(&u2.created(), &svix_id(), "stale").await;
    app.expect_outcome(&u1.deleted(t + 20), &svix_id(), "applied").await;
    app.expect_outcome(&u1.deleted(t + 25), &svix_id(), "tombstoned").await;
    app.expect_outcome(&u1.at(t + 30).updated(), &svix_id(), "tombstoned")
        .await;
    app.expect_outcome(&ignored_event(), &svix_id(), "ignored").await;
    app.expect_outcome(&org.created(), &svix_id(), "applied").await;
    // A membership embedding a newer copy of its organization updates the organization too (first)...
    let m1 = ClerkMembership::new(&org.at(t + 50, "Acme Two"), t + 100);
    app.expect_outcome(&m1.created(), &svix_id(), "applied").await;
    // ... one embedding an older copy does not.
    let m2 = ClerkMembership::new(&org, t + 100);
    app.expect_outcome(&m2.created(), &svix_id(), "applied").await;
    // A sync finding a newer version in Clerk updates through the fallback; the same version again changes nothing.
    user_mock(&u2.at(t + 40)).expect(2).mount(app.clerk()).await;
    assert_eq!(app.sync_user(&u2.id, SERVICE_TOKEN).await.status, StatusCode::OK);
    assert_eq!(app.sync_user(&u2.id, SERVICE_TOKEN).await.status, StatusCode::OK);
    // The fallback creates a user from Clerk; reading it again (cache) or reading a stored user changes nothing.
    let created = app.get_user(&fetched.id, SERVICE_TOKEN).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(app.get_user(&fetched.id, SERVICE_TOKEN).await.status, StatusCode::OK);
    assert_eq!(app.get_user(&u2.id, SERVICE_TOKEN).await.status, StatusCode::OK);

    let expected = vec![
        webhook("user", &u1.id, "created"),
        webhook("user", &u1.id, "updated"),
        webhook("user", &u2.id, "created"),
        webhook("user", &u1.id, "deleted"),
        webhook("organization", &org.id, "created"),
        webhook("organization", &org.id, "updated"),
        webhook("membership", &m1.id, "created"),
        webhook("membership", &m2.id, "created"),
        change("user", &u2.id, "updated", "fallback"),
        change("user", &fetched.id, "created", "fallback"),
    ];

    // Pages of 3: each `next` is the last seq of its page, and resumes right after it.
    let mut after = 0;
    let mut seen: Vec<Value> = Vec::new();
    for (n, size) in [3, 3, 3, 1].into_iter().enumerate() {
        let (changes, next) = page(&app, &format!("?after={after}&limit=3")).await;
        assert_eq!(changes.len(), size, "page {n} after {after}: {changes:?}");
        assert_strictly_increasing(&changes, "a page");
        assert!(
            seq_of(&changes[0]) > after,
            "page {n} starts after {after}: {changes:?}"
        );
        assert_eq!(next, seq_of(&changes[size - 1]), "next of page {n} is its last seq");
        seen.extend(changes);
        after = next;
    }
    let (changes, next) = page(&app, &format!("?after={after}&limit=3")).await;
    assert!(changes.is_empty(), "nothing after the last change: {changes:?}");
    assert_eq!(next, after, "an empty page's next is its after");

    assert_strictly_increasing(&seen, "the pages together");
    let got: Vec<Change> = seen.iter().map(tuple_of).collect();
    assert_eq!(got, expected, "the feed, paged");
    // Stale, duplicate, tombstoned and ignored deliveries and plain reads wrote nothing.
    assert_eq!(table_changes(&app).await, expected, "clerk_sync_changes");

    // Defaults: after 0, limit 100.
    let (changes, next) = page(&app, "").await;
    assert_eq!(changes, seen, "GET /v1/changes without parameters");
    assert_eq!(next, seq_of(&seen[9]));
    // A page from the middle.
    let (changes, next) = page(&app, &format!("?after={}&limit=2", seq_of(&seen[3]))).await;
    assert_eq!(changes, seen[4..6].to_vec());
    assert_eq!(next, seq_of(&seen[5]));
    app.clerk().verify().await;
});

// ---------------------------------------------------------------------------------------------------------------
// 2. Parameters, authentication, retention.

both_backends!(bad_parameters_are_400_and_a_missing_token_401, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let t = now_ms() - 60_000;
    let users: Vec<ClerkUser> = (0..3).map(|_| ClerkUser::new(t)).collect();
    for user in &users {
        app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    }

    for query in [
        "?after=-1",
        "?after=x",
        "?after=1.5",
        "?after=",
        "?limit=abc",
        "?limit=-5",
        "?after=0&limit=1e3",
    ] {
        let answer = changes_api(&app, query).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_parameter", query);
    }

    // A limit above the cap is accepted (capped at 1000): here it returns all three.
    let (changes, next) = page(&app, "?limit=5000").await;
    let ids: Vec<String> = changes.iter().map(|c| tuple_of(c).1).collect();
    let want: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    assert_eq!(ids, want);
    assert_eq!(next, seq_of(&changes[2]));

    let answer = app.api("GET", "/v1/changes", None).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized", "no token");
    let answer = app.api("GET", "/v1/changes", Some("Bearer tok_wrong")).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized", "wrong token");
    let response = app
        .client
        .get(format!("{}/v1/changes", app.address))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("GET /v1/changes (SSE) failed to send");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "SSE without a token");

    // Over a thousand changes (written straight to the table): a page holds at most 1000, 100 by default.
    app.db
        .execute(
            "INSERT INTO clerk_sync_changes (kind, clerk_id, op, via) \
             WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 1100) \
             SELECT 'user', 'user_bulk' || n, 'created', 'backfill' FROM g",
        )
        .await;
    let (changes, next) = page(&app, "?limit=5000").await;
    assert_eq!(changes.len(), 1000, "limit=5000 is capped at 1000");
    assert_strictly_increasing(&changes, "a capped page");
    assert_eq!(next, seq_of(&changes[999]));
    let (changes, next) = page(&app, "").await;
    assert_eq!(changes.len(), 100, "the default limit");
    assert_eq!(next, seq_of(&changes[99]));
    let (changes, next) = page(&app, &format!("?after={next}&limit=1000")).await;
    assert_eq!(changes.len(), 1000, "a full page after the default one");
    let (changes, _) = page(&app, &format!("?after={next}&limit=1000")).await;
    assert_eq!(changes.len(), 1103 - 1100, "the rest");
});

both_backends!(resuming_before_the_pruned_changes_is_410, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let t = now_ms() - 60_000;
    for _ in 0..3 {
        app.expect_outcome(&ClerkUser::new(t).created(), &svix_id(), "applied")
            .await;
    }
    let seqs: Vec<i64> = all_changes(&app).await.iter().map(seq_of).collect();
    assert_eq!(seqs.len(), 3);
    let (s1, s2, s3) = (seqs[0], seqs[1], seqs[2]);
    let age = |through: i64| match backend {
        Backend::Postgres => {
            format!("UPDATE clerk_sync_changes SET at = now() - interval '2 days' WHERE seq <= {through}")
        }
        Backend::Sqlite => format!(
            "UPDATE clerk_sync_changes SET at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 days') WHERE seq <= {through}"
        ),
    };
    let db = app.connect_db().await;

    // The first two are two days old; retention one hour prunes exactly those.
    app.db.execute(&age(s2)).await;
    assert_eq!(db.prune_changes(Duration::from_secs(3600)).await.expect("prune"), 2);
    for after in [0, s1] {
        let answer = changes_api(&app, &format!("?after={after}")).await;
        assert_error(&answer, StatusCode::GONE, "changes_pruned", &format!("after={after}"));
    }
    let (changes, next) = page(&app, &format!("?after={s2}")).await;
    assert_eq!(changes.iter().map(seq_of).collect::<Vec<_>>(), [s3]);
    assert_eq!(next, s3);
    // The stream refuses the same resume points.
    let response = app
        .client
        .get(format!("{}/v1/changes", app.address))
        .header("accept", "text/event-stream")
        .header("authorization", format!("Bearer {SERVICE_TOKEN}"))
        .header("last-event-id", s1.to_string())
        .send()
        .await
        .expect("GET /v1/changes (SSE) failed to send");
    assert_eq!(response.status(), StatusCode::GONE, "SSE resuming after a pruned seq");

    // Everything old, pruned with age zero.
    app.db.execute(&age(s3)).await;
    assert_eq!(db.prune_changes(Duration::ZERO).await.expect("prune"), 1);
    assert_eq!(feed_rows(&app).await, 0);
    let answer = changes_api(&app, &format!("?after={s2}")).await;
    assert_error(
        &answer,
        StatusCode::GONE,
        "changes_pruned",
        "after the previous prune mark",
    );
    let (changes, next) = page(&app, &format!("?after={s3}")).await;
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(next, s3);

    // Seqs never go back after pruning everything.
    let late = ClerkUser::new(t);
    app.expect_outcome(&late.created(), &svix_id(), "applied").await;
    let (changes, _) = page(&app, &format!("?after={s3}")).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        seq_of(&changes[0]) > s3,
        "a new change after pruning reuses a seq: {changes:?}"
    );
    assert_eq!(tuple_of(&changes[0]), webhook("user", &late.id, "created"));
    db.close().await;
});

// ---------------------------------------------------------------------------------------------------------------
// 3. Server-Sent Events.

both_backends!(
    sse_resumes_with_last_event_id_missing_nothing_and_repeating_nothing,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let t = now_ms() - 60_000;
        let users: Vec<ClerkUser> = (0..4).map(|_| ClerkUser::new(t)).collect();
        for user in &users[..3] {
            app.expect_outcome(&user.created(), &svix_id(), "applied").await;
        }

        // A first client: the three existing changes, then one committed while it listens, within 1 s.
        let mut first = app.changes_stream(&app.address, "?after=0", None).await;
        let mut received = first.take(3, Duration::from_secs(5)).await;
        app.expect_outcome(&users[3].created(), &svix_id(), "applied").await;
        let committed = Instant::now();
        let live = first
            .next_event(Duration::from_secs(5))
            .await
            .expect("a change committed while the stream is open never arrived");
        let latency = committed.elapsed();
        assert!(
            latency < Duration::from_secs(1),
            "the open stream got the new change {latency:?} after its commit"
        );
        received.push(live);
        let feed = all_changes(&app).await;
        assert_eq!(feed.len(), 4);
        for (event, change) in received.iter().zip(&feed) {
            assert_event_is(event, change);
        }
        let last_id = received[3].id.clone().expect("an event without id");
        drop(first);

        // While no one listens: changes, and deliveries that change nothing.
        let (u0, u1) = (&users[0], &users[1]);
        let org = ClerkOrganization::new(t);
        let membership = ClerkMembership::new(&org, t + 100);
        let update = svix_id();
        app.expect_outcome(&u0.at(t + 10).updated(), &update, "applied").await;
        app.expect_outcome(&u0.at(t + 10).updated(), &update, "duplicate").await;
        app.expect_outcome(&u0.at(t + 5).updated(), &svix_id(), "stale").await;
        app.expect_outcome(&u1.deleted(t + 10), &svix_id(), "applied").await;
        app.expect_outcome(&u1.at(t + 20).updated(), &svix_id(), "tombstoned")
            .await;
        app.expect_outcome(&ignored_event(), &svix_id(), "ignored").await;
        app.expect_outcome(&membership.created(), &svix_id(), "applied").await;
        let missed = vec![
            webhook("user", &u0.id, "updated"),
            webhook("user", &u1.id, "deleted"),
            webhook("organization", &org.id, "created"),
            webhook("membership", &membership.id, "created"),
        ];

        // The client comes back: Last-Event-ID wins over a conflicting after=0.
        let mut second = app.changes_stream(&app.address, "?after=0", Some(&last_id)).await;
        let resumed = second.take(missed.len(), Duration::from_secs(5)).await;
        let feed = all_changes(&app).await;
        assert_eq!(feed.len(), 4 + missed.len());
        for (event, change) in resumed.iter().zip(&feed[4..]) {
            assert_event_is(event, change);
        }
        assert_eq!(feed[4..].iter().map(tuple_of).collect::<Vec<_>>(), missed);

        // A mixed load while it listens: ten users at once, each through stale, duplicate, tombstoned and ignored
        // deliveries; half of them deleted.
        let load: Vec<ClerkUser> = (0..10).map(|_| ClerkUser::new(t)).collect();
        let deliveries = load.iter().enumerate().map(|(i, user)| {
            let app = &app;
            async move {
                let update = svix_id();
                app.expect_outcome(&user.at(t + 10).updated(), &update, "applied").await;
                app.expect_outcome(&user.created(), &svix_id(), "stale").await;
                app.expect_outcome(&user.at(t + 10).updated(), &update, "duplicate")
                    .await;
                app.expect_outcome(&ignored_event(), &svix_id(), "ignored").await;
                app.expect_outcome(&user.at(t + 20).updated(), &svix_id(), "applied")
                    .await;
                app.expect_outcome(&user.at(t + 15).updated(), &svix_id(), "stale")
                    .await;
                if i % 2 == 0 {
                    app.expect_outcome(&user.deleted(t + 30), &svix_id(), "applied").await;
                    app.expect_outcome(&user.at(t + 40).updated(), &svix_id(), "tombstoned")
                        .await;
                }
            }
        });
        futures_util::future::join_all(deliveries).await;
        let loaded = second.take(25, Duration::from_secs(5)).await;
        assert_eq!(
            second.next_event(Duration::from_millis(1500)).await,
            None,
            "the stream sent more than the committed changes"
        );
        assert!(!second.ended(), "the stream ended while the daemon runs");

        // The two connections together are the feed, each change exactly once, in seq order.
        let feed = all_changes(&app).await;
        let streamed: Vec<&SseEvent> = received.iter().chain(&resumed).chain(&loaded).collect();
        assert_eq!(streamed.len(), feed.len(), "streamed {streamed:?}");
        assert_stream_is_the_feed(&app, &streamed, &feed, &load).await;

        // `after` alone sets where a new stream starts.
        let second_last = seq_of(&feed[feed.len() - 2]);
        let mut third = app
            .changes_stream(&app.address, &format!("?after={second_last}"), None)
            .await;
        let tail = third.take(1, Duration::from_secs(5)).await;
        assert_event_is(&tail[0], &feed[feed.len() - 1]);
        assert_eq!(third.next_event(Duration::from_millis(300)).await, None);
    }
);

/// With nothing to send, an open stream gets a keep-alive comment every 15 s (and no event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_gets_keep_alive_comments() {
    let app = spawn_app_with_clerk(Backend::Sqlite, &[]).await;
    let mut stream = app.changes_stream(&app.address, "", None).await;
    let opened = Instant::now();
    while stream.comments == 0 && opened.elapsed() < Duration::from_secs(17) {
        assert_eq!(
            stream.next_event(Duration::from_millis(200)).await,
            None,
            "an event from an empty feed"
        );
        assert!(!stream.ended(), "the idle stream ended");
    }
    let waited = opened.elapsed();
    assert_eq!(stream.comments, 1, "no keep-alive comment within {waited:?}");
    assert!(
        waited > Duration::from_secs(14),
        "the keep-alive came after {waited:?}, not about 15 s"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Replicas.

/// `GET {address}/v1/users/{clerk_id}` with the service token: the status and JSON body.
async fn get_user_on(app: &TestApp, address: &str, clerk_id: &str) -> (StatusCode, Value) {
    let response = app
        .client
        .get(format!("{address}/v1/users/{clerk_id}"))
        .bearer_auth(SERVICE_TOKEN)
        .send()
        .await
        .expect("GET /v1/users failed to send");
    crate::helpers::into_json(response).await
}

/// A user cached on replica B, updated and then deleted through replica A: B answers the new row, then 410,
/// each within 1 s of the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_drops_what_another_changed_within_a_second() {
    let app = spawn_app_with_clerk(Backend::Postgres, &[]).await;
    let t = now_ms() - 60_000;
    let user = ClerkUser::new(t);
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    // B starts after the creation, so its follower (which starts at the head) has no reason to drop the entry
    // it is about to cache: a follower catching up on the creation could otherwise drop it, harmlessly.
    let replica = app.spawn_replica().await;

    // B reads it, then serves it from its cache: a write behind the daemons' back does not show.
    let (status, json) = get_user_on(&app, &replica.address, &user.id).await;
    assert_eq!(
        (status, json["first_name"].as_str()),
        (StatusCode::OK, Some("Ada")),
        "{json}"
    );
    app.db
        .execute(&format!(
            "UPDATE users SET first_name = 'Direct' WHERE clerk_id = '{}'",
            user.id
        ))
        .await;
    let (status, json) = get_user_on(&app, &replica.address, &user.id).await;
    assert_eq!(
        (status, json["first_name"].as_str()),
        (StatusCode::OK, Some("Ada")),
        "B serves the user from its cache: {json}"
    );

    // Updated through A.
    let mut renamed = user.at(t + 10);
    renamed.first_name = Some("Grace".into());
    app.expect_outcome(&renamed.updated(), &svix_id(), "applied").await;
    let committed = Instant::now();
    let ((), latency) = poll_until(committed, "B serves the update", || async {
        let (status, json) = get_user_on(&app, &replica.address, &user.id).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        match json["first_name"].as_str() {
            Some("Grace") => Some(()),
            Some("Ada") => None,
            other => panic!("B served first_name {other:?}: {json}"),
        }
    })
    .await;
    assert!(
        latency < Duration::from_secs(1),
        "B served the old row {latency:?} after the update committed"
    );

    // Deleted through A.
    app.expect_outcome(&user.deleted(t + 20), &svix_id(), "applied").await;
    let committed = Instant::now();
    let ((), latency) = poll_until(committed, "B answers 410", || async {
        let (status, json) = get_user_on(&app, &replica.address, &user.id).await;
        match status {
            StatusCode::GONE => Some(()),
            StatusCode::OK if json["first_name"] == "Grace" => None,
            _ => panic!("B answered {status} {json}"),
        }
    })
    .await;
    assert!(
        latency < Duration::from_secs(1),
        "B served the deleted user {latency:?} after the delete committed"
    );
    assert_eq!(get_user_on(&app, &app.address, &user.id).await.0, StatusCode::GONE, "A");
}

/// A stream opened on one replica shows the changes committed through another, within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_one_replica_shows_changes_committed_through_another() {
    let app = spawn_app_with_clerk(Backend::Postgres, &[]).await;
    let replica = app.spawn_replica().await;
    let user = ClerkUser::new(now_ms() - 60_000);
    let mut stream = app.changes_stream(&replica.address, "", None).await;
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    let committed = Instant::now();
    let event = stream
        .next_event(Duration::from_secs(5))
        .await
        .expect("the change never reached the other replica's stream");
    let latency = committed.elapsed();
    assert!(
        latency < Duration::from_secs(1),
        "the stream on B got A's change after {latency:?}"
    );
    let feed = all_changes(&app).await;
    assert_eq!(feed.len(), 1);
    assert_event_is(&event, &feed[0]);
    assert_eq!(tuple_of(&feed[0]), webhook("user", &user.id, "created"));
}

/// Asserts one delivery to `address` (either replica) is acknowledged with `outcome`.
async fn expect_on(app: &TestApp, address: &str, body: &str, svix_id: &str, outcome: &str) {
    let (status, json) = app.deliver_to(address, body, svix_id).await;
    assert_eq!(
        (status, json["outcome"].as_str()),
        (StatusCode::OK, Some(outcome)),
        "delivery {svix_id} to {address}: {json}"
    );
}

/// Two replicas committing at once: an SSE client on one and a JSON pager on the other, both following while
/// the load runs, each see every committed change exactly once, in seq order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_miss_nothing_while_two_replicas_commit_at_once() {
    let app = spawn_app_with_clerk(Backend::Postgres, &[]).await;
    let replica = app.spawn_replica().await;
    let t = now_ms() - 60_000;
    let users: Vec<ClerkUser> = (0..30).map(|_| ClerkUser::new(t)).collect();
    let total = users.len() * 2 + users.len() / 2;
    let mut stream = app.changes_stream(&replica.address, "", None).await;

    let load = futures_util::future::join_all(users.iter().enumerate().map(|(i, user)| {
        let (app, a, b) = if i % 2 == 0 {
            (&app, app.address.as_str(), replica.address.as_str())
        } else {
            (&app, replica.address.as_str(), app.address.as_str())
        };
        async move {
            expect_on(app, a, &user.created(), &svix_id(), "applied").await;
            let update = svix_id();
            expect_on(app, b, &user.at(t + 10).updated(), &update, "applied").await;
            expect_on(app, a, &user.at(t + 10).updated(), &update, "duplicate").await;
            expect_on(app, a, &user.at(t + 5).updated(), &svix_id(), "stale").await;
            if i % 2 == 0 {
                expect_on(app, b, &user.deleted(t + 20), &svix_id(), "applied").await;
            }
        }
    }));
    let pager = async {
        let (mut seen, mut after) = (Vec::new(), 0);
        let started = Instant::now();
        while seen.len() < total {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the pager saw {} of {total} changes",
                seen.len()
            );
            let (changes, next) = page(&app, &format!("?after={after}&limit=7")).await;
            assert!(changes.len() <= 7);
            if changes.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen.extend(changes);
            after = next;
        }
        seen
    };
    let (_, paged) = tokio::join!(load, pager);
    let streamed = stream.take(total, Duration::from_secs(5)).await;
    assert_eq!(
        stream.next_event(Duration::from_millis(1500)).await,
        None,
        "more events than changes"
    );

    let feed = all_changes(&app).await;
    assert_eq!(feed.len(), total);
    assert_eq!(paged, feed, "what the pager saw while the load ran");
    let streamed: Vec<&SseEvent> = streamed.iter().collect();
    assert_stream_is_the_feed(&app, &streamed, &feed, &users).await;
}

/// The streamed events are the feed, change for change; the feed is what the table holds; and each of `users`
/// (loaded with a create, an update, and for every other one a delete, among ignored deliveries) has exactly
/// those changes, in order.
async fn assert_stream_is_the_feed(app: &TestApp, streamed: &[&SseEvent], feed: &[Value], users: &[ClerkUser]) {
    for (event, change) in streamed.iter().zip(feed) {
        assert_event_is(event, change);
    }
    let got: Vec<Change> = feed.iter().map(tuple_of).collect();
    assert_eq!(table_changes(app).await, got, "the stream and clerk_sync_changes");
    for (i, user) in users.iter().enumerate() {
        let mine: Vec<Change> = got.iter().filter(|c| c.1 == user.id).cloned().collect();
        let mut want = vec![
            webhook("user", &user.id, "created"),
            webhook("user", &user.id, "updated"),
        ];
        if i % 2 == 0 {
            want.push(webhook("user", &user.id, "deleted"));
        }
        assert_eq!(mine, want, "the changes of user {i}");
    }
}

/// `GET /v1/users/{clerk_id}` at Clerk answers 404 after `delay`: a lookup that reached Clerk before Clerk had
/// the user.
fn slow_not_found_mock(clerk_id: &str, delay: Duration) -> wiremock::Mock {
    use wiremock::matchers::{method, path};
    wiremock::Mock::given(method("GET"))
        .and(path(format!("/v1/users/{clerk_id}")))
        .respond_with(
            wiremock::ResponseTemplate::new(404)
                .set_body_json(json!({
                    "errors": [{"code": "resource_not_found", "message": "not found", "long_message": "User not found"}]
                }))
                .set_delay(delay),
        )
}

/// A lookup on `reader` is waiting on Clerk's (slow) 404 when the user's creation commits through the app: the
/// reader must serve the user (the racing lookup too, since the row exists by the time the 404 arrives) and not
/// remember it as missing for `cache.not_found_ttl_secs`.
async fn a_user_created_during_a_slow_clerk_404_is_served_within_a_second(app: &TestApp, reader: &str) {
    let user = ClerkUser::new(now_ms() - 60_000);
    slow_not_found_mock(&user.id, Duration::from_millis(1500))
        .mount(app.clerk())
        .await;
    let lookup = get_user_on(app, reader, &user.id);
    let create = async {
        // Once the lookup waits on Clerk, the user's creation commits.
        let started = Instant::now();
        while app.clerk_requests(&format!("/v1/users/{}", user.id)).await == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the lookup never reached Clerk"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        app.expect_outcome(&user.created(), &svix_id(), "applied").await;
        Instant::now()
    };
    let ((status, json), committed) = tokio::join!(lookup, create);
    // Clerk's 404 arrives after the commit: the lookup checks the database again before believing it, and
    // serves the row. The ones after it must see the user too.
    assert_eq!(
        status,
        StatusCode::OK,
        "the racing lookup serves the row that exists by the time Clerk's stale 404 arrives: {json}"
    );
    assert_eq!(json["clerk_id"], user.id.as_str());
    let answered = Instant::now();
    assert!(committed < answered);
    let (answer, latency) = poll_until(answered, "the reader serves the created user", || async {
        let (status, json) = get_user_on(app, reader, &user.id).await;
        (status == StatusCode::OK).then_some(json)
    })
    .await;
    assert!(
        latency < Duration::from_secs(1),
        "the reader still answered 404 {latency:?} after the racing lookup ({:?} after the commit)",
        committed.elapsed()
    );
    assert_eq!(answer["first_name"], "Ada", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_does_not_remember_as_missing_a_user_another_created() {
    let app = spawn_app_with_clerk(Backend::Postgres, &[]).await;
    let replica = app.spawn_replica().await;
    a_user_created_during_a_slow_clerk_404_is_served_within_a_second(&app, &replica.address).await;
}

both_backends!(
    a_lookup_racing_a_creation_does_not_remember_the_user_as_missing,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        a_user_created_during_a_slow_clerk_404_is_served_within_a_second(&app, &app.address).await;
    }
);

// ---------------------------------------------------------------------------------------------------------------
// 5. The feed turned off.

both_backends!(a_disabled_feed_answers_404_and_writes_nothing, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[("CLERK_SYNC_CHANGES__ENABLED", "false")]).await;
    let t = now_ms() - 60_000;
    let user = ClerkUser::new(t);
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    app.expect_outcome(&user.at(t + 10).updated(), &svix_id(), "applied")
        .await;
    app.expect_outcome(&user.deleted(t + 20), &svix_id(), "applied").await;
    let org = ClerkOrganization::new(t);
    app.expect_outcome(&ClerkMembership::new(&org, t).created(), &svix_id(), "applied")
        .await;

    for query in ["", "?after=0&limit=10"] {
        let answer = changes_api(&app, query).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "feed_disabled", query);
    }
    let response = app
        .client
        .get(format!("{}/v1/changes", app.address))
        .header("accept", "text/event-stream")
        .header("authorization", format!("Bearer {SERVICE_TOKEN}"))
        .send()
        .await
        .expect("GET /v1/changes (SSE) failed to send");
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "SSE with the feed off");
    // Authentication still comes first.
    let answer = app.api("GET", "/v1/changes", None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert_eq!(feed_rows(&app).await, 0, "clerk_sync_changes with the feed off");
});
