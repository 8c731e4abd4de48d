//! The application forwarding tests deliver to: a small axum server on loopback that records every request to
//! its endpoint and answers what the test scripted (a status, a redirect, or a hang past the daemon's
//! `forward.timeout_ms`), 200 otherwise. Requests to any other path are recorded apart, as strays.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::helpers::TestApp;

/// What the application answers one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Status(u16),
    /// This status (3xx) with `Location:` this path of the same server.
    Redirect(u16, &'static str),
    /// 200, but only after this long: past the daemon's timeout, so not an acknowledgement.
    Hang(Duration),
}

/// One request the application received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: String,
    pub answer: Answer,
}

impl Seen {
    /// Whether the daemon saw this answer as an acknowledgement (2xx in time).
    pub fn acked(&self) -> bool {
        matches!(self.answer, Answer::Status(s) if (200..300).contains(&s))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("a forwarded request without {name}: {:?}", self.headers))
            .to_str()
            .expect("a header that is not ASCII")
    }

    /// The seq named by `webhook-id` (`chg_<seq>`).
    pub fn seq(&self) -> i64 {
        let id = self.header("webhook-id");
        id.strip_prefix("chg_")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("webhook-id {id:?} is not chg_<seq>"))
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("a forwarded body that is not JSON ({e}): {}", self.body))
    }
}

#[derive(Default)]
pub struct Inbox {
    pub seen: Vec<Seen>,
    pub script: VecDeque<Answer>,
    /// Requests to any other path of the application (where a redirect would send a change): method and path.
    pub strays: Vec<String>,
}

/// The application's endpoint: `url` takes the forwarded changes. Stops when dropped.
pub struct Receiver {
    pub url: String,
    pub inbox: Arc<Mutex<Inbox>>,
    task: tokio::task::JoinHandle<()>,
}

async fn receive(State(inbox): State<Arc<Mutex<Inbox>>>, headers: HeaderMap, body: String) -> Response {
    let answer = {
        let mut inbox = inbox.lock().expect("inbox lock");
        let answer = inbox.script.pop_front().unwrap_or(Answer::Status(200));
        inbox.seen.push(Seen {
            at: Instant::now(),
            headers,
            body,
            answer,
        });
        answer
    };
    match answer {
        Answer::Status(code) => StatusCode::from_u16(code).expect("a scripted status").into_response(),
        Answer::Redirect(code, to) => {
            let status = StatusCode::from_u16(code).expect("a scripted status");
            (status, [("location", to)]).into_response()
        }
        Answer::Hang(delay) => {
            tokio::time::sleep(delay).await;
            StatusCode::OK.into_response()
        }
    }
}

/// Any other path: recorded, and answered 200 (so a followed redirect would look like an acknowledgement).
async fn stray(State(inbox): State<Arc<Mutex<Inbox>>>, method: Method, uri: Uri) -> StatusCode {
    inbox.lock().expect("inbox lock").strays.push(format!("{method} {uri}"));
    StatusCode::OK
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind the receiver");
        let port = listener.local_addr().expect("receiver address").port();
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let router = axum::Router::new()
            .route("/hooks/clerk-sync", axum::routing::post(receive))
            .fallback(stray)
            .with_state(inbox.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("the receiver failed");
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}/hooks/clerk-sync"),
            inbox,
            task,
        }
    }

    /// The next requests get these answers, in order (then 200 again).
    pub fn script(&self, answers: &[Answer]) {
        self.inbox
            .lock()
            .expect("inbox lock")
            .script
            .extend(answers.iter().copied());
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.inbox.lock().expect("inbox lock").seen.clone()
    }

    /// Requests to any other path so far (`METHOD /path`).
    pub fn strays(&self) -> Vec<String> {
        self.inbox.lock().expect("inbox lock").strays.clone()
    }

    /// The seqs acknowledged so far, in arrival order.
    pub fn acked(&self) -> Vec<i64> {
        self.seen().iter().filter(|s| s.acked()).map(Seen::seq).collect()
    }

    /// Waits until every seq up to `head` is acknowledged (and nothing above it was sent).
    pub async fn wait_acked_through(&self, head: i64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.acked().last().is_some_and(|&last| last >= head) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "changes up to seq {head} were not all acknowledged within {within:?}; acknowledged: {:?}; \
                 requests: {:?}",
                self.acked(),
                self.seen().iter().map(|s| (s.seq(), s.answer)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwarding to `receiver`, signed with `secret`; quick timeouts and backoff so retries fit in a test.
pub fn forward_env<'a>(receiver: &'a Receiver, secret: &'a str) -> [(&'static str, &'a str); 4] {
    [
        ("CLERK_SYNC_FORWARD__URL", receiver.url.as_str()),
        ("CLERK_SYNC_FORWARD__SIGNING_SECRET", secret),
        ("CLERK_SYNC_FORWARD__TIMEOUT_MS", "1000"),
        ("CLERK_SYNC_FORWARD__MAX_BACKOFF_SECS", "1"),
    ]
}

/// The highest seq of the feed (0 when empty).
pub async fn feed_head(app: &TestApp) -> i64 {
    app.db
        .int("SELECT CAST(coalesce(max(seq), 0) AS BIGINT) FROM clerk_sync_changes")
        .await
}

/// The cursor forwarding saved (0 before the first acknowledgement).
pub async fn saved_cursor(app: &TestApp) -> i64 {
    app.db
        .int("SELECT CAST(coalesce((SELECT seq FROM clerk_sync_forward WHERE name = 'forward'), 0) AS BIGINT)")
        .await
}

pub async fn wait_cursor(app: &TestApp, seq: i64, within: Duration) {
    let deadline = Instant::now() + within;
    while saved_cursor(app).await < seq {
        assert!(
            Instant::now() < deadline,
            "the forwarding cursor is at {} after {within:?}, expected {seq}",
            saved_cursor(app).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
