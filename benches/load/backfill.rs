//! Issue 9's and 15's backfill figures: `clerk-sync backfill` over N users from a local fake Clerk, against the
//! rate-limit floor, while a `serve` on the same database takes webhooks.

use std::time::{Duration, Instant};

use crate::client::drive;
use crate::daemon::{Daemon, PgDatabase};
use crate::{check, events, fail, fake_clerk, LIMIT};

/// Issue 9: N users (1,000,000 by default, `BENCH_BACKFILL_USERS`) from a local fake Clerk that enforces
/// 1000 requests per 10 s, walked by `clerk-sync backfill` while a `serve` on the same database takes webhooks.
pub async fn backfill(out: &mut Vec<String>, backend: &str) {
    let n: u64 = std::env::var("BENCH_BACKFILL_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (fake, url) = fake_clerk::FakeClerk::start(n).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = match backend {
        "postgres" => Some(PgDatabase::create().await),
        _ => None,
    };
    let database_url = match &pg {
        Some(db) => db.url(),
        None => format!("sqlite://{}", dir.path().join("backfill.db").display()),
    };
    let daemon = Daemon::start(&database_url, &[]).await;
    let (_, webhooks) = events(&format!("bw{backend}"), 20_000);
    let port = daemon.port;
    let serving = tokio::spawn(async move { drive(port, webhooks, 2, LIMIT).await });
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_clerk-sync"))
        .arg("backfill")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &database_url)
        .env("CLERK_API_URL", &url)
        .env("CLERK_SECRET_KEY", "sk_test_bench")
        .env("CLERK_SYNC_CLERK__REQUESTS_PER_10S", "1000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("backfill.log")).expect("log file"))
        .spawn()
        .expect("backfill starts");
    let mut peak = 0.0_f64;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        let path = format!("/proc/{}/status", child.id());
        let hwm = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(kb) = hwm.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
            let kb: f64 = kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0.0);
            peak = peak.max(kb / 1024.0);
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "backfill took over 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let wall = started.elapsed().as_secs_f64();
    let summary = child
        .stdout
        .take()
        .map(|mut s| {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut text);
            text
        })
        .unwrap_or_default();
    // The summary is a few lines (one per kind): one line here, so each figure stays on its line.
    let summary = summary.lines().map(str::trim).collect::<Vec<_>>().join("; ");
    let mut served = serving.await.expect("webhooks");
    let served_ok = check("backfill webhooks", &served);
    if !status.success() || !served_ok {
        // A run that did not complete measured nothing: no ratio, and the benchmark fails.
        let log = std::fs::read_to_string(dir.path().join("backfill.log")).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ");
        out.push(format!(
            "backfill_{backend} FAILED: clerk-sync backfill exited {status} after {wall:.1} s (webhooks meanwhile all \
             answered 2xx: {served_ok}); {} {tail}",
            summary.trim()
        ));
        fail();
        daemon.stop();
        if let Some(db) = pg {
            db.drop_now().await;
        }
        return;
    }
    let floor = (n as f64 / 500.0).ceil() / 100.0;
    let target = if backend == "postgres" { "1.5" } else { "2" };
    out.push(format!(
        "backfill_{backend}_ratio {:.2} (target <= {target}; {n} users in {wall:.1} s, rate-limit floor {floor:.1} s; peak RSS \
         {peak:.0} MiB (target <= 256); {} Clerk requests, {} answered 429; meanwhile {} webhooks at \
         {:.0} ev/s, p99 {:.1} ms) {}",
        wall / floor,
        fake.requests.load(std::sync::atomic::Ordering::Relaxed),
        fake.limited.load(std::sync::atomic::Ordering::Relaxed),
        served.latencies.len(),
        served.per_sec(),
        served.p99().as_secs_f64() * 1e3,
        summary.trim()
    ));
    daemon.stop();
    if let Some(db) = pg {
        db.drop_now().await;
    }
}
