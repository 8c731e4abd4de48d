//! Issue 11's figures: what the change feed costs webhook ingest (feed off and on, side by side in one run),
//! and how long a committed change takes to reach a Server-Sent Events client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{exchange, Raw};
use crate::daemon::{now_ms, user_created, Daemon, PgDatabase, TOKEN};

/// Webhook ingest per second on a fresh Postgres database, with the feed on or off.
async fn ingest_rate(feed: bool, prefix: &str, n: usize) -> f64 {
    let db = PgDatabase::create().await;
    let mut run = crate::ingest(
        &db.url(),
        prefix,
        n,
        &[("CLERK_SYNC_CHANGES__ENABLED", feed.to_string())],
    )
    .await;
    crate::check(prefix, &run);
    db.drop_now().await;
    let _ = run.p99();
    run.per_sec()
}

pub async fn feed(out: &mut Vec<String>) {
    // Alternating off / on three times, so drift of the shared machine falls on both sides alike.
    let n = 30_000;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..3 {
        off.push(ingest_rate(false, &format!("foff{round}"), n).await);
        on.push(ingest_rate(true, &format!("fon{round}"), n).await);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (off, on) = (mean(&off), mean(&on));
    out.push(format!(
        "feed_ingest_ratio {:.2} (target >= 0.90: the feed costs under 10%; Postgres webhooks with the feed on {on:.0} ev/s, off {off:.0} ev/s)",
        on / off
    ));

    let db = PgDatabase::create().await;
    let daemon = Daemon::start(&db.url(), &[]).await;
    let (p50, p99, seen, sent) = sse_latency(daemon.port, 2_000).await;
    out.push(format!(
        "feed_sse_latency_p99 {:.1} ms (target <= 1000; from a webhook's 200 to its change on an open SSE stream, {sent} webhooks over 4 connections, {seen} events received; p50 {:.1} ms)",
        p99.as_secs_f64() * 1e3,
        p50.as_secs_f64() * 1e3
    ));
    daemon.stop();
    db.drop_now().await;
}

/// Sends `n` user.created webhooks while an SSE client follows the feed; the latency of each change is the time
/// from its webhook's answer (after commit) to its event on the stream.
async fn sse_latency(port: u16, n: usize) -> (Duration, Duration, usize, usize) {
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let request = format!(
        "GET /v1/changes HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {TOKEN}\r\naccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("request");
    let reader = {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let mut pending = String::new();
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                let Ok(read) = stream.read(&mut chunk).await else {
                    return;
                };
                if read == 0 {
                    return;
                }
                let now = Instant::now();
                pending.push_str(&String::from_utf8_lossy(&chunk[..read]));
                // Chunked transfer framing lines are not `data:` lines, so they are skipped with the rest.
                while let Some(end) = pending.find("\n\n") {
                    let event: String = pending.drain(..end + 2).collect();
                    for line in event.lines() {
                        let Some(data) = line.strip_prefix("data:") else {
                            continue;
                        };
                        if let Ok(change) = serde_json::from_str::<serde_json::Value>(data.trim()) {
                            if let Some(id) = change["clerk_id"].as_str() {
                                arrivals.lock().expect("lock").entry(id.to_owned()).or_insert(now);
                            }
                        }
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = now_ms() - 60_000;
    let ids: Vec<String> = (0..n).map(|i| format!("user_sse{i:08}")).collect();
    let acks: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut senders = Vec::new();
    for c in 0..4 {
        let ids: Vec<(String, Raw)> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 4 == c)
            .map(|(i, id)| (id.clone(), user_created(id, t, &format!("msg_sse{i:08}"))))
            .collect();
        let acks = acks.clone();
        senders.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
            let mut buf = Vec::new();
            for (id, request) in ids {
                if let Ok(200) = exchange(&mut stream, &request, &mut buf).await {
                    acks.lock().expect("lock").insert(id, Instant::now());
                }
                // A steady stream rather than a flood: latency, not throughput, is measured here.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    for sender in senders {
        sender.await.expect("sender");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while arrivals.lock().expect("lock").len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reader.abort();
    let (arrivals, acks) = (arrivals.lock().expect("lock"), acks.lock().expect("lock"));
    let mut latencies: Vec<Duration> = acks
        .iter()
        .map(|(id, ack)| match arrivals.get(id) {
            Some(at) => at.saturating_duration_since(*ack),
            // Never arrived within the deadline: counted as the whole wait, so it shows in p99.
            None => deadline.saturating_duration_since(*ack),
        })
        .collect();
    latencies.sort_unstable();
    let at = |q: usize| {
        latencies
            .get((latencies.len() * q / 100).min(latencies.len().saturating_sub(1)))
            .copied()
    };
    (
        at(50).unwrap_or_default(),
        at(99).unwrap_or_default(),
        arrivals.len(),
        acks.len(),
    )
}
