//! The real daemon binary as a child process on loopback, its databases, and its memory as the kernel sees it.

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
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Daemon {
    /// Logging errors only, to the benchmark's stderr.
    pub async fn start(database_url: &str, extra: &[(&str, String)]) -> Daemon {
        Daemon::launch(database_url, extra, true).await
    }

    /// Default configuration and default logging (`info`, one line per webhook); the lines are thrown away,
    /// after the daemon paid for writing them.
    pub async fn start_as_shipped(database_url: &str) -> Daemon {
        Daemon::launch(database_url, &[], false).await
    }

    async fn launch(database_url: &str, extra: &[(&str, String)], errors_only: bool) -> Daemon {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_clerk-sync"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
            .env("CLERK_SYNC_API_TOKENS", TOKEN)
            .env("CLERK_SYNC_LISTEN", format!("127.0.0.1:{port}"))
            .env("CLERK_SYNC_METRICS_LISTEN", format!("127.0.0.1:{}", free_port()))
            .stdout(Stdio::null());
        if errors_only {
            command.env("RUST_LOG", "error").stderr(Stdio::inherit());
        } else {
            command.stderr(Stdio::null());
        }
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn().expect("the daemon binary starts");
        let daemon = Daemon { child, port };
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
                "the daemon did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        daemon
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
