//! The main listener against slow or stalled clients: header and body read timeouts, the connection cap, and
//! that ordinary (keep-alive) requests and graceful shutdown still work. The listener does not depend on the
//! database, so these run on SQLite only.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, Backend, TestApp};

const SHORT_TIMEOUTS: [(&str, &str); 2] = [
    ("CLERK_SYNC_SERVER__HEADER_READ_TIMEOUT_MS", "500"),
    ("CLERK_SYNC_SERVER__BODY_READ_TIMEOUT_MS", "500"),
];

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.address.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("cannot connect to the daemon")
}

/// Reads until the daemon closes the connection, failing if it is still open after `within`.
/// Returns what was received and how long it took.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut received)).await;
    let text = String::from_utf8_lossy(&received).into_owned();
    match read {
        Ok(Ok(_)) => {}
        // A reset is a close too.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Err(e)) => panic!("reading from the daemon failed: {e}"),
        Err(_) => panic!("the connection was still open after {within:?}; received so far: {text:?}"),
    }
    (text, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_answered_408_and_closed() {
    let app = spawn_app_with(Backend::Sqlite, &SHORT_TIMEOUTS).await;
    let mut stream = connect(&app).await;
    let head = "POST /webhooks/clerk HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Content-Length: 100000\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.expect("write");
    let (answer, took) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "expected a 408, got {answer:?}");
    assert!(
        took >= Duration::from_millis(400),
        "cut off before the timeout: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_header_line_is_closed() {
    let app = spawn_app_with(Backend::Sqlite, &SHORT_TIMEOUTS).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: loc")
        .await
        .expect("write");
    let (_, took) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(
        took >= Duration::from_millis(400),
        "cut off before the timeout: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_requests_still_work_and_shutdown_is_graceful() {
    let mut app = spawn_app_with(Backend::Sqlite, &SHORT_TIMEOUTS).await;
    // Keep-alive: reqwest reuses its connection for these.
    for _ in 0..5 {
        assert_eq!(app.livez().await.status(), StatusCode::OK);
    }
    // A body that arrives in two parts, well within the body timeout, is read whole: the answer is about the
    // (missing) signature, not a timeout.
    let mut stream = connect(&app).await;
    let body = "{\"type\":\"user.created\",\"data\":{}}";
    let head = format!(
        "POST /webhooks/clerk HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(&body.as_bytes()[..5]).await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.write_all(&body.as_bytes()[5..]).await.expect("write");
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut answer))
        .await
        .expect("no answer within 3 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");

    // An idle keep-alive connection does not hold up shutdown.
    let _idle = connect(&app).await;
    let started = Instant::now();
    app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
}

/// Connects and sends a webhook's head and the start of its body: a request in flight, its body on its way.
async fn busy(app: &TestApp) -> TcpStream {
    let mut stream = connect(app).await;
    let head = "POST /webhooks/clerk HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Content-Length: 100\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

/// Connections with a request in flight keep their slots: one more waits until one of them closes. (Idle ones
/// make room instead: `feed_capacity.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("CLERK_SYNC_SERVER__MAX_CONNECTIONS", "2"),
            ("CLERK_SYNC_SERVER__HEADER_READ_TIMEOUT_MS", "30000"),
            ("CLERK_SYNC_SERVER__BODY_READ_TIMEOUT_MS", "30000"),
        ],
    )
    .await;
    let first = busy(&app).await;
    let _second = busy(&app).await;
    // Ordering, not speed: the daemon has read both heads before the third connection asks for a slot (a
    // connection that sent nothing yet would be closed to make room).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = reqwest::Client::new();
    let url = format!("{}/livez", app.address);
    let waiting = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection was served while two requests were in flight"
    );
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .expect("the waiting connection was not served once a slot was free")
        .expect("task")
        .expect("request");
    assert_eq!(status, StatusCode::OK);
}
