//! The real daemon binary as a child process on loopback (as shipped, its log in a file), its databases, and its
//! memory as the kernel sees it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const TOKEN: &str = "bench_token";

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh Postgres database, dropped with the value.
pub struct PgDatabase {
    pub name: String,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        let name = format!("clerk_sync_bench_{}", rand::random::<u32>());
        let mut conn = sqlx::PgConnection::connect(&admin_url())
            .await
            .expect("the benchmark needs PostgreSQL (TEST_DATABASE_URL)");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        PgDatabase { name }
    }

    pub fn url(&self) -> String {
        let admin = admin_url();
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin);
        format!("{base}/{}", self.name)
    }

    pub async fn drop_now(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
            let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
                .execute(&mut conn)
                .await;
        }
    }
}

pub struct Daemon {
    child: Child,
    pub port: u16,
    /// Its stderr, as a service manager would keep it: a file, never a terminal.
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Daemon {
    /// The daemon as shipped (default configuration and logging, `RUST_LOG` unset) plus `extra` variables, its
    /// output going to a file.
    pub async fn start(database_url: &str, extra: &[(&str, String)]) -> Daemon {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("clerk-sync.log");
        let out = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_clerk-sync"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
            .env("CLERK_SYNC_API_TOKENS", TOKEN)
            .env("CLERK_SYNC_LISTEN", format!("127.0.0.1:{port}"))
            .env("CLERK_SYNC_METRICS_LISTEN", format!("127.0.0.1:{}", free_port()))
            .stdout(Stdio::null())
            .stderr(out);
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn().expect("the daemon binary starts");
        let daemon = Daemon {
            child,
            port,
            log,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            let ready = crate::client::drive(
                port,
                vec![crate::client::get("/readyz", None)],
                1,
                Duration::from_secs(2),
            )
            .await;
            if ready.failures.is_empty() && !ready.latencies.is_empty() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the daemon did not become ready; its log:\n{}",
                daemon.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        daemon
    }

    /// As shipped, nothing added.
    pub async fn start_as_shipped(database_url: &str) -> Daemon {
        Daemon::start(database_url, &[]).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Bytes of log written so far.
    pub fn log_bytes(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// (VmHWM, VmRSS) in MiB.
    pub fn memory_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A signed `user.created` for a fresh user, as raw HTTP.
pub fn user_created(user_id: &str, updated_at: i64, svix_id: &str) -> crate::client::Raw {
    let body = serde_json::json!({
        "data": {
            "id": user_id, "object": "user", "first_name": "Bench", "last_name": "User",
            "username": null, "image_url": "https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCJ9",
            "primary_email_address_id": "idn_1",
            "email_addresses": [{"id": "idn_1", "object": "email_address", "email_address": format!("{user_id}@example.org")}],
            "phone_numbers": [], "external_id": null, "public_metadata": {}, "private_metadata": {},
            "unsafe_metadata": {}, "banned": false, "created_at": updated_at, "updated_at": updated_at
        },
        "object": "event", "type": "user.created", "timestamp": updated_at,
        "instance_id": "ins_bench"
    })
    .to_string();
    let now = std::time::UNIX_EPOCH.elapsed().expect("clock").as_secs() as i64;
    let signature = svix::webhooks::Webhook::new(SECRET)
        .expect("secret")
        .sign(svix_id, now, body.as_bytes())
        .expect("sign");
    let headers = [
        ("svix-id", svix_id.to_string()),
        ("svix-timestamp", now.to_string()),
        ("svix-signature", signature),
    ];
    crate::client::post("/webhooks/clerk", &headers, &body)
}

pub fn now_ms() -> i64 {
    std::time::UNIX_EPOCH.elapsed().expect("clock").as_millis() as i64
}
