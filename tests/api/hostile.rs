//! Hostile deliveries, as a table: each one answers a clear 4xx or stores the user — never a 5xx or a panic,
//! never a partial write — and the daemon answers `/livez` at once afterwards.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::clerk::{deleted, envelope, now_ms, now_secs, svix_id, ClerkUser};
use crate::helpers::{into_json, sign, spawn_app, TestApp};
use crate::test_db::UserRow;

/// How a case reaches the daemon.
enum Send {
    /// Signed with the app's secret under a fresh svix id.
    Signed(String),
    /// Exactly these bytes and headers (plus `content-type`), through reqwest.
    Raw(Vec<u8>, Vec<(&'static str, String)>),
    /// These bytes on a raw TCP connection, for header values no HTTP client would send.
    Wire(Vec<u8>),
}

enum Expect {
    /// Exactly this 4xx; the case's user (if any) is as it was before.
    Refused(StatusCode),
    /// Some 4xx (the HTTP layer's choice); nothing written.
    AnyClientError,
    /// 200 applied, and the stored row passes the check.
    Stored(fn(&UserRow)),
}

struct Case {
    name: &'static str,
    /// Created (and checked unchanged on refusal) before the case runs.
    existing: Option<ClerkUser>,
    /// The user the case is about, if any; it must end with exactly zero or one row.
    clerk_id: Option<String>,
    send: Send,
    expect: Expect,
}

fn case(name: &'static str, user: Option<&ClerkUser>, send: Send, expect: Expect) -> Case {
    Case {
        name,
        existing: None,
        clerk_id: user.map(|u| u.id.clone()),
        send,
        expect,
    }
}

/// A user.created for a fresh user whose `data` is changed by `edit`.
fn created_with(edit: impl FnOnce(&mut serde_json::Value)) -> (ClerkUser, String) {
    let user = ClerkUser::new(now_ms());
    let mut data = user.data();
    edit(&mut data);
    let body = envelope("user.created", data, now_ms());
    (user, body)
}

/// One HTTP/1.1 request on a fresh connection; the status code of the answer, or `None` when the daemon closed
/// the connection without one.
async fn wire(app: &TestApp, request: &[u8]) -> Option<u16> {
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("cannot connect");
    stream.write_all(request).await.expect("cannot write the request");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the daemon neither answered nor closed within 10 s")
        .ok()?;
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// A POST /webhooks/clerk whose svix headers are written verbatim (they may hold CR, LF, or folds).
fn wire_request(app: &TestApp, id: &str, body: &str) -> Vec<u8> {
    let ts = now_secs();
    let signature = sign(&app.secret, id, ts, body.as_bytes());
    format!(
        "POST /webhooks/clerk HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         connection: close\r\nsvix-id: {id}\r\nsvix-timestamp: {ts}\r\nsvix-signature: {signature}\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn cases(app: &TestApp) -> Vec<Case> {
    let t = now_ms();
    let mut cases = Vec::new();
    let user = ClerkUser::new(t);

    let mut big = user.data();
    big["public_metadata"] = json!({"pad": "x".repeat(300 * 1024)});
    cases.push(case(
        "body over 256 KiB",
        Some(&user),
        Send::Signed(envelope("user.created", big, t)),
        Expect::Refused(StatusCode::PAYLOAD_TOO_LARGE),
    ));
    let full = user.created();
    let truncated = full[..full.len() / 2].to_string();
    cases.push(case(
        "truncated JSON",
        Some(&user),
        Send::Signed(truncated),
        Expect::Refused(StatusCode::BAD_REQUEST),
    ));
    let mut invalid_utf8 = full.clone().into_bytes();
    invalid_utf8.splice(10..10, [0xff, 0xfe, 0xc3]);
    let id = svix_id();
    let headers = vec![
        ("svix-id", id.clone()),
        ("svix-timestamp", now_secs().to_string()),
        ("svix-signature", sign(&app.secret, &id, now_secs(), full.as_bytes())),
    ];
    cases.push(case(
        "invalid UTF-8 body",
        Some(&user),
        Send::Raw(invalid_utf8, headers),
        Expect::Refused(StatusCode::UNAUTHORIZED),
    ));
    let (u, body) = created_with(|d| d["first_name"] = json!("placeholder"));
    let body = body.replace("\"placeholder\"", "\"\\udc00 lone surrogate\"");
    cases.push(case(
        "lone surrogate escape",
        Some(&u),
        Send::Signed(body),
        Expect::Refused(StatusCode::BAD_REQUEST),
    ));
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (u, body) = created_with(|d| d["public_metadata"] = json!({"deep": "placeholder"}));
    let body = body.replace("\"placeholder\"", &nested);
    cases.push(case(
        "100k nested arrays in data",
        Some(&u),
        Send::Signed(body),
        Expect::Refused(StatusCode::BAD_REQUEST),
    ));
    cases.push(case(
        "100k nested arrays as the body",
        None,
        Send::Signed("[".repeat(100_000)),
        Expect::Refused(StatusCode::BAD_REQUEST),
    ));

    let (u, body) = created_with(|d| d["first_name"] = json!("A".repeat(200 * 1024)));
    cases.push(case(
        "200 KiB first_name",
        Some(&u),
        Send::Signed(body),
        Expect::Stored(|row| {
            assert_eq!(row.first_name.as_deref().map(str::len), Some(200 * 1024));
        }),
    ));
    let (u, body) = created_with(|d| {
        d["first_name"] = json!("A\u{0}B");
        d["last_name"] = json!("\u{0}");
        d["username"] = json!("nul\u{0}user");
        d["image_url"] = json!("https://img.clerk.com/\u{0}x");
        d["email_addresses"][0]["email_address"] = json!("nul\u{0}@example.com");
    });
    assert!(
        body.contains(r"A\u0000B"),
        "the body must carry the JSON escape: {body}"
    );
    cases.push(case(
        "NUL in every text field",
        Some(&u),
        Send::Signed(body),
        Expect::Stored(|row| {
            assert_eq!(row.first_name.as_deref(), Some("AB"));
            assert_eq!(row.last_name, None, "a name of only NUL is blank");
            assert_eq!(row.name.as_deref(), Some("AB"));
            assert_eq!(row.username.as_deref(), Some("nuluser"));
            assert_eq!(row.image_url.as_deref(), Some("https://img.clerk.com/x"));
            assert_eq!(row.email.as_deref(), Some("nul@example.com"));
        }),
    ));
    let (u, body) = created_with(|d| d["first_name"] = json!("Robert'); DROP TABLE users;--"));
    cases.push(case(
        "SQL-looking name",
        Some(&u),
        Send::Signed(body),
        Expect::Stored(|row| {
            assert_eq!(row.first_name.as_deref(), Some("Robert'); DROP TABLE users;--"));
        }),
    ));

    let u = ClerkUser::new(t);
    let body = u.created();
    cases.push(case(
        "CR inside svix-id",
        Some(&u),
        Send::Wire(wire_request(app, "msg_a\rb", &body)),
        Expect::AnyClientError,
    ));
    cases.push(case(
        "LF inside svix-id",
        Some(&u),
        Send::Wire(wire_request(app, "msg_a\nx-injected: 1", &body)),
        Expect::AnyClientError,
    ));
    cases.push(case(
        "CRLF header injection",
        Some(&u),
        Send::Wire(wire_request(app, "msg_a\r\nsvix-id: msg_b", &body)),
        Expect::AnyClientError,
    ));
    cases.push(case(
        "obsolete line folding",
        Some(&u),
        Send::Wire(wire_request(app, "msg_a\r\n folded", &body)),
        Expect::AnyClientError,
    ));
    let id = svix_id();
    let far = 300_000_000_000_000_i64;
    let headers = vec![
        ("svix-id", id.clone()),
        ("svix-timestamp", far.to_string()),
        ("svix-signature", sign(&app.secret, &id, far, body.as_bytes())),
    ];
    cases.push(case(
        "svix-timestamp 3e14",
        Some(&u),
        Send::Raw(body.clone().into_bytes(), headers),
        Expect::Refused(StatusCode::UNAUTHORIZED),
    ));

    for (name, timestamp) in [
        ("delete at 3e14 ms", far),
        ("delete at a negative time", -5),
        ("delete at i64::MIN", i64::MIN),
    ] {
        let u = ClerkUser::new(t - 1_000);
        cases.push(Case {
            existing: Some(u.clone()),
            ..case(
                name,
                Some(&u),
                Send::Signed(u.deleted(timestamp)),
                Expect::Refused(StatusCode::BAD_REQUEST),
            )
        });
    }
    for (name, updated_at) in [
        ("updated_at past year 9999", 253_402_300_800_000),
        ("updated_at negative", -1),
        ("updated_at i64::MAX", i64::MAX),
    ] {
        let u = ClerkUser::new(updated_at);
        cases.push(case(
            name,
            Some(&u),
            Send::Signed(u.created()),
            Expect::Refused(StatusCode::BAD_REQUEST),
        ));
    }
    // Clerk's SDK fixtures carry seconds: read as seconds, not refused as 1970.
    let u = ClerkUser::new(t / 1000);
    cases.push(case(
        "updated_at in seconds",
        Some(&u),
        Send::Signed(u.created()),
        Expect::Stored(|row| {
            let ms = row.clerk_updated_at.expect("clerk_updated_at");
            assert!(ms > 1_600_000_000_000 && ms % 1000 == 0, "read as seconds: {ms}");
        }),
    ));
    for (name, timestamp) in [
        ("create with envelope timestamp 3e14", far),
        ("create with envelope timestamp i64::MIN", i64::MIN),
    ] {
        let u = ClerkUser::new(t);
        let body = envelope("user.created", u.data(), timestamp);
        cases.push(case(
            name,
            Some(&u),
            Send::Signed(body),
            Expect::Stored(|row| assert!(row.deleted_at.is_none())),
        ));
    }

    let huge_id = format!("user_{}", "a".repeat(10 * 1024));
    for (name, clerk_id) in [
        ("empty clerk id", String::new()),
        ("10 KiB clerk id", huge_id),
        ("non-ASCII clerk id", "user_ÄÖÜ😀".to_string()),
    ] {
        let mut u = ClerkUser::new(t);
        u.id = clerk_id.clone();
        cases.push(case(
            name,
            Some(&u),
            Send::Signed(u.created()),
            Expect::Refused(StatusCode::BAD_REQUEST),
        ));
        cases.push(case(
            name,
            Some(&u),
            Send::Signed(deleted(&clerk_id, t)),
            Expect::Refused(StatusCode::BAD_REQUEST),
        ));
    }
    for (name, id) in [
        ("empty svix-id", String::new()),
        ("10 KiB svix-id", format!("msg_{}", "a".repeat(10 * 1024))),
        ("non-ASCII svix-id", "msg_ÄÖÜ".to_string()),
    ] {
        let u = ClerkUser::new(t);
        let body = u.created();
        let ts = now_secs();
        let headers = vec![
            ("svix-id", id.clone()),
            ("svix-timestamp", ts.to_string()),
            ("svix-signature", sign(&app.secret, &id, ts, body.as_bytes())),
        ];
        cases.push(case(
            name,
            Some(&u),
            Send::Raw(body.into_bytes(), headers),
            Expect::Refused(StatusCode::UNAUTHORIZED),
        ));
    }
    cases
}

async fn run(app: &TestApp, case: Case) {
    let name = case.name;
    if let Some(user) = &case.existing {
        app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    }
    let before_row = match &case.clerk_id {
        Some(id) => app.db.user(id).await,
        None => None,
    };
    let before_users = app.db.count_all_users().await;
    let status = match case.send {
        Send::Signed(body) => app.post_webhook(&body, &svix_id()).await.status().as_u16(),
        Send::Raw(body, headers) => app.post_webhook_raw(body, &headers).await.status().as_u16(),
        Send::Wire(request) => wire(app, &request).await.unwrap_or(0),
    };
    let live = tokio::time::timeout(Duration::from_secs(2), app.livez()).await;
    assert!(
        live.is_ok_and(|r| r.status() == StatusCode::OK),
        "{name}: /livez did not answer 200 within 2 s afterwards"
    );
    let after_row = match &case.clerk_id {
        Some(id) => app.db.user(id).await,
        None => None,
    };
    match case.expect {
        Expect::Refused(expected) => {
            assert_eq!(status, expected.as_u16(), "{name}: expected {expected}");
            assert_eq!(after_row, before_row, "{name}: a refused delivery changed the user");
            assert_eq!(app.db.count_all_users().await, before_users, "{name}: users changed");
            if let Some(id) = &case.clerk_id {
                let tombstone = app.db.tombstone(id).await;
                assert_eq!(tombstone, None, "{name}: a refused delivery left a tombstone");
            }
        }
        Expect::AnyClientError => {
            assert!((400..500).contains(&status), "{name}: expected a 4xx, got {status}");
            assert_eq!(after_row, before_row, "{name}: a refused delivery changed the user");
            assert_eq!(app.db.count_all_users().await, before_users, "{name}: users changed");
        }
        Expect::Stored(check) => {
            assert_eq!(status, 200, "{name}: expected 200 applied");
            let id = case.clerk_id.as_deref().expect("a stored case names its user");
            let row = after_row.unwrap_or_else(|| panic!("{name}: answered 200 but stored nothing"));
            assert_eq!(app.db.count_users(id).await, 1, "{name}: one row per user");
            check(&row);
        }
    }
}

both_backends!(hostile_deliveries_answer_4xx_or_store_cleanly, |backend| async move {
    let app = spawn_app(backend).await;
    for case in cases(&app) {
        run(&app, case).await;
    }
    // The daemon still works normally after all of it.
    let user = ClerkUser::new(now_ms());
    let (status, json) = into_json(app.post_webhook(&user.created(), &svix_id()).await).await;
    assert_eq!(
        (status, json["outcome"].as_str()),
        (StatusCode::OK, Some("applied")),
        "{json}"
    );
});
