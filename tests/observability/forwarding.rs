//! Forwarding survives `kill -9` of the replica that forwards: two `clerk-sync serve` processes on one Postgres
//! database, the first one forwarding (it holds the advisory lock) until it is killed mid-stream; the second
//! takes over from the saved cursor, and the application ends up with every change, in seq order, none lost.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use wiremock::MockServer;

use crate::common::{clerk_user, envelope, log_tail, new_secret, now_ms, svix_id, user_id};
use crate::daemon::{Daemon, PgDatabase};

/// How long the application takes to answer each change: slow enough that the kill lands mid-stream.
const ANSWER_DELAY: Duration = Duration::from_millis(100);

/// One request the application received: (headers, body).
type Seen = (HeaderMap, String);

async fn receive(State(seen): State<Arc<Mutex<Vec<Seen>>>>, headers: HeaderMap, body: String) -> StatusCode {
    seen.lock().expect("receiver lock").push((headers, body));
    tokio::time::sleep(ANSWER_DELAY).await;
    StatusCode::OK
}

/// The application's endpoint on loopback; records every request and answers 200. Stops when dropped.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind the receiver");
        let port = listener.local_addr().expect("receiver address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .route("/changes", axum::routing::post(receive))
            .with_state(seen.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("the receiver failed");
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}/changes"),
            seen,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("receiver lock").clone()
    }

    /// The seq of every request so far (`webhook-id: chg_<seq>`), in arrival order.
    fn seqs(&self) -> Vec<i64> {
        self.seen().iter().map(|(headers, _)| seq_of(headers)).collect()
    }

    async fn wait_for(&self, what: &str, within: Duration, done: impl Fn(&[i64]) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let seqs = self.seqs();
            if done(&seqs) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; requests so far (by seq): {seqs:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn seq_of(headers: &HeaderMap) -> i64 {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("a forwarded request without webhook-id: {headers:?}"));
    id.strip_prefix("chg_")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("webhook-id {id:?} is not chg_<seq>"))
}

/// Posts `user.created` for a fresh user to `daemon` and expects it applied.
async fn create_user(daemon: &Daemon) {
    let body = envelope("user.created", clerk_user(&user_id(), now_ms() - 60_000));
    let (status, text) = daemon.post_webhook(&body, &svix_id()).await;
    assert!(
        status.is_success() && text.contains("applied"),
        "user.created webhook: {status} {text}"
    );
}

/// The seqs of the feed, in order.
async fn feed_seqs(pool: &sqlx::PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT seq FROM clerk_sync_changes ORDER BY seq")
        .fetch_all(pool)
        .await
        .expect("cannot read clerk_sync_changes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_forwarding_replica_loses_no_change() {
    let database = PgDatabase::create().await;
    let clerk = MockServer::start().await;
    let receiver = Receiver::start().await;
    let secret = new_secret();
    let env = [
        ("CLERK_SYNC_FORWARD__URL", receiver.url.as_str()),
        ("CLERK_SYNC_FORWARD__SIGNING_SECRET", secret.as_str()),
        ("CLERK_SYNC_FORWARD__TIMEOUT_MS", "2000"),
        ("CLERK_SYNC_FORWARD__MAX_BACKOFF_SECS", "1"),
    ];

    // Process 1 alone: it takes the forwarding lock and forwards the first change.
    let first = Daemon::start(&database.url, &clerk.uri(), &env).await;
    create_user(&first).await;
    receiver
        .wait_for("process 1 forwards the first change", Duration::from_secs(20), |s| {
            s.contains(&1)
        })
        .await;

    // Process 2 joins: it waits for the lock. A batch goes through both; process 1 forwards it, slowly.
    let mut second = Daemon::start(&database.url, &clerk.uri(), &env).await;
    for i in 0..24 {
        create_user(if i % 2 == 0 { &first } else { &second }).await;
    }
    receiver
        .wait_for("some of the batch forwarded", Duration::from_secs(20), |s| s.len() >= 6)
        .await;

    // kill -9 process 1 mid-stream.
    let pid = first.process.id();
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("cannot run `kill`");
    assert!(killed.success(), "`kill -KILL {pid}` failed: {killed}");
    let at_kill = receiver.seqs();
    let first_log = log_tail(&first.process.log, 4000);
    drop(first); // reaps the process

    // More changes, through process 2 only.
    for _ in 0..10 {
        create_user(&second).await;
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&database.url)
        .await
        .expect("cannot connect to the test database");
    let feed = feed_seqs(&pool).await;
    let n = *feed.last().expect("an empty feed");
    assert_eq!(feed, (1..=n).collect::<Vec<_>>(), "the feed has gaps");
    assert_eq!(n, 35, "1 + 24 + 10 user.created webhooks make 35 changes");

    receiver
        .wait_for(
            &format!("every change 1..={n} forwarded after the kill"),
            Duration::from_secs(30),
            |s| (1..=n).all(|seq| s.contains(&seq)),
        )
        .await;
    // Anything still in flight would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    second.process.assert_running();

    let seen = receiver.seen();
    let seqs: Vec<i64> = seen.iter().map(|(headers, _)| seq_of(headers)).collect();
    let context = format!(
        "requests by seq: {seqs:?}\nat the kill: {at_kill:?}\nprocess 1's log:\n{first_log}\nprocess 2's log:\n{}",
        log_tail(&second.process.log, 4000)
    );
    assert!(
        seqs.windows(2).all(|w| w[0] <= w[1]),
        "a change was forwarded after a later one\n{context}"
    );
    assert!(
        seqs.iter().all(|&seq| (1..=n).contains(&seq)),
        "a forwarded seq is not in the feed\n{context}"
    );
    // At least once: only the change in flight at the kill may come twice (process 2 resumes at the cursor).
    let repeated: Vec<i64> = (1..=n)
        .filter(|seq| seqs.iter().filter(|&s| s == seq).count() > 1)
        .collect();
    assert!(
        repeated.len() <= 1 && repeated.iter().all(|seq| at_kill.contains(seq)),
        "changes forwarded more than once: {repeated:?} (only the one in flight at the kill may be)\n{context}"
    );
    assert!(
        seqs.len() > at_kill.len() && *at_kill.last().unwrap() < n,
        "process 2 forwarded nothing after the kill\n{context}"
    );

    // Every request, before and after the kill, is signed with forward.signing_secret and shaped as documented.
    let verifier = svix::webhooks::Webhook::new(&secret).expect("secret");
    for (headers, body) in &seen {
        let seq = seq_of(headers);
        verifier
            .verify(body.as_bytes(), headers)
            .unwrap_or_else(|e| panic!("seq {seq} does not verify: {e:?}\n{context}"));
        let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        assert_eq!(json["change"]["seq"], seq, "seq {seq}: body {json}");
        assert_eq!(json["type"], "user.created", "seq {seq}: body {json}");
        assert_eq!(
            json["data"]["clerk_id"], json["change"]["clerk_id"],
            "seq {seq}: body {json}"
        );
    }

    // Process 2 counts its deliveries, and its lag returns to 0 once it has caught up.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = second.metrics().await;
        let delivered = metrics
            .lines()
            .find(|l| l.starts_with("clerk_sync_forward_deliveries_total{") && l.contains("outcome=\"delivered\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        let lag = metrics
            .lines()
            .find(|l| l.starts_with("clerk_sync_forward_lag_seconds"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        if delivered >= (n - at_kill.last().unwrap()) as f64 && lag == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "process 2's metrics: delivered {delivered}, lag {lag:?}\n{context}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let cursor: i64 = sqlx::query_scalar("SELECT seq FROM clerk_sync_forward WHERE name = 'forward'")
        .fetch_one(&pool)
        .await
        .expect("the forwarding cursor");
    assert_eq!(cursor, n, "the saved cursor\n{context}");
    pool.close().await;
    second.stop().await;
}
