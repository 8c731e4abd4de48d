//! Issue 7's and 15's figures (and 9's, 11's and 16's), each as a ratio measured side by side in one run (the
//! machine is shared and noisy), with the daemon as shipped: default configuration, default logging into a file.
//!
//! `cargo bench --bench load [-- pg sqlite lookup memory clerk backfill feed feed_streams]` (all by default). Needs PostgreSQL
//! (`TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`). With `BENCH_WRITE=1` the
//! figures replace the marked section of `BENCHMARKS.md`.

#[path = "load/backfill.rs"]
mod backfill;
#[path = "load/client.rs"]
mod client;
#[path = "load/cpu.rs"]
mod cpu;
#[path = "load/daemon.rs"]
mod daemon;
#[path = "load/fake_clerk.rs"]
mod fake_clerk;
#[path = "load/feed.rs"]
mod feed;
#[path = "load/pg.rs"]
mod pg;

use std::time::Duration;

use client::{drive, get, Raw};
use daemon::{now_ms, user_created, Daemon, PgDatabase, TOKEN};

pub const CONNECTIONS: usize = 64;

/// Set by a scenario whose run failed: it prints no ratio, and the benchmark exits non-zero.
static FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
pub const LIMIT: Duration = Duration::from_secs(120);

pub fn events(prefix: &str, n: usize) -> (Vec<String>, Vec<Raw>) {
    let t = now_ms() - 60_000;
    let ids: Vec<String> = (0..n).map(|i| format!("user_{prefix}{i:08}")).collect();
    let requests = ids
        .iter()
        .enumerate()
        .map(|(i, id)| user_created(id, t, &format!("msg_{prefix}{i:08}")))
        .collect();
    (ids, requests)
}

/// Marks the run failed: the benchmark exits non-zero and `BENCHMARKS.md` is left as it is.
pub fn fail() {
    FAILED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Prints a run's failures and marks the benchmark failed; `true` when every request got a 2xx.
pub fn check(name: &str, run: &client::Run) -> bool {
    if run.failures.is_empty() {
        return true;
    }
    println!(
        "{name}: {} of {} requests failed, first: {}",
        run.failures.len(),
        run.failures.len() + run.latencies.len(),
        run.failures[0]
    );
    fail();
    false
}

/// A line's figures, or that it failed (no ratio: a run with failures measured nothing).
fn line(name: &str, ok: bool, figures: String) -> String {
    if ok {
        format!("{name} {figures}")
    } else {
        format!("{name} FAILED: some requests failed (see above); no ratio")
    }
}

async fn sqlite(out: &mut Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let mut m = pg::measured(&url, None, "sq", &[]).await;
    let ok = check("sqlite", &m.run);
    let (rate, p99, events) = (m.run.per_sec(), m.run.p99(), m.run.latencies.len() as f64);
    let cpu = m
        .daemon_cpu
        .map_or("n/a".into(), |c| format!("{:.0}", c * 1e6 / events.max(1.0)));
    out.push(line(
        "sqlite_ingest_ratio",
        ok,
        format!(
            "{:.2} (target >= 1.0 = 10,000 ev/s, p99 <= 10 ms; as shipped {rate:.0} ev/s p99 {:.1} ms; daemon CPU {cpu} µs per event)",
            rate / 10_000.0,
            p99.as_secs_f64() * 1e3
        ),
    ));
}

async fn lookup(out: &mut Vec<String>) {
    let db = PgDatabase::create().await;
    let daemon = Daemon::start(&db.url(), &[]).await;
    let (ids, created) = events("lk", 2_000);
    let mut ok = check("lookup setup", &drive(daemon.port, created, CONNECTIONS, LIMIT).await);
    let gets: Vec<Raw> = ids
        .iter()
        .map(|id| get(&format!("/v1/users/{id}"), Some(TOKEN)))
        .collect();
    ok &= check(
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
    ok &= check("lookup", &u) & check("livez", &l1) & check("livez", &l2);
    let livez_rate = (l1.per_sec() + l2.per_sec()) / 2.0;
    let figures = format!(
        "{:.2} (target >= 0.9, p99 <= 2 ms; cached GET /v1/users {:.0} req/s p99 {:.2} ms; GET /livez {livez_rate:.0} req/s p99 {:.2} ms)",
        u.per_sec() / livez_rate,
        u.per_sec(),
        u.p99().as_secs_f64() * 1e3,
        l1.p99().as_secs_f64() * 1e3
    );
    out.push(line("lookup_ratio", ok, figures));
    daemon.stop();
    db.drop_now().await;
}

async fn memory(out: &mut Vec<String>) {
    let db = PgDatabase::create().await;
    let daemon = Daemon::start(&db.url(), &[]).await;
    let n = 100_000;
    let (ids, created) = events("mem", n);
    let mut ok = check(
        "memory webhooks",
        &drive(daemon.port, created, CONNECTIONS, LIMIT).await,
    );
    let gets: Vec<Raw> = ids
        .iter()
        .map(|id| get(&format!("/v1/users/{id}"), Some(TOKEN)))
        .collect();
    ok &= check("memory lookups", &drive(daemon.port, gets, CONNECTIONS, LIMIT).await);
    let (peak, _) = daemon.memory_mib();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, idle) = daemon.memory_mib();
    let figures = format!(
        "{:.2} (target <= 1.0 = 256 MiB; 100,000 users by webhook then looked up (cache full): peak RSS {peak:.0} MiB, after 10 s idle {idle:.0} MiB)",
        peak / 256.0
    );
    out.push(line("memory_peak_ratio", ok, figures));
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
    let ok = check("clerk webhooks", &webhooks);
    let waiting = !lookup.is_finished();
    let _ = lookup.await;

    drive(port, vec![get(&format!("/v1/users/{alone}"), Some(TOKEN))], 1, LIMIT).await;
    let lookups: Vec<Raw> = (0..100)
        .map(|_| get(&format!("/v1/users/{failing}"), Some(TOKEN)))
        .collect();
    drive(port, lookups, 100, LIMIT).await;
    let received = server.received_requests().await.unwrap_or_default();
    let count = |id: &str| received.iter().filter(|r| r.url.path().ends_with(id)).count();
    let figures = format!(
        "{:.1} ms (target: milliseconds, not seconds; 20 webhooks for a user whose lookup waits 5 s on Clerk; lookup still waiting after them: {waiting})",
        webhooks.p99().as_secs_f64() * 1e3
    );
    out.push(line("clerk_slow_webhook_p99", ok, figures));
    out.push(format!(
        "clerk_failing_calls_ratio {:.2} (target ≈ 1; 100 concurrent lookups of one unknown user while Clerk answers 503: {} Clerk calls; one lookup alone: {})",
        count(failing) as f64 / count(alone).max(1) as f64,
        count(failing),
        count(alone)
    ));
    daemon.stop();
    db.drop_now().await;
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
            pg::pg(&mut out).await;
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
            // `BENCH_BACKFILL_ON=postgres` (or `sqlite`) takes one backend only, for quicker iterations.
            let on = std::env::var("BENCH_BACKFILL_ON").unwrap_or_default();
            for backend in ["postgres", "sqlite"] {
                if on.is_empty() || on == backend {
                    backfill::backfill(&mut out, backend).await;
                }
            }
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
