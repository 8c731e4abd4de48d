//! The daemon as a real process (`clerk-sync serve`), a guard for child processes, and fresh Postgres databases.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::common::{free_port, http_client, log_tail, new_secret, now_ms, random_hex, sign};

/// A child process whose output goes to a log file; killed (SIGKILL) on drop, and its log printed when the
/// test is panicking.
pub struct Process {
    name: &'static str,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> Process {
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().expect("cannot clone the log file handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process {
            name,
            child: Some(child),
            log,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("process already stopped").id()
    }

    /// Panics (with the log) if the process has exited.
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("process already stopped");
        if let Ok(Some(status)) = child.try_wait() {
            self.child = None;
            panic!(
                "{} exited early ({status}); its log:\n{}",
                self.name,
                log_tail(&self.log, 8000)
            );
        }
    }

    /// Sends SIGTERM and waits (up to `limit`) for the exit status.
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let pid = self.id();
        let kill = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("cannot run `kill`");
        assert!(kill.success(), "`kill -TERM {pid}` failed: {kill}");
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut().expect("process already stopped");
            if let Some(status) = child.try_wait().expect("cannot wait for the child") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?} of SIGTERM; its log:\n{}",
                self.name,
                log_tail(&self.log, 8000)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ({}) ----\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 8000)
            );
        }
    }
}

/// The daemon, running as `clerk-sync serve`.
pub struct Daemon {
    pub process: Process,
    /// `http://127.0.0.1:<port>` of the main listener.
    pub url: String,
    /// `http://127.0.0.1:<port>` of the metrics listener.
    pub metrics_url: String,
    pub metrics_port: u16,
    pub secret: String,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Variables of the test's own environment that would change the daemon's behaviour.
fn inherited_to_remove() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| {
            k.starts_with("OTEL_")
                || k.starts_with("CLERK_")
                || k == "DATABASE_URL"
                || k.to_ascii_lowercase().ends_with("_proxy")
        })
        .collect()
}

impl Daemon {
    /// Starts the daemon on `database_url` with a fake Clerk at `clerk_url`, plus `extra_env`, and waits until
    /// `/readyz` answers 200 (at most 30 s).
    pub async fn start(database_url: &str, clerk_url: &str, extra_env: &[(&str, &str)]) -> Daemon {
        Daemon::launch(database_url, clerk_url, extra_env, false).await
    }

    /// The same with logging as shipped: `RUST_LOG` and `NO_COLOR` unset, output to a file.
    pub async fn start_as_shipped(database_url: &str, clerk_url: &str, extra_env: &[(&str, &str)]) -> Daemon {
        Daemon::launch(database_url, clerk_url, extra_env, true).await
    }

    async fn launch(database_url: &str, clerk_url: &str, extra_env: &[(&str, &str)], shipped: bool) -> Daemon {
        let dir = tempfile::TempDir::new().expect("cannot create a temporary directory");
        let (port, metrics_port) = (free_port(), free_port());
        let secret = new_secret();
        let mut command = Command::new(env!("CARGO_BIN_EXE_clerk-sync"));
        command.arg("serve").current_dir(dir.path());
        for key in inherited_to_remove() {
            command.env_remove(key);
        }
        if shipped {
            command.env_remove("RUST_LOG").env_remove("NO_COLOR");
        } else {
            command.env("RUST_LOG", "info,sqlx=warn").env("NO_COLOR", "1");
        }
        command
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("DATABASE_URL", database_url)
            .env("CLERK_WEBHOOK_SIGNING_SECRET", &secret)
            .env("CLERK_SYNC_LISTEN", format!("127.0.0.1:{port}"))
            .env("CLERK_SYNC_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
            .env("CLERK_API_URL", clerk_url)
            .env("CLERK_SECRET_KEY", "sk_test_x")
            .env("CLERK_SYNC_API_TOKENS", "tok_test")
            .env("CLERK_SYNC_CLERK__RETRY_BUDGET_MS", "3000");
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let process = Process::spawn("clerk-sync", command, dir.path().join("clerk-sync.log"));
        let mut daemon = Daemon {
            process,
            url: format!("http://127.0.0.1:{port}"),
            metrics_url: format!("http://127.0.0.1:{metrics_port}"),
            metrics_port,
            secret,
            client: http_client(),
            _dir: dir,
        };
        daemon.wait_ready().await;
        daemon
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.process.assert_running();
            let answer = self.client.get(format!("{}/readyz", self.url)).send().await;
            if answer.is_ok_and(|r| r.status() == StatusCode::OK) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "clerk-sync was not ready within 30 s; its log:\n{}",
                log_tail(&self.process.log, 8000)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// POSTs `body` to `/webhooks/clerk`, signed with the daemon's secret; returns status and body.
    pub async fn post_webhook(&self, body: &str, svix_id: &str) -> (StatusCode, String) {
        let timestamp = now_ms() / 1000;
        let signature = sign(&self.secret, svix_id, timestamp, body.as_bytes());
        self.post_webhook_with(body, svix_id, timestamp, &signature).await
    }

    /// POSTs `body` with the given svix headers (for bad signatures).
    pub async fn post_webhook_with(
        &self,
        body: &str,
        svix_id: &str,
        timestamp: i64,
        signature: &str,
    ) -> (StatusCode, String) {
        let response = self
            .client
            .post(format!("{}/webhooks/clerk", self.url))
            .header("content-type", "application/json")
            .header("svix-id", svix_id)
            .header("svix-timestamp", timestamp.to_string())
            .header("svix-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .expect("POST /webhooks/clerk failed");
        let status = response.status();
        (status, response.text().await.unwrap_or_default())
    }

    /// `GET /v1/users/{id}` with the service token.
    pub async fn get_user(&self, id: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/v1/users/{id}", self.url))
            .bearer_auth("tok_test")
            .send()
            .await
            .expect("GET /v1/users/{id} failed")
    }

    /// The text of `GET /metrics` on the metrics listener.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.metrics_url))
            .send()
            .await
            .expect("GET /metrics failed");
        assert_eq!(response.status(), StatusCode::OK, "GET /metrics");
        response.text().await.expect("metrics body")
    }

    /// SIGTERM, then asserts the daemon exits with 0 within 20 s.
    pub async fn stop(mut self) {
        let status = self.process.terminate(Duration::from_secs(20)).await;
        assert_eq!(
            status.code(),
            Some(0),
            "clerk-sync should exit 0 after SIGTERM, got {status}; its log:\n{}",
            log_tail(&self.process.log, 8000)
        );
    }
}

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh PostgreSQL database `clerk_sync_obs_<hex>`, dropped (WITH (FORCE)) when this is dropped.
pub struct PgDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        use sqlx::Connection;
        let admin_url = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_ADMIN_URL.to_string());
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {admin_url}: {e}\nThe Prometheus integration test runs the daemon on a \
                 fresh PostgreSQL database. Start PostgreSQL (`scripts/test --setup` installs and starts one), or set TEST_DATABASE_URL to a PostgreSQL URL whose user may \
                 CREATE DATABASE (default {DEFAULT_ADMIN_URL})."
            )
        });
        let name = format!("clerk_sync_obs_{}", random_hex());
        sqlx::raw_sql(&format!(r#"CREATE DATABASE "{name}""#))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name} via {admin_url}: {e}"));
        let _ = conn.close().await;
        let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is not a URL");
        url.set_path(&format!("/{name}"));
        PgDatabase {
            admin_url,
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::raw_sql(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop database {}: {e}", self.name),
            Err(_) => eprintln!("could not drop database {}: the dropping thread panicked", self.name),
        }
    }
}
