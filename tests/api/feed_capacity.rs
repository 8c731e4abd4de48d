//! The change feed under load: open Server-Sent Events streams have their own budget (`changes.max_streams`) and
//! never hold the connections webhooks and health checks need; idle keep-alive connections make room when the
//! connection cap is reached; JSON pages read up to the horizon without taking the feed lock themselves.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::clerk::{now_ms, svix_id, ClerkUser};
use crate::helpers::{spawn_app_with_clerk, Backend, SseStream, TestApp, TestDb, SERVICE_TOKEN};

/// Generous: these are about being answered at all while capacity is taken, not about speed.
const PROMPTLY: Duration = Duration::from_secs(3);

async fn open_stream(app: &TestApp, n: usize) -> SseStream {
    tokio::time::timeout(PROMPTLY, app.changes_stream(&app.address, "", None))
        .await
        .unwrap_or_else(|_| panic!("stream {n} was not answered within {PROMPTLY:?}"))
}

/// `GET /v1/changes` as a stream, for an answer that is not a stream: status, `Retry-After`, JSON body.
async fn refused_stream(app: &TestApp) -> (StatusCode, Option<String>, Value) {
    let request = app
        .client
        .get(format!("{}/v1/changes", app.address))
        .header("accept", "text/event-stream")
        .bearer_auth(SERVICE_TOKEN)
        .send();
    let response = tokio::time::timeout(PROMPTLY, request)
        .await
        .expect("the stream beyond the cap was not answered")
        .expect("GET /v1/changes (SSE) failed to send");
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let body = tokio::time::timeout(PROMPTLY, response.text())
        .await
        .expect("the refusal's body did not end")
        .unwrap_or_default();
    (status, retry_after, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A signed webhook and `/livez`, each answered within [`PROMPTLY`].
async fn intake_answers(app: &TestApp, user: &ClerkUser, context: &str) {
    // A new connection for each request, as Svix and a health checker make them: a pooled keep-alive connection
    // may be closed to make room at the cap, and that race is the client's to retry, not what this checks.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let (body, id, timestamp) = (user.created(), svix_id(), crate::clerk::now_secs());
    let delivery = client
        .post(format!("{}/webhooks/clerk", app.address))
        .header("content-type", "application/json")
        .header("svix-id", &id)
        .header("svix-timestamp", timestamp.to_string())
        .header(
            "svix-signature",
            crate::helpers::sign(&app.secret, &id, timestamp, body.as_bytes()),
        )
        .body(body)
        .send();
    let delivery = tokio::time::timeout(PROMPTLY, delivery)
        .await
        .unwrap_or_else(|_| panic!("{context}: a webhook was not answered within {PROMPTLY:?}"))
        .unwrap_or_else(|e| panic!("{context}: the webhook failed: {e}"));
    let delivery = crate::helpers::into_json(delivery).await;
    assert_eq!(
        (delivery.0, delivery.1["outcome"].as_str()),
        (StatusCode::OK, Some("applied")),
        "{context}: {delivery:?}"
    );
    let livez = tokio::time::timeout(PROMPTLY, client.get(format!("{}/livez", app.address)).send())
        .await
        .unwrap_or_else(|_| panic!("{context}: /livez was not answered within {PROMPTLY:?}"))
        .unwrap_or_else(|e| panic!("{context}: /livez failed: {e}"));
    assert_eq!(livez.status(), StatusCode::OK, "{context}: /livez");
}

both_backends!(
    streams_beyond_their_cap_are_refused_and_never_starve_webhooks,
    |backend| async move {
        // More streams than connections: an open stream must not hold a connection.
        let app = spawn_app_with_clerk(
            backend,
            &[
                ("CLERK_SYNC_SERVER__MAX_CONNECTIONS", "20"),
                ("CLERK_SYNC_CHANGES__MAX_STREAMS", "25"),
            ],
        )
        .await;
        let mut streams = Vec::new();
        for n in 0..25 {
            streams.push(open_stream(&app, n).await);
        }

        let (status, retry_after, body) = refused_stream(&app).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "the 26th stream: {body}");
        assert_eq!(body["error"], "too_many_streams", "{body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("changes.max_streams")),
            "the message names the setting: {body}"
        );
        assert!(
            retry_after
                .as_deref()
                .is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 0)),
            "Retry-After of the refusal: {retry_after:?}"
        );

        let user = ClerkUser::new(now_ms() - 60_000);
        intake_answers(&app, &user, "every stream slot taken").await;
        // The streams still work: each of them shows the change.
        for (n, stream) in streams.iter_mut().enumerate() {
            let event = stream
                .next_event(Duration::from_secs(5))
                .await
                .unwrap_or_else(|| panic!("stream {n} never showed the webhook's change"));
            let data: Value = serde_json::from_str(&event.data).expect("event data");
            assert_eq!(data["clerk_id"], user.id.as_str(), "stream {n}: {event:?}");
        }

        // A client that goes away gives its stream slot back.
        drop(streams.pop());
        let started = Instant::now();
        loop {
            let request = app
                .client
                .get(format!("{}/v1/changes", app.address))
                .header("accept", "text/event-stream")
                .bearer_auth(SERVICE_TOKEN)
                .timeout(Duration::from_secs(300))
                .send();
            let response = tokio::time::timeout(PROMPTLY, request)
                .await
                .expect("a stream was not answered")
                .expect("GET /v1/changes (SSE) failed to send");
            if response.status() == StatusCode::OK {
                streams.push(SseStream::from_response(response));
                break;
            }
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the slot of a closed stream was still taken 5 s later"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (status, _, body) = refused_stream(&app).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "full again: {body}");
        intake_answers(&app, &ClerkUser::new(now_ms() - 60_000), "full again").await;
    }
);

/// Sends `GET /livez` on a new connection and reads the whole answer, leaving the connection open and idle.
async fn idle_keep_alive(app: &TestApp) -> TcpStream {
    let addr = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.expect("cannot connect to the daemon");
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    // The whole answer: the head, then as many body bytes as it announces.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            assert!(text.starts_with("http/1.1 200"), "/livez: {text:?}");
            let length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .expect("/livez without a content-length");
            if answer.len() >= end + 4 + length {
                break;
            }
        }
        let n = tokio::time::timeout(PROMPTLY, stream.read(&mut chunk))
            .await
            .expect("no answer to /livez")
            .expect("read");
        assert!(n > 0, "the daemon closed a fresh keep-alive connection");
        answer.extend_from_slice(&chunk[..n]);
    }
    stream
}

both_backends!(
    idle_keep_alive_connections_make_room_for_webhooks,
    |backend| async move {
        // Idle connections would otherwise hold every slot until the header timeout, 30 s here.
        let app = spawn_app_with_clerk(
            backend,
            &[
                ("CLERK_SYNC_SERVER__MAX_CONNECTIONS", "4"),
                ("CLERK_SYNC_SERVER__HEADER_READ_TIMEOUT_MS", "30000"),
            ],
        )
        .await;
        let mut idle = Vec::new();
        for _ in 0..2 {
            idle.push(idle_keep_alive(&app).await);
        }
        // Connected, nothing sent.
        for _ in 0..2 {
            let addr = app.address.trim_start_matches("http://");
            idle.push(TcpStream::connect(addr).await.expect("cannot connect to the daemon"));
        }
        intake_answers(&app, &ClerkUser::new(now_ms() - 60_000), "four idle connections").await;
        // And again, now that those connections are gone and reqwest's are the idle ones.
        intake_answers(&app, &ClerkUser::new(now_ms() - 60_000), "again").await;
    }
);

/// The feed lock's keys (`store::postgres::FEED_LOCK`).
const FEED_LOCK: (i32, i32) = (0x636c_6b73, 1);

/// The seqs a page shows.
async fn page_seqs(app: &TestApp, query: &str) -> Vec<i64> {
    let (path, token) = (format!("/v1/changes{query}"), format!("Bearer {SERVICE_TOKEN}"));
    let request = app.api("GET", &path, Some(&token));
    let answer = tokio::time::timeout(PROMPTLY, request)
        .await
        .unwrap_or_else(|_| panic!("GET /v1/changes{query} was not answered within {PROMPTLY:?}"));
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.json["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no changes: {}", answer.body))
        .iter()
        .map(|c| c["seq"].as_i64().expect("seq"))
        .collect()
}

/// A writer holds seq N open (the feed lock shared, its row uncommitted) while N + 1 commits: a page answers
/// without waiting for that writer and stops before N, and once N commits the next page shows both, in order.
/// (Postgres only: SQLite has one writer, so seqs commit in order.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_stops_before_a_seq_still_being_written() {
    let app = spawn_app_with_clerk(Backend::Postgres, &[]).await;
    let t = now_ms() - 60_000;
    app.expect_outcome(&ClerkUser::new(t).created(), &svix_id(), "applied")
        .await;
    // The horizon is past it before the writer below holds it still.
    assert_eq!(page_seqs(&app, "?after=0").await.len(), 1);
    let TestDb::Postgres(pool) = &app.db else {
        unreachable!("a Postgres app")
    };
    let mut writer = pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1, $2)")
        .bind(FEED_LOCK.0)
        .bind(FEED_LOCK.1)
        .execute(&mut *writer)
        .await
        .expect("the feed lock, shared");
    let open: i64 = sqlx::query_scalar(
        "INSERT INTO clerk_sync_changes (kind, clerk_id, op, via) \
         VALUES ('user', 'user_open', 'created', 'webhook') RETURNING seq",
    )
    .fetch_one(&mut *writer)
    .await
    .expect("the open writer's row");
    let later: i64 = sqlx::query_scalar(
        "INSERT INTO clerk_sync_changes (kind, clerk_id, op, via) \
         VALUES ('user', 'user_later', 'created', 'webhook') RETURNING seq",
    )
    .fetch_one(pool)
    .await
    .expect("a later seq, committed");
    assert!(later > open);

    let seqs = page_seqs(&app, "?after=0").await;
    assert!(
        seqs.iter().all(|s| *s < open),
        "a page went past seq {open}, which is still being written: {seqs:?}"
    );
    assert_eq!(seqs.len(), 1, "the change committed before: {seqs:?}");

    writer.commit().await.expect("commit");
    let started = Instant::now();
    loop {
        let seqs = page_seqs(&app, "?after=0").await;
        if seqs.len() == 3 {
            assert_eq!(&seqs[1..], [open, later], "{seqs:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "5 s after the commit a page shows {seqs:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

both_backends!(a_page_holds_every_change_committed_before_it, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let t = now_ms() - 60_000;
    let mut after = 0;
    for n in 0..10 {
        let user = ClerkUser::new(t);
        app.expect_outcome(&user.created(), &svix_id(), "applied").await;
        let seqs = page_seqs(&app, &format!("?after={after}")).await;
        assert_eq!(seqs.len(), 1, "change {n}, right after its webhook's answer: {seqs:?}");
        after = seqs[0];
    }
});

/// The raw answer of a stream opened on a socket with a small, fixed receive buffer (no autotuning), so a
/// client that does not read soon stops the daemon from writing.
async fn small_window_stream(app: &TestApp) -> TcpStream {
    let addr: std::net::SocketAddr = app.address.trim_start_matches("http://").parse().expect("address");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(8 * 1024).expect("SO_RCVBUF");
    let mut stream = socket.connect(addr).await.expect("cannot connect to the daemon");
    let request = format!(
        "GET /v1/changes HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {SERVICE_TOKEN}\r\n\
         Accept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    stream
}

/// The event ids of a raw chunked SSE answer (head included).
fn event_ids(raw: &[u8]) -> Vec<i64> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("no answer head") + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (mut body, mut i) = (Vec::new(), head_end);
    while let Some(end) = raw[i..].windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[i..i + end]).expect("chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        i += end + 2;
        if size == 0 || i + size > raw.len() {
            break;
        }
        body.extend_from_slice(&raw[i..i + size]);
        i += size + 2;
    }
    String::from_utf8(body)
        .expect("UTF-8 events")
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|id| id.parse().expect("a numeric id"))
        .collect()
}

// A stream whose client stops reading falls behind the batches the follower keeps for streams (far more
// changes arrive meanwhile than the socket buffers hold); once the client reads again it gets every change,
// once, in order: what it missed comes from the database.
both_backends!(a_stream_that_falls_behind_misses_nothing, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let mut stream = small_window_stream(&app).await;
    let rows = 100_000;
    app.db
        .execute(&format!(
            "INSERT INTO clerk_sync_changes (kind, clerk_id, op, via) \
             WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {rows}) \
             SELECT 'user', 'user_bulk' || n, 'created', 'backfill' FROM g"
        ))
        .await;
    let last = app.db.int("SELECT max(seq) FROM clerk_sync_changes").await;
    // Until the follower has read them all (a page shows what its horizon passed), the stream is not read.
    let started = Instant::now();
    while page_seqs(&app, &format!("?after={}", last - 1)).await != [last] {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the follower did not get through the changes"
        );
    }
    let (mut raw, mut chunk) = (Vec::new(), vec![0u8; 64 * 1024]);
    let tail = format!("id: {last}\n");
    let started = Instant::now();
    while !raw[raw.len().saturating_sub(4096)..]
        .windows(tail.len())
        .any(|w| w == tail.as_bytes())
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the stream did not get to seq {last}"
        );
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("the stream stalled")
            .expect("read");
        assert!(n > 0, "the stream ended");
        raw.extend_from_slice(&chunk[..n]);
    }
    // Nothing after the last change.
    if let Ok(n) = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut chunk)).await {
        let n = n.expect("read");
        raw.extend_from_slice(&chunk[..n]);
    }
    let got = event_ids(&raw);
    let want: Vec<i64> = app
        .db
        .strings("SELECT CAST(seq AS TEXT) AS s FROM clerk_sync_changes ORDER BY seq")
        .await
        .into_iter()
        .map(|s| s.and_then(|s| s.parse().ok()).expect("a seq"))
        .collect();
    if let Some(i) = got.iter().zip(&want).position(|(g, w)| g != w) {
        let around = |v: &[i64]| v[i.saturating_sub(3)..(i + 3).min(v.len())].to_vec();
        panic!(
            "the stream differs from the feed at event {i} of {}: {:?}, the feed {:?}",
            want.len(),
            around(&got),
            around(&want)
        );
    }
    assert_eq!(got.len(), want.len(), "events, changes");
});
