//! Forwarding's promises under adversity: a redirect is never an acknowledgement (nor followed), a forwarder
//! that lost its lock stops before its next attempt (so the application never gets a run of old changes again),
//! and the saved cursor never moves back.

use std::time::{Duration, Instant};

use crate::clerk::{now_ms, svix_id, ClerkUser};
use crate::forward_receiver::{forward_env, saved_cursor, wait_cursor, Answer, Receiver};
use crate::helpers::{new_secret, spawn_app, spawn_app_with_clerk, Backend};

/// Waits until `done` holds, failing with `what` after `within`.
async fn wait_until(what: &str, within: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

both_backends!(
    a_redirect_is_a_failed_attempt_and_never_followed,
    |backend| async move {
        let receiver = Receiver::start().await;
        let secret = new_secret();
        let app = spawn_app_with_clerk(backend, &forward_env(&receiver, &secret)).await;
        // Every kind of redirect, each to another path of the application (which answers 200 to anything).
        let redirects = [
            Answer::Redirect(302, "/elsewhere"),
            Answer::Redirect(307, "/elsewhere"),
            Answer::Redirect(308, "/elsewhere"),
            Answer::Redirect(303, "/elsewhere"),
        ];
        receiver.script(&redirects);
        app.expect_outcome(&ClerkUser::new(now_ms() - 60_000).created(), &svix_id(), "applied")
            .await;

        // A followed redirect would end up on the other path, and count as delivered.
        wait_until("a second attempt at the change", Duration::from_secs(20), || {
            receiver.seen().len() >= 2 || !receiver.strays().is_empty()
        })
        .await;
        assert_eq!(receiver.strays(), Vec::<String>::new(), "a redirect was followed");
        assert_eq!(saved_cursor(&app).await, 0, "a redirect counted as an acknowledgement");

        // Once the application answers 2xx, the change arrives, there, once.
        receiver.wait_acked_through(1, Duration::from_secs(30)).await;
        wait_cursor(&app, 1, Duration::from_secs(10)).await;
        let answers: Vec<(i64, Answer)> = receiver.seen().iter().map(|s| (s.seq(), s.answer)).collect();
        let mut expected: Vec<(i64, Answer)> = redirects.iter().map(|&a| (1, a)).collect();
        expected.push((1, Answer::Status(200)));
        assert_eq!(answers, expected, "the attempts at change 1");
        assert_eq!(receiver.strays(), Vec::<String>::new(), "a redirect was followed");
    }
);

/// The forwarding lock as `pg_locks` shows it: the bigint key `hashtextextended('forward', 1)`, split in two.
const FORWARD_LOCK: &str = "FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
     AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
     AND classid::bigint = (hashtextextended('forward', 1) >> 32) & 4294967295 \
     AND objid::bigint = hashtextextended('forward', 1) & 4294967295";

/// The lock's session ends (as on a network failure) while its forwarder retries a change the application
/// refuses; another forwarder takes over. Once the application recovers, it must not get the changes twice,
/// interleaved: after an acknowledgement, nothing older comes again but at most the one change in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarder_that_lost_its_lock_stops_before_its_next_attempt() {
    let receiver = Receiver::start().await;
    let secret = new_secret();
    let app = spawn_app_with_clerk(Backend::Postgres, &forward_env(&receiver, &secret)).await;
    let _replica = app.spawn_replica().await;
    let t = now_ms() - 600_000;
    for i in 0..5 {
        app.expect_outcome(&ClerkUser::new(t + i).created(), &svix_id(), "applied")
            .await;
    }
    receiver.wait_acked_through(5, Duration::from_secs(30)).await;
    wait_cursor(&app, 5, Duration::from_secs(10)).await;

    // The application goes down; ten more changes; the forwarder retries the first of them.
    receiver.script(&[Answer::Status(503); 10_000]);
    for i in 5..15 {
        app.expect_outcome(&ClerkUser::new(t + i).created(), &svix_id(), "applied")
            .await;
    }
    wait_until("two attempts at change 6", Duration::from_secs(20), || {
        receiver.seen().iter().filter(|s| s.seq() == 6).count() >= 2
    })
    .await;
    let killed = app
        .db
        .int(&format!(
            "SELECT CAST(count(*) AS BIGINT) FROM (SELECT pg_terminate_backend(pid) AS killed {FORWARD_LOCK}) t \
             WHERE killed"
        ))
        .await;
    assert_eq!(killed, 1, "the forwarding lock's session");
    // Long enough for a forwarder to take the lock again (each replica tries every second) and retry.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        app.db
            .int(&format!("SELECT CAST(count(*) AS BIGINT) {FORWARD_LOCK}"))
            .await,
        1,
        "a forwarder holds the lock again"
    );

    receiver.inbox.lock().expect("inbox lock").script.clear();
    receiver.wait_acked_through(15, Duration::from_secs(30)).await;
    wait_cursor(&app, 15, Duration::from_secs(10)).await;
    // Anything a second forwarder still had to send would come now.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let seen = receiver.seen();
    let requests: Vec<(i64, Answer)> = seen.iter().map(|s| (s.seq(), s.answer)).collect();
    let mut acked_through = 0;
    let mut stale = Vec::new();
    for s in &seen {
        if s.seq() <= acked_through {
            stale.push(s.seq());
        }
        if s.acked() {
            acked_through = acked_through.max(s.seq());
        }
    }
    assert!(
        stale.len() <= 1,
        "changes sent again after a later or the same one was acknowledged: {stale:?}; requests: {requests:?}"
    );
    for seq in 1..=15 {
        assert!(
            seen.iter().any(|s| s.acked() && s.seq() == seq),
            "change {seq} was never acknowledged; requests: {requests:?}"
        );
    }
    assert_eq!(saved_cursor(&app).await, 15);
}

both_backends!(the_forwarding_cursor_never_moves_back, |backend| async move {
    let app = spawn_app(backend).await;
    let db = app.connect_db().await;
    assert!(db.save_forward_cursor("forward", 7).await.expect("save 7"));
    assert_eq!(saved_cursor(&app).await, 7);
    // A second forwarder that is behind (it lost its lock and does not know yet) saves an older seq: refused, and
    // told so, so that it stops.
    assert!(
        !db.save_forward_cursor("forward", 3).await.expect("save 3"),
        "saving a cursor behind the saved one reports success"
    );
    assert_eq!(saved_cursor(&app).await, 7, "the cursor moved back");
    // The same seq again (the change in flight, repeated by the forwarder that took over) is no reason to stop.
    assert!(db.save_forward_cursor("forward", 7).await.expect("save 7 again"));
    assert!(db.save_forward_cursor("forward", 8).await.expect("save 8"));
    assert_eq!(saved_cursor(&app).await, 8);
    db.close().await;
});
