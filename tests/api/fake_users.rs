//! A fake of Clerk's user list for the backfill tests: `GET /v1/users` as Clerk serves it (a bare array in
//! `created_at` order, `limit` ≤ 500, the `starting_after` cursor or an offset, the `user_id` filter),
//! `GET /v1/users/count`, `GET /v1/users/{id}`, and the organizations endpoints of an instance with none or
//! without the feature — with knobs for the ways a real list misbehaves.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::clerk::{now_ms, ClerkUser};
use crate::helpers::TestApp;

/// What the fake Clerk answers `GET /v1/organizations…`.
#[derive(Clone, Copy, Debug)]
pub enum Orgs {
    /// An instance with organizations turned on and none made.
    Empty,
    /// An instance without organizations (most B2C apps): Clerk's own answer, 403
    /// `organization_not_enabled_in_instance`.
    Off,
}

#[derive(Default)]
pub struct FakeList {
    users: Mutex<Vec<Value>>,
    /// List requests served (not counting `count` or single users).
    pub served: AtomicUsize,
    /// List requests (0-based) answered `fail` (with `Retry-After: 1` on 429).
    failing: Mutex<Vec<usize>>,
    fail: u16,
    /// Answer 400 to `starting_after`, as an instance without cursor paging would.
    pub refuse_cursor: AtomicBool,
    /// Answer the first page whatever the cursor, as a proxy dropping the parameter would.
    pub ignore_cursor: AtomicBool,
    /// How a `starting_after` naming no listed user is answered: `None` an empty page, `Some(status)` refused.
    pub unknown_cursor: Mutex<Option<u16>>,
    /// After list request n (0-based) is served, the user with this id is deleted.
    delete_after: Mutex<Vec<(usize, String)>>,
    /// List requests that carried a `user_id` filter.
    pub filtered: AtomicUsize,
    /// Users Clerk has (counted, answered by id and by the `user_id` filter) that its list pages skip, as a list
    /// shifted by a deletion or cut short would.
    pub hidden: Mutex<HashSet<String>>,
    /// How long list pages take to arrive.
    pub delay: Mutex<Option<Duration>>,
}

impl FakeList {
    /// Clerk works again.
    pub fn heal(&self) {
        self.failing.lock().expect("lock").clear();
    }

    /// Clerk answers the next list request, then fails every one after it until healed.
    pub fn fail_after_next(&self) {
        let next = self.served.load(Ordering::SeqCst);
        *self.failing.lock().expect("lock") = (next + 1..=next + 1000).collect();
    }

    /// Deletes `id` from Clerk once list request `n` (0-based) has been answered.
    pub fn delete_after_request(&self, n: usize, id: &str) {
        self.delete_after.lock().expect("lock").push((n, id.to_owned()));
    }

    /// Deletes `id` from Clerk now.
    pub fn delete(&self, id: &str) {
        self.users.lock().expect("lock").retain(|u| u["id"] != id);
    }

    /// Adds a user at the end of the list (created now).
    pub fn add(&self, user: &ClerkUser) {
        self.users.lock().expect("lock").push(user.data());
    }

    fn list(&self, request: &Request, query: &HashMap<String, Vec<String>>) -> ResponseTemplate {
        let one = |k: &str| query.get(k).and_then(|v| v.first()).map(String::as_str);
        assert_eq!(one("order_by"), Some("+created_at"), "{}", request.url);
        let limit: usize = one("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
        assert!(limit <= 500, "Clerk's pages hold at most 500");
        let users = self.users.lock().expect("lock");
        if let Some(ids) = query.get("user_id") {
            self.filtered.fetch_add(1, Ordering::SeqCst);
            assert!(ids.len() <= 100, "Clerk filters on at most 100 ids: {}", request.url);
            let page: Vec<&Value> = users
                .iter()
                .filter(|u| ids.iter().any(|id| u["id"] == id.as_str()))
                .take(limit)
                .collect();
            return ResponseTemplate::new(200).set_body_json(page);
        }
        let after = one("starting_after");
        if after.is_some() && self.refuse_cursor.load(Ordering::SeqCst) {
            return ResponseTemplate::new(400).set_body_json(json!({
                "errors": [{"code": "form_param_unknown", "message": "is unknown", "long_message": "starting_after is not a valid parameter"}]
            }));
        }
        let hidden = self.hidden.lock().expect("lock");
        let listed: Vec<&Value> = users
            .iter()
            .filter(|u| !u["id"].as_str().is_some_and(|id| hidden.contains(id)))
            .collect();
        let start = match (one("offset"), after) {
            (Some(offset), _) => offset.parse().unwrap_or(0),
            (None, Some(_)) if self.ignore_cursor.load(Ordering::SeqCst) => 0,
            // A hidden user is still Clerk's: a cursor naming it works.
            (None, Some(after)) => match users.iter().position(|u| u["id"] == after) {
                Some(i) => users[..=i]
                    .iter()
                    .filter(|u| !u["id"].as_str().is_some_and(|id| hidden.contains(id)))
                    .count(),
                None => match *self.unknown_cursor.lock().expect("lock") {
                    Some(status) => {
                        return ResponseTemplate::new(status).set_body_json(json!({
                            "errors": [{"code": "resource_not_found", "message": "not found"}]
                        }))
                    }
                    None => listed.len(),
                },
            },
            (None, None) => 0,
        };
        let page: Vec<&Value> = listed.into_iter().skip(start).take(limit).collect();
        let answer = ResponseTemplate::new(200).set_body_json(page);
        match *self.delay.lock().expect("lock") {
            Some(delay) => answer.set_delay(delay),
            None => answer,
        }
    }
}

impl Respond for FakeList {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut query: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in request.url.query_pairs() {
            query.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        let path = request.url.path();
        if path == "/v1/users/count" {
            let n = self.users.lock().expect("lock").len();
            return ResponseTemplate::new(200).set_body_json(json!({"object": "total_count", "total_count": n}));
        }
        if let Some(id) = path.strip_prefix("/v1/users/") {
            let users = self.users.lock().expect("lock");
            return match users.iter().find(|u| u["id"] == id) {
                Some(user) => ResponseTemplate::new(200).set_body_json(user),
                None => ResponseTemplate::new(404)
                    .set_body_json(json!({"errors": [{"code": "resource_not_found", "message": "not found"}]})),
            };
        }
        let n = self.served.fetch_add(1, Ordering::SeqCst);
        if self.failing.lock().expect("lock").contains(&n) {
            let mut answer = ResponseTemplate::new(self.fail);
            if self.fail == 429 {
                answer = answer.insert_header("retry-after", "1");
            }
            return answer;
        }
        let answer = self.list(request, &query);
        let gone: Vec<String> = {
            let mut pending = self.delete_after.lock().expect("lock");
            let due = pending
                .iter()
                .filter(|(at, _)| *at == n)
                .map(|(_, id)| id.clone())
                .collect();
            pending.retain(|(at, _)| *at != n);
            due
        };
        for id in gone {
            self.delete(&id);
        }
        answer
    }
}

struct Shared(Arc<FakeList>);

impl Respond for Shared {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.0.respond(request)
    }
}

/// Mounts Clerk's users (`users`, in `created_at` order) on the app's fake Clerk, with an empty organizations
/// list; list requests numbered in `failing` (0-based) are answered `fail`.
pub async fn mount(app: &TestApp, users: &[ClerkUser], failing: Vec<usize>, fail: u16) -> Arc<FakeList> {
    mount_on(app, users, failing, fail, Orgs::Empty).await
}

/// [`mount`], on an instance whose organizations answer as `orgs` says.
pub async fn mount_on(app: &TestApp, users: &[ClerkUser], failing: Vec<usize>, fail: u16, orgs: Orgs) -> Arc<FakeList> {
    let list = Arc::new(FakeList {
        users: Mutex::new(users.iter().map(ClerkUser::data).collect()),
        failing: Mutex::new(failing),
        fail,
        ..FakeList::default()
    });
    // Below the default priority: a test's own mock of one user wins.
    Mock::given(method("GET"))
        .and(path_regex("^/v1/users(/|$)"))
        .respond_with(Shared(list.clone()))
        .with_priority(10)
        .mount(app.clerk())
        .await;
    match orgs {
        Orgs::Empty => Mock::given(method("GET"))
            .and(path("/v1/organizations"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [], "total_count": 0}))),
        Orgs::Off => Mock::given(method("GET"))
            .and(path_regex("^/v1/organizations"))
            .respond_with(crate::clerk::organizations_off()),
    }
    .with_priority(10)
    .mount(app.clerk())
    .await;
    list
}

/// `n` users created an hour ago, a millisecond apart (Clerk's `created_at` order).
pub fn users(n: usize) -> Vec<ClerkUser> {
    let t = now_ms() - 3_600_000;
    (0..n).map(|i| ClerkUser::new(t + i as i64)).collect()
}

/// A backfill with `--prune`.
pub fn prune() -> clerk_sync::backfill::Options {
    clerk_sync::backfill::Options {
        prune: true,
        ..clerk_sync::backfill::Options::default()
    }
}
