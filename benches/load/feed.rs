//! Issue 11's figures: what the change feed costs webhook ingest (feed off and on, side by side in one run),
//! and how long a committed change takes to reach a Server-Sent Events client; issue 16's: what clients
//! following the feed (open streams, JSON pollers) cost webhook ingest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{exchange, Raw};
use crate::daemon::{now_ms, user_created, Daemon, PgDatabase, TOKEN};

/// One feed-on or feed-off run: events per second, and µs of CPU per event of the daemon and of PostgreSQL.
struct Rate {
    per_sec: f64,
    daemon_us: f64,
    pg_us: f64,
}

/// Webhook ingest on a fresh Postgres database, with the feed on or off; `None` when a request failed.
async fn ingest_rate(feed: bool, prefix: &str) -> Option<Rate> {
    let db = PgDatabase::create().await;
    let extra = [("CLERK_SYNC_CHANGES__ENABLED", feed.to_string())];
    let m = crate::pg::measured(&db.url(), Some(&db.name), prefix, &extra).await;
    let ok = crate::check(prefix, &m.run);
    db.drop_now().await;
    let events = m.run.latencies.len().max(1) as f64;
    ok.then(|| Rate {
        per_sec: m.run.per_sec(),
        daemon_us: m.daemon_cpu.unwrap_or(f64::NAN) * 1e6 / events,
        pg_us: m.pg_cpu.unwrap_or(f64::NAN) * 1e6 / events,
    })
}

pub async fn feed(out: &mut Vec<String>) {
    // Alternating off / on three times, so drift of the shared machine falls on both sides alike.
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..3 {
        off.push(ingest_rate(false, &format!("foff{round}")).await);
        on.push(ingest_rate(true, &format!("fon{round}")).await);
    }
    let mean = |v: &[Option<Rate>], f: fn(&Rate) -> f64| {
        v.iter()
            .map(|r| r.as_ref().map(f))
            .sum::<Option<f64>>()
            .map(|s| s / v.len() as f64)
    };
    let rates = (mean(&off, |r| r.per_sec), mean(&on, |r| r.per_sec));
    match rates {
        (Some(off_rate), Some(on_rate)) => out.push(format!(
            "feed_ingest_ratio {:.2} (target >= 0.90: the feed costs under 10%; Postgres webhooks with the feed on {on_rate:.0} ev/s, off {off_rate:.0} ev/s; CPU per event on / off: daemon {:.0} / {:.0} µs, Postgres {:.0} / {:.0} µs)",
            on_rate / off_rate,
            mean(&on, |r| r.daemon_us).unwrap_or(f64::NAN),
            mean(&off, |r| r.daemon_us).unwrap_or(f64::NAN),
            mean(&on, |r| r.pg_us).unwrap_or(f64::NAN),
            mean(&off, |r| r.pg_us).unwrap_or(f64::NAN),
        )),
        // A run with failed requests measured nothing (check() printed them and failed the benchmark).
        _ => out.push("feed_ingest_ratio FAILED: some requests failed (see above); no ratio".into()),
    }

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

/// Who follows the feed while the webhooks come in (issue 16).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Followers {
    Nobody,
    /// Open `GET /v1/changes` Server-Sent Events streams, each read as fast as it comes.
    Streams(usize),
    /// Clients paging `GET /v1/changes` as JSON (100 a page), each asking again as soon as answered.
    Pollers(usize),
}

const STREAMS: usize = 200;
const POLLERS: usize = 16;

/// Issue 16's figures: Postgres ingest with 200 open streams, and with 16 pollers, each divided by ingest with
/// nobody following, alternated three times on fresh databases, the daemon as shipped. Followers must see every
/// change (a follower that stalled would flatter ingest); if any request or follower fails, no ratio.
pub async fn feed_streams(out: &mut Vec<String>) {
    let n = 30_000;
    let (mut nobody, mut streams, mut pollers) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        for (followers, rates, tag) in [
            (Followers::Nobody, &mut nobody, "n"),
            (Followers::Streams(STREAMS), &mut streams, "s"),
            (Followers::Pollers(POLLERS), &mut pollers, "p"),
        ] {
            match followed_ingest(followers, &format!("fs{tag}{round}"), n).await {
                Ok(rate) => rates.push(rate),
                Err(e) => {
                    out.push(format!("feed_streams_ingest_ratio not measured: {e}"));
                    return;
                }
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (nobody, streams, pollers) = (mean(&nobody), mean(&streams), mean(&pollers));
    out.push(format!(
        "feed_streams_ingest_ratio {:.2} (target: streams do not starve intake; Postgres webhooks while {STREAMS} SSE streams follow the feed {streams:.0} ev/s, \
         nobody following {nobody:.0} ev/s; every stream saw every change)",
        streams / nobody
    ));
    out.push(format!(
        "feed_pollers_ingest_ratio {:.2} (target: pollers do not starve intake; the same while {POLLERS} clients page GET /v1/changes without pause {pollers:.0} ev/s, \
         nobody following {nobody:.0} ev/s; every poller saw every change)",
        pollers / nobody
    ));
}

/// Webhooks per second into a fresh database while `followers` follow the feed.
async fn followed_ingest(followers: Followers, prefix: &str, n: usize) -> Result<f64, String> {
    let db = PgDatabase::create().await;
    let daemon = Daemon::start_as_shipped(&db.url()).await;
    let rate = followed_run(daemon.port, followers, prefix, n).await;
    daemon.stop();
    db.drop_now().await;
    rate
}

async fn followed_run(port: u16, followers: Followers, prefix: &str, n: usize) -> Result<f64, String> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let opened = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let count = match followers {
        Followers::Nobody => 0,
        Followers::Streams(k) | Followers::Pollers(k) => k,
    };
    for _ in 0..count {
        let seen = Arc::new(AtomicUsize::new(0));
        let (opened, stopped, counter) = (opened.clone(), stopped.clone(), seen.clone());
        let task = match followers {
            Followers::Streams(_) => tokio::spawn(follow_stream(port, opened, counter, stopped)),
            _ => tokio::spawn(poll_pages(port, opened, counter, stopped)),
        };
        tasks.push((task, seen));
    }
    let started = Instant::now();
    while opened.load(Ordering::Relaxed) < count {
        if let Some((task, _)) = tasks.iter_mut().find(|(t, _)| t.is_finished()) {
            return Err(format!("a follower failed to start: {:?}", task.await));
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "{} of {count} followers started",
                opened.load(Ordering::Relaxed)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, warm) = crate::events(&format!("{prefix}w"), 2_000);
    let warm = crate::client::drive(port, warm, crate::CONNECTIONS, crate::LIMIT).await;
    let (_, requests) = crate::events(prefix, n);
    let run = crate::client::drive(port, requests, crate::CONNECTIONS, crate::LIMIT).await;
    let failures: Vec<&String> = warm.failures.iter().chain(&run.failures).collect();
    if let Some(first) = failures.first() {
        return Err(format!("{} webhooks failed, first: {first}", failures.len()));
    }
    if run.latencies.len() < n {
        return Err(format!("{} of {n} webhooks answered in time", run.latencies.len()));
    }
    let total = 2_000 + n;
    let deadline = Instant::now() + Duration::from_secs(120);
    while tasks.iter().any(|(_, seen)| seen.load(Ordering::Relaxed) < total) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    for (task, seen) in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("a follower failed: {e}")),
            Err(e) => return Err(format!("a follower panicked: {e}")),
        }
        let seen = seen.load(Ordering::Relaxed);
        if seen != total {
            return Err(format!("a follower saw {seen} of {total} changes"));
        }
    }
    Ok(run.per_sec())
}

/// Follows the feed as a stream from the start, counting events (one `{` each: the change is a flat JSON
/// object, and chunk framing is hex) until told to stop.
async fn follow_stream(
    port: u16,
    opened: Arc<AtomicUsize>,
    seen: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET /v1/changes HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {TOKEN}\r\naccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let body_start = loop {
        let read = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("the stream closed before its answer".into());
        }
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string());
    }
    opened.fetch_add(1, Ordering::Relaxed);
    let events = |bytes: &[u8]| bytes.iter().filter(|b| **b == b'{').count();
    seen.fetch_add(events(&head[body_start..]), Ordering::Relaxed);
    loop {
        tokio::select! {
            read = stream.read(&mut chunk) => match read {
                Ok(0) => return Err("the daemon ended a stream".into()),
                Ok(read) => {
                    seen.fetch_add(events(&chunk[..read]), Ordering::Relaxed);
                }
                Err(e) => return Err(e.to_string()),
            },
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
        }
    }
}

/// Pages the feed from the start, asking again as soon as answered, until told to stop.
async fn poll_pages(
    port: u16,
    opened: Arc<AtomicUsize>,
    seen: Arc<AtomicUsize>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    opened.fetch_add(1, Ordering::Relaxed);
    let (mut after, mut buf) = (0, Vec::new());
    while !*stop.borrow() {
        let request = crate::client::get(&format!("/v1/changes?after={after}&limit=100"), Some(TOKEN));
        let status = exchange(&mut stream, &request, &mut buf)
            .await
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&buf)));
        }
        let page: serde_json::Value = serde_json::from_slice(&buf).map_err(|e| e.to_string())?;
        let changes = page["changes"].as_array().map_or(0, Vec::len);
        after = page["next"].as_i64().ok_or("a page without next")?;
        seen.fetch_add(changes, Ordering::Relaxed);
    }
    Ok(())
}
