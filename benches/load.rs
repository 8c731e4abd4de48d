//! Issue 7's figures (and 9's, 11's and 16's), each as a ratio measured side by side in one run (the machine is shared and noisy).
//!
//! `cargo bench --bench load [-- pg sqlite lookup memory clerk backfill feed feed_streams]` (all by default). Needs PostgreSQL
//! (`TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`). With `BENCH_WRITE=1` the
//! figures replace the marked section of `BENCHMARKS.md`.

#[path = "load/client.rs"]
mod client;
#[path = "load/daemon.rs"]
mod daemon;
#[path = "load/fake_clerk.rs"]
mod fake_clerk;
#[path = "load/feed.rs"]
mod feed;

use std::time::{Duration, Instant};

use client::{drive, get, Raw};
use daemon::{now_ms, user_created, Daemon, PgDatabase, TOKEN};

const CONNECTIONS: usize = 64;

/// Set by a scenario whose run failed: it prints no ratio, and the benchmark exits non-zero.
static FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
const LIMIT: Duration = Duration::from_secs(120);

fn events(prefix: &str, n: usize) -> (Vec<String>, Vec<Raw>) {
    let t = now_ms() - 60_000;
    let ids: Vec<String> = (0..n).map(|i| format!("user_{prefix}{i:08}")).collect();
    let requests = ids
        .iter()
        .enumerate()
        .map(|(i, id)| user_created(id, t, &format!("msg_{prefix}{i:08}")))
        .collect();
    (ids, requests)
}

fn check(name: &str, run: &client::Run) {
    if !run.failures.is_empty() {
        println!(
            "{name}: {} of {} requests failed, first: {}",
            run.failures.len(),
            run.failures.len() + run.latencies.len(),
            run.failures[0]
        );
    }
}

/// The same guarded single-row upsert the daemon's users table gets, one transaction per event, 64 tasks.
async fn baseline(n: usize) -> f64 {
    let db = PgDatabase::create().await;
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_clerk-sync"))
        .arg("migrate")
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "error")
        .status()
        .expect("migrate runs");
    assert!(status.success(), "migrate failed");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(CONNECTIONS as u32)
        .connect(&db.url())
        .await
        .expect("pool");
    let t = now_ms();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..CONNECTIONS {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in (task..n).step_by(CONNECTIONS) {
                let mut tx = pool.begin().await.expect("begin");
                sqlx::query(
                    "INSERT INTO users AS u (clerk_id, email, first_name, last_name, name, username, image_url, \
                     created_via, updated_via, clerk_updated_at, created_at, updated_at) \
                     SELECT $1, $2, $3, $4, $5, NULL, $6, 'webhook', 'webhook', $7, now(), now() \
                     WHERE NOT EXISTS (SELECT 1 FROM clerk_sync_tombstones t WHERE t.clerk_id = $1) \
                     ON CONFLICT (clerk_id) DO UPDATE SET email = EXCLUDED.email, \
                     clerk_updated_at = EXCLUDED.clerk_updated_at, updated_at = now() \
                     WHERE u.deleted_at IS NULL AND u.clerk_updated_at < EXCLUDED.clerk_updated_at",
                )
                .bind(format!("user_base{i:08}"))
                .bind(format!("user_base{i:08}@example.org"))
                .bind("Bench")
                .bind("User")
                .bind("Bench User")
                .bind("https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCJ9")
                .bind(t)
                .execute(&mut *tx)
                .await
                .expect("upsert");
                tx.commit().await.expect("commit");
            }
        }));
    }
    for task in tasks {
        task.await.expect("baseline task");
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    db.drop_now().await;
    rate
}

async fn ingest(url: &str, prefix: &str, n: usize, extra: &[(&str, String)]) -> client::Run {
    let daemon = Daemon::start(url, extra).await;
    let (_, warm) = events(&format!("{prefix}w"), 2_000);
    drive(daemon.port, warm, CONNECTIONS, LIMIT).await;
    let (_, requests) = events(prefix, n);
    let run = drive(daemon.port, requests, CONNECTIONS, LIMIT).await;
    daemon.stop();
    run
}

async fn pg(out: &mut Vec<String>) {
    let n = 30_000;
    let base = baseline(n).await;
    let db = PgDatabase::create().await;
    let mut run = ingest(&db.url(), "pg", n, &[]).await;
    check("pg", &run);
    db.drop_now().await;
    let (rate, p99) = (run.per_sec(), run.p99());
    out.push(format!(
        "pg_ingest_ratio {:.2} (target >= 1.5; daemon {rate:.0} ev/s p99 {:.1} ms; baseline sqlx one commit per event {base:.0} ev/s)",
        rate / base,
        p99.as_secs_f64() * 1e3
    ));
}

async fn sqlite(out: &mut Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let mut run = ingest(&url, "sq", 30_000, &[]).await;
    check("sqlite", &run);
    let (rate, p99) = (run.per_sec(), run.p99());
    out.push(format!(
        "sqlite_ingest_ratio {:.2} (target >= 1.0 = 10,000 ev/s; {rate:.0} ev/s p99 {:.1} ms)",
        rate / 10_000.0,
        p99.as_secs_f64() * 1e3
    ));
}

async fn lookup(out: &mut Vec<String>) {
    let db = PgDatabase::create().await;
    let daemon = Daemon::start(&db.url(), &[]).await;
    let (ids, created) = events("lk", 2_000);
    check("lookup setup", &drive(daemon.port, created, CONNECTIONS, LIMIT).await);
    let gets: Vec<Raw> = ids
        .iter()
        .map(|id| get(&format!("/v1/users/{id}"), Some(TOKEN)))
        .collect();
    check(
        "lookup fill",
        &drive(daemon.port, gets.clone(), CONNECTIONS, LIMIT).await,
    );
    let n = 200_000;
    let users: Vec<Raw> = (0..n).map(|i| gets[i % gets.len()].clone()).collect();
    let livez_req = get("/livez", None);
    let livez: Vec<Raw> = (0..n).map(|_| livez_req.clone()).collect();
    let mut l1 = drive(daemon.port, livez.clone(), CONNECTIONS, LIMIT).await;
    let mut u = drive(daemon.port, users, CONNECTIONS, LIMIT).await;
    let l2 = drive(daemon.port, livez, CONNECTIONS, LIMIT).await;
    check("lookup", &u);
    let livez_rate = (l1.per_sec() + l2.per_sec()) / 2.0;
    out.push(format!(
        "lookup_ratio {:.2} (target >= 0.9; cached GET /v1/users {:.0} req/s p99 {:.2} ms; GET /livez {livez_rate:.0} req/s p99 {:.2} ms)",
        u.per_sec() / livez_rate,
        u.per_sec(),
        u.p99().as_secs_f64() * 1e3,
        l1.p99().as_secs_f64() * 1e3
    ));
    daemon.stop();
    db.drop_now().await;
}

async fn memory(out: &mut Vec<String>) {
    let db = PgDatabase::create().await;
    let daemon = Daemon::start(&db.url(), &[]).await;
    let n = 100_000;
    let (ids, created) = events("mem", n);
    check(
        "memory webhooks",
        &drive(daemon.port, created, CONNECTIONS, LIMIT).await,
    );
    let gets: Vec<Raw> = ids
        .iter()
        .map(|id| get(&format!("/v1/users/{id}"), Some(TOKEN)))
        .collect();
    check("memory lookups", &drive(daemon.port, gets, CONNECTIONS, LIMIT).await);
    let (peak, _) = daemon.memory_mib();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, idle) = daemon.memory_mib();
    out.push(format!(
        "memory_peak_ratio {:.2} (target <= 1.0 = 256 MiB; 100,000 users by webhook then looked up (cache full): peak RSS {peak:.0} MiB, after 10 s idle {idle:.0} MiB)",
        peak / 256.0
    ));
    daemon.stop();
    db.drop_now().await;
}

async fn clerk(out: &mut Vec<String>) {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    let (slow, failing, alone) = ("user_slowclerk1", "user_failclerk1", "user_failalone1");
    let t = now_ms() - 60_000;
    let user = serde_json::json!({"id": slow, "object": "user", "email_addresses": [], "phone_numbers": [],
        "created_at": t, "updated_at": t});
    Mock::given(method("GET"))
        .and(path(format!("/v1/users/{slow}")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(user)
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    for id in [failing, alone] {
        Mock::given(method("GET"))
            .and(path(format!("/v1/users/{id}")))
            .respond_with(ResponseTemplate::new(503))
            .mount(&server)
            .await;
    }
    let db = PgDatabase::create().await;
    let env = [
        ("CLERK_API_URL", server.uri()),
        ("CLERK_SECRET_KEY", "sk_test_bench".to_string()),
        ("CLERK_SYNC_CLERK__RETRY_BUDGET_MS", "3000".to_string()),
    ];
    let daemon = Daemon::start(&db.url(), &env).await;
    let port = daemon.port;
    let lookup = tokio::spawn(drive(
        port,
        vec![get(&format!("/v1/users/{slow}"), Some(TOKEN))],
        1,
        LIMIT,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let updates: Vec<Raw> = (0..20)
        .map(|i| user_created(slow, t + 1 + i, &format!("msg_slow{i}")))
        .collect();
    let mut webhooks = drive(port, updates, 1, LIMIT).await;
    check("clerk webhooks", &webhooks);
    let waiting = !lookup.is_finished();
    let _ = lookup.await;

    drive(port, vec![get(&format!("/v1/users/{alone}"), Some(TOKEN))], 1, LIMIT).await;
    let lookups: Vec<Raw> = (0..100)
        .map(|_| get(&format!("/v1/users/{failing}"), Some(TOKEN)))
        .collect();
    drive(port, lookups, 100, LIMIT).await;
    let received = server.received_requests().await.unwrap_or_default();
    let count = |id: &str| received.iter().filter(|r| r.url.path().ends_with(id)).count();
    out.push(format!(
        "clerk_slow_webhook_p99 {:.1} ms (20 webhooks for a user whose lookup waits 5 s on Clerk; lookup still waiting after them: {waiting})",
        webhooks.p99().as_secs_f64() * 1e3
    ));
    out.push(format!(
        "clerk_failing_calls_ratio {:.2} (100 concurrent lookups of one unknown user while Clerk answers 503: {} Clerk calls; one lookup alone: {})",
        count(failing) as f64 / count(alone).max(1) as f64,
        count(failing),
        count(alone)
    ));
    daemon.stop();
    db.drop_now().await;
}

/// Issue 9: N users (1,000,000 by default, `BENCH_BACKFILL_USERS`) from a local fake Clerk that enforces
/// 1000 requests per 10 s, walked by `clerk-sync backfill` while a `serve` on the same database takes webhooks.
async fn backfill(out: &mut Vec<String>, backend: &str) {
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
        .env("RUST_LOG", "warn")
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
    let mut served = serving.await.expect("webhooks");
    check("backfill webhooks", &served);
    if !status.success() {
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
            "backfill_{backend} FAILED: clerk-sync backfill exited {status} after {wall:.1} s; {} {tail}",
            summary.trim()
        ));
        FAILED.store(true, std::sync::atomic::Ordering::Relaxed);
        daemon.stop();
        if let Some(db) = pg {
            db.drop_now().await;
        }
        return;
    }
    let floor = (n as f64 / 500.0).ceil() / 100.0;
    out.push(format!(
        "backfill_{backend}_ratio {:.2} (target <= 1.1; {n} users in {wall:.1} s, rate-limit floor {floor:.1} s; peak RSS \
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

fn write_benchmarks(lines: &[String]) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
    let Ok(doc) = std::fs::read_to_string(path) else { return };
    let (Some(a), Some(b)) = (doc.find("<!-- bench:begin -->"), doc.find("<!-- bench:end -->")) else {
        return;
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name\t: ").map(String::from))
        })
        .unwrap_or_default();
    let when = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output();
    let when = when
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let body = format!(
        "<!-- bench:begin -->\nRun {when} on {cores} cores ({cpu}), `cargo bench --bench load`:\n\n```\n{}\n```\n",
        lines.join("\n")
    );
    let _ = std::fs::write(path, format!("{}{}{}", &doc[..a], body, &doc[b..]));
}

fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let runs = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut out = Vec::new();
    rt.block_on(async {
        if runs("pg") {
            pg(&mut out).await;
        }
        if runs("sqlite") {
            sqlite(&mut out).await;
        }
        if runs("lookup") {
            lookup(&mut out).await;
        }
        if runs("memory") {
            memory(&mut out).await;
        }
        if runs("clerk") {
            clerk(&mut out).await;
        }
        if runs("backfill") {
            backfill(&mut out, "postgres").await;
            backfill(&mut out, "sqlite").await;
        }
        if runs("feed") {
            feed::feed(&mut out).await;
        }
        if runs("feed_streams") {
            feed::feed_streams(&mut out).await;
        }
    });
    for line in &out {
        println!("{line}");
    }
    if FAILED.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("benchmark failed: a scenario did not complete (see its FAILED line); BENCHMARKS.md left as it is");
        std::process::exit(1);
    }
    if std::env::var("BENCH_WRITE").is_ok_and(|v| v == "1") {
        write_benchmarks(&out);
    }
}
