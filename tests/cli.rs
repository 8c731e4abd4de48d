//! The real `clerk-sync` binary: exit codes, redaction, and a serve / send-test-event / SIGTERM round trip.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

#[path = "cli/first_run.rs"]
mod first_run;
#[path = "cli/openapi.rs"]
mod openapi;

const BIN: &str = env!("CARGO_BIN_EXE_clerk-sync");

fn secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("clerk-sync.db").display())
}

/// The binary with a clean environment: PATH, the working directory, and `vars` only.
fn clerk_sync(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .current_dir(dir)
        .stdin(Stdio::null());
    for (key, value) in vars {
        command.env(key, value);
    }
    command
}

fn run(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let Output { status, stdout, stderr } = clerk_sync(dir, args, vars).output().expect("cannot run clerk-sync");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Kills the child (by its own handle) if the test ends before it exited.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Daemon {
    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            match self.0.try_wait().expect("try_wait failed") {
                Some(status) => return status.code(),
                None if Instant::now() >= deadline => {
                    panic!("clerk-sync (pid {}) did not exit within {within:?}", self.0.id())
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

#[test]
fn check_config_rejects_an_unknown_database_scheme() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, stderr) = run(dir.path(), &["check-config"], &[("DATABASE_URL", "mysql://x")]);
    assert_eq!(code, Some(78), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got: {stderr}");
    assert!(
        lines[0].contains("DATABASE_URL") || lines[0].contains("database.url"),
        "the error must name the key: {stderr}"
    );
}

#[test]
fn check_config_rejects_a_secret_that_does_not_decode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vars = [
        ("DATABASE_URL", sqlite_url(dir.path())),
        ("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_!!!".to_string()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, _, stderr) = run(dir.path(), &["check-config"], &vars);
    assert_eq!(code, Some(78), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got: {stderr}");
    assert!(
        lines[0].contains("CLERK_WEBHOOK_SIGNING_SECRET") || lines[0].contains("webhook_signing_secret"),
        "the error must name the signing secret: {stderr}"
    );
    assert!(!stderr.contains("whsec_!!!"), "the secret must not be echoed: {stderr}");
}

#[test]
fn check_config_prints_the_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = secret();
    let url = sqlite_url(dir.path());
    let vars = [
        ("DATABASE_URL", url.as_str()),
        ("CLERK_WEBHOOK_SIGNING_SECRET", secret.as_str()),
    ];
    let (code, stdout, stderr) = run(dir.path(), &["check-config"], &vars);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("[redacted]"),
        "the secret must show as [redacted]: {stdout}"
    );
    assert!(
        stdout.contains("webhook_signing_secret"),
        "the config must be printed: {stdout}"
    );
    assert!(
        stdout.contains(&url),
        "the effective database URL must be printed: {stdout}"
    );
    let key = secret.trim_start_matches("whsec_");
    for output in [&stdout, &stderr] {
        assert!(!output.contains(key), "the secret leaked: {output}");
    }
}

#[test]
fn check_config_prints_the_effective_clerk_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(dir.path());
    let budget = |extra: &[(&str, &str)]| {
        let mut vars = vec![("DATABASE_URL", url.as_str())];
        vars.extend_from_slice(extra);
        let (code, stdout, stderr) = run(dir.path(), &["check-config"], &vars);
        assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
        let line = stdout.lines().find(|l| l.starts_with("requests_per_10s"));
        line.unwrap_or_else(|| panic!("no requests_per_10s in: {stdout}"))
            .to_owned()
    };
    // A development instance allows 100 requests per 10 s, production 1000.
    assert_eq!(budget(&[("CLERK_SECRET_KEY", "sk_test_abc")]), "requests_per_10s = 90");
    assert_eq!(budget(&[("CLERK_SECRET_KEY", "sk_live_abc")]), "requests_per_10s = 900");
    assert_eq!(
        budget(&[
            ("CLERK_SECRET_KEY", "sk_test_abc"),
            ("CLERK_SYNC_CLERK__REQUESTS_PER_10S", "250")
        ]),
        "requests_per_10s = 250"
    );
}

#[test]
fn serve_on_a_busy_address_exits_78() {
    let dir = tempfile::tempdir().expect("tempdir");
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("local_addr").to_string();
    let url = sqlite_url(dir.path());
    let secret = secret();
    let vars = [
        ("DATABASE_URL", url.as_str()),
        ("CLERK_WEBHOOK_SIGNING_SECRET", secret.as_str()),
        ("CLERK_SYNC_LISTEN", addr.as_str()),
        ("CLERK_SYNC_METRICS_LISTEN", "127.0.0.1:0"),
    ];
    let child = clerk_sync(dir.path(), &["serve"], &vars)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start clerk-sync");
    let mut daemon = Daemon(child);
    let code = daemon.wait_exit(Duration::from_secs(30));
    let mut stderr = String::new();
    if let Some(mut pipe) = daemon.0.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("read stderr");
    }
    assert_eq!(code, Some(78), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(
        stderr.contains(&addr) || stderr.contains("CLERK_SYNC_LISTEN"),
        "the error should name the address or key: {stderr}"
    );
    drop(busy);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot find a free port")
        .port()
}

async fn wait_ready(port: u16, daemon: &mut Daemon) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = daemon.0.try_wait() {
            panic!("clerk-sync exited early with {status}");
        }
        let ready = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz did not answer 200 within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `clerk-sync serve` on a SQLite file in `dir` and waits until it is ready; returns the process, its
/// port, the database URL and the environment it runs with (for the CLI commands sent to it).
async fn serve_on_sqlite(dir: &Path) -> (Daemon, u16, String, Vec<(&'static str, String)>) {
    let port = free_port();
    let url = sqlite_url(dir);
    let vars = vec![
        ("DATABASE_URL", url.clone()),
        ("CLERK_WEBHOOK_SIGNING_SECRET", secret()),
        ("CLERK_SYNC_LISTEN", format!("127.0.0.1:{port}")),
        ("CLERK_SYNC_METRICS_LISTEN", "127.0.0.1:0".to_owned()),
    ];
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let log = std::fs::File::create(dir.join("serve.log")).expect("log file");
    let child = clerk_sync(dir, &["serve"], &borrowed)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("cannot start clerk-sync serve");
    let mut daemon = Daemon(child);
    wait_ready(port, &mut daemon).await;
    (daemon, port, url, vars)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_send_test_event_then_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut daemon, port, url, owned) = serve_on_sqlite(dir.path()).await;
    let vars: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let webhook_url = format!("http://127.0.0.1:{port}/webhooks/clerk");
    let args = [
        "send-test-event",
        "--type",
        "user.created",
        "--url",
        webhook_url.as_str(),
    ];
    let (code, stdout, stderr) = run(dir.path(), &args, &vars);
    assert_eq!(code, Some(0), "send-test-event\nstdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("200"), "stdout: {stdout}");
    assert!(stdout.contains("applied"), "stdout: {stdout}");

    let options = url.parse::<sqlx::sqlite::SqliteConnectOptions>().expect("sqlite URL");
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("open the SQLite file");
    let users: Vec<(String, String)> = sqlx::query_as("SELECT clerk_id, created_via FROM users")
        .fetch_all(&pool)
        .await
        .expect("read users");
    pool.close().await;
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0].1, "webhook");
    assert!(users[0].0.starts_with("user_"), "{users:?}");
    assert!(stdout.contains(&users[0].0), "stdout should name the user id: {stdout}");

    let pid = daemon.0.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("cannot run kill");
    assert!(kill.success());
    let code = daemon.wait_exit(Duration::from_secs(10));
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert_eq!(code, Some(0), "clerk-sync must exit 0 on SIGTERM; its log:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn check_config_names_an_invalid_key_set_through_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(dir.path());
    let vars = [
        ("DATABASE_URL", url.as_str()),
        ("CLERK_SYNC_WEBHOOKS__DELETE_MODE", "sometimes"),
    ];
    let (code, _, stderr) = run(dir.path(), &["check-config"], &vars);
    assert_eq!(code, Some(78), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line on stderr, got: {stderr}");
    assert!(
        stderr.contains("delete_mode") || stderr.contains("CLERK_SYNC_WEBHOOKS__DELETE_MODE"),
        "the error must name the key: {stderr}"
    );
}

#[test]
fn check_config_never_prints_a_database_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on port 1: the database check fails, but the config is printed first.
    let vars = [("DATABASE_URL", "postgres://app:hunter2@127.0.0.1:1/app")];
    let (code, stdout, stderr) = run(dir.path(), &["check-config"], &vars);
    assert_ne!(
        code,
        Some(0),
        "an unreachable database must fail check-config: {stdout}{stderr}"
    );
    assert!(
        stdout.contains("127.0.0.1:1"),
        "the URL (redacted) must be printed: {stdout}"
    );
    for output in [&stdout, &stderr] {
        assert!(!output.contains("hunter2"), "the database password leaked: {output}");
    }
}

#[test]
fn migrate_creates_the_schema_and_is_repeatable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(dir.path());
    for attempt in 1..=2 {
        let (code, stdout, stderr) = run(dir.path(), &["migrate"], &[("DATABASE_URL", url.as_str())]);
        assert_eq!(code, Some(0), "migrate #{attempt}\nstdout: {stdout}\nstderr: {stderr}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tables: Vec<String> = rt.block_on(async {
        let options = url.parse::<sqlx::sqlite::SqliteConnectOptions>().expect("sqlite URL");
        let pool = sqlx::SqlitePool::connect_with(options)
            .await
            .expect("open the SQLite file");
        let tables = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&pool)
            .await
            .expect("list tables");
        pool.close().await;
        tables
    });
    for table in ["clerk_sync_deliveries", "clerk_sync_tombstones", "users"] {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} missing after migrate: {tables:?}"
        );
    }
}

#[test]
fn check_config_never_prints_a_password_given_as_a_query_parameter() {
    let dir = tempfile::tempdir().expect("tempdir");
    // sqlx reads ?password= (and ?sslkey=, a file path); nothing listens on port 1, but the config is printed first.
    let vars = [(
        "DATABASE_URL",
        "postgres://app@127.0.0.1:1/app?sslmode=disable&password=hunter2&sslkey=/run/secrets/k3y.pem",
    )];
    let (_, stdout, stderr) = run(dir.path(), &["check-config"], &vars);
    assert!(
        stdout.contains("127.0.0.1:1") && stdout.contains("sslmode=disable"),
        "the URL (redacted) must be printed: {stdout}"
    );
    assert!(stdout.contains("password=[redacted]"), "{stdout}");
    for output in [&stdout, &stderr] {
        for secret in ["hunter2", "k3y.pem"] {
            assert!(!output.contains(secret), "{secret} leaked: {output}");
        }
    }
    // sqlx ignores ?sslpassword= and logs its value: refused before it gets there, without echoing it.
    let vars = [("DATABASE_URL", "postgres://app@127.0.0.1:1/app?sslpassword=swordfish")];
    let (code, stdout, stderr) = run(dir.path(), &["check-config"], &vars);
    assert_eq!(code, Some(78), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("sslpassword"), "{stderr}");
    for output in [&stdout, &stderr] {
        assert!(!output.contains("swordfish"), "the sslpassword leaked: {output}");
    }
}

#[test]
fn check_config_never_prints_the_forward_urls_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(dir.path());
    let forward = "https://hooks:pa55word@app.example.com:8443/clerk-sync?tenant=acme&token=t0ken&api_key=k3y";
    let signing = secret();
    let vars = [
        ("DATABASE_URL", url.as_str()),
        ("CLERK_SYNC_FORWARD__URL", forward),
        ("CLERK_SYNC_FORWARD__SIGNING_SECRET", signing.as_str()),
    ];
    let (code, stdout, stderr) = run(dir.path(), &["check-config"], &vars);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("app.example.com:8443/clerk-sync") && stdout.contains("tenant=acme"),
        "the forward URL (redacted) must be printed: {stdout}"
    );
    assert!(stdout.contains("token=[redacted]"), "{stdout}");
    for output in [&stdout, &stderr] {
        for leaked in ["pa55word", "t0ken", "k3y", signing.trim_start_matches("whsec_")] {
            assert!(!output.contains(leaked), "{leaked} leaked: {output}");
        }
    }
}

#[test]
fn serve_refuses_to_forward_to_its_own_webhook_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(dir.path());
    let signing = secret();
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    for forward in [
        format!("http://127.0.0.1:{port}/webhooks/clerk"),
        format!("http://localhost:{port}/webhooks/clerk?token=s3cret"),
        format!("http://[::1]:{port}/webhooks/clerk/"),
        format!("http://0.0.0.0:{port}/webhooks/clerk"),
    ] {
        let vars = [
            ("DATABASE_URL", url.as_str()),
            ("CLERK_SYNC_LISTEN", listen.as_str()),
            ("CLERK_SYNC_METRICS_LISTEN", "127.0.0.1:0"),
            ("CLERK_SYNC_FORWARD__URL", forward.as_str()),
            ("CLERK_SYNC_FORWARD__SIGNING_SECRET", signing.as_str()),
        ];
        // Bounded: a daemon that accepted the URL would serve until killed.
        let mut child = Daemon(
            clerk_sync(dir.path(), &["serve"], &vars)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("cannot start clerk-sync"),
        );
        let code = child.wait_exit(Duration::from_secs(30));
        let mut stderr = String::new();
        if let Some(mut pipe) = child.0.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("read stderr");
        }
        assert_eq!(code, Some(78), "{forward}: {stderr}");
        let lines: Vec<&str> = stderr.trim().lines().collect();
        assert_eq!(lines.len(), 1, "{forward}: one line on stderr, got: {stderr}");
        assert!(
            lines[0].contains("forward.url") && lines[0].contains("/webhooks/clerk"),
            "{forward}: the error must name forward.url and the problem: {stderr}"
        );
        assert!(!stderr.contains("s3cret"), "the URL's token leaked: {stderr}");
    }
    // Another port, or another path on this one, is the application's.
    for forward in [
        format!("http://127.0.0.1:{}/webhooks/clerk", port - 1),
        format!("http://127.0.0.1:{port}/hooks/clerk-sync"),
    ] {
        let vars = [
            ("DATABASE_URL", url.as_str()),
            ("CLERK_SYNC_LISTEN", listen.as_str()),
            ("CLERK_SYNC_FORWARD__URL", forward.as_str()),
            ("CLERK_SYNC_FORWARD__SIGNING_SECRET", signing.as_str()),
        ];
        let (code, stdout, stderr) = run(dir.path(), &["check-config"], &vars);
        assert_eq!(code, Some(0), "{forward}: stdout: {stdout}\nstderr: {stderr}");
    }
}

#[test]
fn serve_and_check_config_refuse_an_unknown_key_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(dir.path());
    let vars = [
        ("DATABASE_URL", url.as_str()),
        ("CLERK_SYNC_LISTEN", "127.0.0.1:0"),
        ("CLERK_SYNC_METRICS_LISTEN", "127.0.0.1:0"),
        ("CLERK_SYNC_WEBHOOKS__DELETEMODE", "hard"),
    ];
    for command in ["check-config", "serve"] {
        let mut child = Daemon(
            clerk_sync(dir.path(), &[command], &vars)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("cannot start clerk-sync"),
        );
        let code = child.wait_exit(Duration::from_secs(30));
        let mut stderr = String::new();
        if let Some(mut pipe) = child.0.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("read stderr");
        }
        assert_eq!(code, Some(78), "{command}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{command}: one line on stderr, got: {stderr}"
        );
        assert!(
            stderr.contains("CLERK_SYNC_WEBHOOKS__DELETEMODE"),
            "{command}: the error must name the variable: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_event_accepts_a_base_url_and_explains_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = sqlite_url(dir.path());
    let secret = secret();
    let vars = [
        ("DATABASE_URL", url.as_str()),
        ("CLERK_WEBHOOK_SIGNING_SECRET", secret.as_str()),
        ("CLERK_SYNC_LISTEN", listen.as_str()),
        ("CLERK_SYNC_METRICS_LISTEN", "127.0.0.1:0"),
    ];
    let child = clerk_sync(dir.path(), &["serve"], &vars)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start clerk-sync serve");
    let mut daemon = Daemon(child);
    wait_ready(port, &mut daemon).await;

    for base in [format!("http://127.0.0.1:{port}"), format!("http://127.0.0.1:{port}/")] {
        let (code, stdout, stderr) = run(dir.path(), &["send-test-event", "--url", base.as_str()], &vars);
        assert_eq!(code, Some(0), "{base}\nstdout: {stdout}\nstderr: {stderr}");
        assert!(stdout.contains("/webhooks/clerk"), "{stdout}");
        assert!(stdout.contains("applied"), "{stdout}");
    }

    let wrong_path = format!("http://127.0.0.1:{port}/hooks");
    let (code, stdout, stderr) = run(dir.path(), &["send-test-event", "--url", wrong_path.as_str()], &vars);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("404"), "{stdout}");
    assert!(
        stderr.contains("/webhooks/clerk"),
        "the error must say where the endpoint is: {stderr}"
    );

    let other_secret = self::secret();
    let mut wrong_secret = vars.to_vec();
    wrong_secret[1] = ("CLERK_WEBHOOK_SIGNING_SECRET", other_secret.as_str());
    let base = format!("http://127.0.0.1:{port}");
    let (code, stdout, stderr) = run(dir.path(), &["send-test-event", "--url", base.as_str()], &wrong_secret);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("401"), "{stdout}");
    assert!(
        stderr.contains("CLERK_WEBHOOK_SIGNING_SECRET"),
        "the error must point at the secret: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_event_sends_a_membership_and_then_its_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_daemon, port, url, owned) = serve_on_sqlite(dir.path()).await;
    let vars: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let base = format!("http://127.0.0.1:{port}");

    let args = [
        "send-test-event",
        "--type",
        "organizationMembership.created",
        "--url",
        base.as_str(),
    ];
    let (code, stdout, stderr) = run(dir.path(), &args, &vars);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    let answer = stdout
        .lines()
        .find(|l| l.starts_with("200 "))
        .unwrap_or_else(|| panic!("no 200 answer: {stdout}"));
    let answer: serde_json::Value =
        serde_json::from_str(&answer["200 ".len()..]).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(answer["outcome"], "applied", "{stdout}");

    let options = url.parse::<sqlx::sqlite::SqliteConnectOptions>().expect("sqlite URL");
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("open the SQLite file");
    let memberships: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT clerk_id, organization_clerk_id, user_clerk_id, created_via, deleted_at FROM organization_memberships",
    )
    .fetch_all(&pool)
    .await
    .expect("read memberships");
    assert_eq!(memberships.len(), 1, "{memberships:?}");
    let (membership, organization, user, via, deleted_at) = memberships[0].clone();
    assert!(membership.starts_with("orgmem_"), "{memberships:?}");
    assert!(organization.starts_with("org_"), "{memberships:?}");
    assert!(user.starts_with("user_"), "{memberships:?}");
    assert_eq!((via.as_str(), deleted_at), ("webhook", None));
    for id in [&membership, &organization, &user] {
        assert!(stdout.contains(id.as_str()), "stdout should name {id}: {stdout}");
    }
    assert!(
        stdout.contains("organization membership"),
        "stdout should say what the id names: {stdout}"
    );
    let organizations: Vec<(String,)> = sqlx::query_as("SELECT clerk_id FROM organizations")
        .fetch_all(&pool)
        .await
        .expect("read organizations");
    assert_eq!(
        organizations,
        [(organization.clone(),)],
        "the embedded organization is stored"
    );

    // The id it printed deletes the membership.
    let hint = format!("--type organizationMembership.deleted --id {membership}");
    assert!(
        stdout.contains(&hint),
        "stdout should say how to delete it ({hint}): {stdout}"
    );
    let args = [
        "send-test-event",
        "--type",
        "organizationMembership.deleted",
        "--id",
        membership.as_str(),
        "--url",
        base.as_str(),
    ];
    let (code, stdout, stderr) = run(dir.path(), &args, &vars);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("200") && stdout.contains("applied"), "{stdout}");
    let deleted: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT deleted_at FROM organization_memberships WHERE clerk_id = ?")
            .bind(&membership)
            .fetch_all(&pool)
            .await
            .expect("read the membership");
    assert!(
        matches!(deleted.as_slice(), [(Some(_),)]),
        "the membership should be tombstoned: {deleted:?}"
    );

    // An id of another kind is not sent as an organization id: a fresh one is, and stderr says so.
    let args = [
        "send-test-event",
        "--type",
        "organization.created",
        "--id",
        user.as_str(),
        "--url",
        base.as_str(),
    ];
    let (code, stdout, stderr) = run(dir.path(), &args, &vars);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("applied"), "{stdout}");
    assert!(
        stderr.contains(&user) && stderr.contains("organization id"),
        "stderr should explain: {stderr}"
    );
    let organizations: Vec<(String,)> = sqlx::query_as("SELECT clerk_id FROM organizations ORDER BY created_at")
        .fetch_all(&pool)
        .await
        .expect("read organizations");
    pool.close().await;
    assert_eq!(organizations.len(), 2, "{organizations:?}");
    assert!(
        organizations.iter().all(|(id,)| id.starts_with("org_")),
        "{organizations:?}"
    );
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
}
