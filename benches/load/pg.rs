//! Issue 15's ingest figures: webhooks into the daemon as shipped, side by side with `pgbench` doing the same
//! guarded single-row upsert on the same server (64 clients, one commit per event), the sqlx baseline, CPU per
//! event from `/proc`, and what the default logging costs against `RUST_LOG=warn`.

use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::client::{drive, Run};
use crate::cpu::{process_cpu, PgCpu};
use crate::daemon::{admin_url, now_ms, Daemon, PgDatabase};
use crate::{events, CONNECTIONS, LIMIT};

/// Events per measured run, and runs of each kind (alternated, so drift of the shared machine falls on all alike).
const EVENTS: usize = 30_000;
const ROUNDS: usize = 3;

/// The guarded single-row upsert of a user, as the daemon's users table gets it (the sqlx and pgbench baselines).
const UPSERT: &str = "INSERT INTO users AS u (clerk_id, email, first_name, last_name, name, username, image_url, \
     created_via, updated_via, clerk_updated_at, created_at, updated_at) \
     SELECT $1, $2, $3, $4, $5, NULL, $6, 'webhook', 'webhook', $7, now(), now() \
     WHERE NOT EXISTS (SELECT 1 FROM clerk_sync_tombstones t WHERE t.clerk_id = $1) \
     ON CONFLICT (clerk_id) DO UPDATE SET email = EXCLUDED.email, \
     clerk_updated_at = EXCLUDED.clerk_updated_at, updated_at = now() \
     WHERE u.deleted_at IS NULL AND u.clerk_updated_at < EXCLUDED.clerk_updated_at";

/// One measured webhook run: the requests, and the CPU the daemon and PostgreSQL spent meanwhile.
pub struct Measured {
    pub run: Run,
    pub daemon_cpu: Option<f64>,
    pub pg_cpu: Option<f64>,
    pub log_bytes: u64,
}

impl Measured {
    pub fn ok(&self) -> bool {
        self.run.failures.is_empty()
    }

    fn events(&self) -> f64 {
        self.run.latencies.len() as f64
    }
}

/// `EVENTS` fresh `user.created` webhooks into a daemon on `url` (after 2,000 to warm it up); `pg` names the
/// database when it is PostgreSQL, so its backends' CPU is measured too.
pub async fn measured(url: &str, pg: Option<&str>, prefix: &str, extra: &[(&str, String)]) -> Measured {
    let mut admin = match pg {
        Some(_) => sqlx::PgConnection::connect(&admin_url()).await.ok(),
        None => None,
    };
    let daemon = Daemon::start(url, extra).await;
    let (_, warm) = events(&format!("{prefix}w"), 2_000);
    drive(daemon.port, warm, CONNECTIONS, LIMIT).await;
    let (_, requests) = events(prefix, EVENTS);
    let (log0, cpu0) = (daemon.log_bytes(), process_cpu(daemon.pid()));
    let pg0 = match (&mut admin, pg) {
        (Some(conn), Some(name)) => PgCpu::snapshot(conn, name).await,
        _ => None,
    };
    let run = drive(daemon.port, requests, CONNECTIONS, LIMIT).await;
    let cpu1 = process_cpu(daemon.pid());
    let pg1 = match (&mut admin, pg) {
        (Some(conn), Some(name)) => PgCpu::snapshot(conn, name).await,
        _ => None,
    };
    if let Some(conn) = admin {
        let _ = conn.close().await;
    }
    let log_bytes = daemon.log_bytes() - log0;
    if !run.failures.is_empty() {
        println!("{prefix}: the daemon's log ends:\n{}", daemon.log_tail());
    }
    daemon.stop();
    Measured {
        run,
        daemon_cpu: cpu0.zip(cpu1).map(|(a, b)| b - a),
        pg_cpu: pg0.zip(pg1).map(|(a, b)| b.since(&a)),
        log_bytes,
    }
}

/// µs of CPU per event, or `n/a` when it could not be read.
fn per_event(cpu: Option<f64>, events: f64) -> String {
    cpu.filter(|_| events > 0.0)
        .map_or("n/a".into(), |c| format!("{:.0}", c * 1e6 / events))
}

/// A migrated database (the daemon's own schema), for the baselines.
async fn migrated() -> PgDatabase {
    let db = PgDatabase::create().await;
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_clerk-sync"))
        .arg("migrate")
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("migrate runs");
    assert!(status.success(), "migrate failed");
    db
}

/// What `pgbench` measured: events/s, p99, PostgreSQL's CPU over the run.
struct Bench {
    rate: f64,
    p99: Duration,
    pg_cpu: Option<f64>,
    events: f64,
}

/// `pgbench -c 64 -j 2 -M prepared` running [`UPSERT`] (fresh random ids, one statement, one commit per
/// event) `EVENTS` times on a fresh migrated database. `Err` says why it did not complete.
async fn pgbench() -> Result<Bench, String> {
    let db = migrated().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // pgbench's variables: :n a random id, :t the updated_at; `-M prepared` turns them into parameters.
    let script = format!(
        "\\set n random(1, 1000000000000)\n{};\n",
        UPSERT
            .replace("$1", "('user_pgb' || :n::text)")
            .replace("$2", "('user_pgb' || :n::text || '@example.org')")
            .replace("$3", "'Bench'")
            .replace("$4", "'User'")
            .replace("$5", "'Bench User'")
            .replace("$6", "'https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCJ9'")
            .replace("$7", ":t")
    );
    let script_path = dir.path().join("upsert.sql");
    std::fs::write(&script_path, script).map_err(|e| e.to_string())?;
    let prefix = dir.path().join("pgbench");
    let per_client = EVENTS / CONNECTIONS;
    let mut command = std::process::Command::new("pgbench");
    command
        .args(["-n", "-M", "prepared", "-j", "2", "-l"])
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-t{per_client}"))
        .arg(format!("-Dt={}", now_ms()))
        .arg("-f")
        .arg(&script_path)
        .arg(db.url());
    let mut admin = sqlx::PgConnection::connect(&admin_url()).await.ok();
    let pg0 = match &mut admin {
        Some(conn) => PgCpu::snapshot(conn, &db.name).await,
        None => None,
    };
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot run pgbench: {e}"))?;
    // The postmaster reaps pgbench's backends just after they exit; their CPU then shows as its children's.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pg1 = match &mut admin {
        Some(conn) => PgCpu::snapshot(conn, &db.name).await,
        None => None,
    };
    if let Some(conn) = admin {
        let _ = conn.close().await;
    }
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let result = if output.status.success() {
        let rate = stdout
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("no tps in pgbench's output: {stdout}"))?;
        let mut latencies = pgbench_latencies(dir.path());
        latencies.sort_unstable();
        let p99 = latencies
            .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default();
        Ok(Bench {
            rate,
            p99,
            pg_cpu: pg0.zip(pg1).map(|(a, b)| b.since(&a)),
            events: (per_client * CONNECTIONS) as f64,
        })
    } else {
        Err(format!(
            "pgbench exited {}: {} {}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    };
    db.drop_now().await;
    result
}

/// Per-transaction latencies from pgbench's `-l` logs (third column, µs).
fn pgbench_latencies(dir: &std::path::Path) -> Vec<Duration> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !entry.file_name().to_string_lossy().starts_with("pgbench.") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        out.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
                .map(Duration::from_micros),
        );
    }
    out
}

/// The second baseline: 64 tokio tasks doing [`UPSERT`] with sqlx, one transaction per event.
async fn sqlx_baseline() -> f64 {
    let db = migrated().await;
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
            for i in (task..EVENTS).step_by(CONNECTIONS) {
                let mut tx = pool.begin().await.expect("begin");
                sqlx::query(UPSERT)
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
    let rate = EVENTS as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    db.drop_now().await;
    rate
}

/// A webhook run on a fresh PostgreSQL database.
async fn daemon_run(prefix: &str, extra: &[(&str, String)]) -> Measured {
    let db = PgDatabase::create().await;
    let m = measured(&db.url(), Some(&db.name), prefix, extra).await;
    crate::check(prefix, &m.run);
    db.drop_now().await;
    m
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

pub async fn pg(out: &mut Vec<String>) {
    let warn = [("RUST_LOG", "warn".to_string())];
    let (mut benches, mut shipped, mut quiet, mut errors) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        match pgbench().await {
            Ok(b) => benches.push(b),
            Err(e) => errors.push(e),
        }
        shipped.push(daemon_run(&format!("pg{round}"), &[]).await);
        quiet.push(daemon_run(&format!("pgq{round}"), &warn).await);
    }
    let sqlx = sqlx_baseline().await;
    let ok = errors.is_empty() && shipped.iter().chain(&quiet).all(Measured::ok);
    let rate = mean(&shipped.iter().map(|m| m.run.per_sec()).collect::<Vec<_>>());
    let quiet_rate = mean(&quiet.iter().map(|m| m.run.per_sec()).collect::<Vec<_>>());
    let mut all = Run {
        elapsed: Duration::ZERO,
        latencies: shipped.iter().flat_map(|m| m.run.latencies.clone()).collect(),
        failures: Vec::new(),
    };
    let p99 = all.p99().as_secs_f64() * 1e3;
    let events: f64 = shipped.iter().map(Measured::events).sum();
    let sum = |runs: &[Measured], f: fn(&Measured) -> Option<f64>| runs.iter().map(f).sum::<Option<f64>>();
    let daemon_us = per_event(sum(&shipped, |m| m.daemon_cpu), events);
    let pg_us = per_event(sum(&shipped, |m| m.pg_cpu), events);
    let quiet_events: f64 = quiet.iter().map(Measured::events).sum();
    let quiet_us = per_event(sum(&quiet, |m| m.daemon_cpu), quiet_events);
    let log_per_event = shipped.iter().map(|m| m.log_bytes).sum::<u64>() as f64 / events.max(1.0);
    let bench_rate = mean(&benches.iter().map(|b| b.rate).collect::<Vec<_>>());
    let bench_p99 = benches.iter().map(|b| b.p99).max().unwrap_or_default().as_secs_f64() * 1e3;
    let bench_events: f64 = benches.iter().map(|b| b.events).sum();
    let bench_pg_us = per_event(benches.iter().map(|b| b.pg_cpu).sum::<Option<f64>>(), bench_events);
    if !ok {
        crate::fail();
        for e in &errors {
            out.push(format!("pg FAILED: {e}"));
        }
        out.push(format!(
            "pg_ingest FAILED: failed requests in {} of {} daemon runs (see above); no ratio",
            shipped.iter().chain(&quiet).filter(|m| !m.ok()).count(),
            2 * ROUNDS
        ));
        return;
    }
    out.push(format!(
        "pg_ingest_ratio {:.2} (target >= 1.5, p99 <= 10 ms; daemon as shipped {rate:.0} ev/s p99 {p99:.1} ms; \
         pgbench -c {CONNECTIONS} guarded upsert, one commit per event, {bench_rate:.0} ev/s p99 {bench_p99:.1} ms; \
         {ROUNDS} rounds of {EVENTS} events alternated)",
        rate / bench_rate
    ));
    out.push(format!(
        "pg_ingest_sqlx_ratio {:.2} (second baseline: 64 sqlx tasks, the same upsert, one transaction per event, \
         {sqlx:.0} ev/s)",
        rate / sqlx
    ));
    out.push(format!(
        "cpu_per_event_daemon_us {daemon_us} (target <= 50; /proc utime+stime of the daemon over the measured runs)"
    ));
    out.push(format!(
        "cpu_per_event_postgres_us {pg_us} (target <= 60; the daemon's backends, background processes and reaped \
         children; pgbench's runs: {bench_pg_us})"
    ));
    out.push(format!(
        "logging_ratio {:.2} (target >= 0.95; Postgres ingest as shipped {rate:.0} ev/s / RUST_LOG=warn \
         {quiet_rate:.0} ev/s; daemon CPU per event {daemon_us} µs / {quiet_us} µs; {log_per_event:.0} bytes of log \
         per webhook)",
        rate / quiet_rate
    ));
}
