//! `clerk-sync backfill` of organizations and their memberships against a fake Clerk, on both backends.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use clerk_sync::backfill::{Only, Options, Summary, Walked};
use clerk_sync::store::Kind;
use serde_json::json;
use wiremock::{Request, Respond, ResponseTemplate};

use crate::clerk::{now_ms, svix_id};
use crate::clerk_orgs::{ClerkMembership, ClerkOrganization};
use crate::helpers::{spawn_app_with_clerk, TestApp};

/// Clerk's organizations and memberships as `GET /v1/organizations` (offset pages of `{data, total_count}`),
/// `GET /v1/organizations/{id}` and `GET /v1/organizations/{id}/memberships`.
#[derive(Default)]
pub struct FakeOrgs {
    /// Listed, in `created_at` order.
    listed: Vec<ClerkOrganization>,
    /// Clerk has these (a GET answers them) though its list skips them, as a list shifted by a deletion would.
    unlisted: Vec<ClerkOrganization>,
    members: HashMap<String, Vec<ClerkMembership>>,
    /// Memberships the next list of their organization skips (once), as a shifted list would.
    hidden_once: Mutex<HashSet<String>>,
    /// Requests answered 500: those whose `path?offset=n` starts with one of these.
    failing: Mutex<Vec<String>>,
    /// `path?offset=n` of every request served.
    served: Mutex<Vec<String>>,
}

impl FakeOrgs {
    pub fn new(listed: Vec<ClerkOrganization>, members: Vec<ClerkMembership>) -> FakeOrgs {
        let mut by_organization: HashMap<String, Vec<ClerkMembership>> = HashMap::new();
        for m in members {
            by_organization.entry(m.organization.id.clone()).or_default().push(m);
        }
        FakeOrgs {
            listed,
            members: by_organization,
            ..FakeOrgs::default()
        }
    }

    fn fail(&self, prefix: &str) {
        self.failing.lock().expect("lock").push(prefix.to_owned());
    }

    fn heal(&self) {
        self.failing.lock().expect("lock").clear();
    }

    /// Requests served whose `path?offset=n` starts with `prefix`.
    fn served(&self, prefix: &str) -> usize {
        self.served
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.starts_with(prefix))
            .count()
    }

    fn organization(&self, id: &str) -> Option<&ClerkOrganization> {
        self.listed.iter().chain(&self.unlisted).find(|o| o.id == id)
    }
}

/// `/v1/organizations/{id}/memberships`, of organization `id`.
fn members_path(id: &str) -> String {
    format!("/v1/organizations/{id}/memberships")
}

impl Respond for FakeOrgs {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let query: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
        let offset: usize = query.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
        let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
        assert!(limit <= 500, "Clerk's pages hold at most 500: {}", request.url);
        let path = request.url.path();
        let key = format!("{path}?offset={offset}");
        self.served.lock().expect("lock").push(key.clone());
        if self
            .failing
            .lock()
            .expect("lock")
            .iter()
            .any(|f| key.starts_with(f.as_str()))
        {
            return ResponseTemplate::new(500);
        }
        let not_found = ResponseTemplate::new(404).set_body_json(json!({
            "errors": [{"code": "resource_not_found", "message": "not found", "long_message": "Not found"}]
        }));
        let rest = path.trim_start_matches("/v1/organizations");
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            [] => {
                assert_eq!(
                    query.get("order_by").map(String::as_str),
                    Some("+created_at"),
                    "{}",
                    request.url
                );
                assert_eq!(query.get("include_members_count").map(String::as_str), Some("true"));
                let data: Vec<_> = self
                    .listed
                    .iter()
                    .skip(offset)
                    .take(limit)
                    .map(|o| {
                        let mut data = o.data();
                        data["members_count"] = json!(self.members.get(&o.id).map_or(0, Vec::len));
                        data
                    })
                    .collect();
                ResponseTemplate::new(200).set_body_json(json!({"data": data, "total_count": self.listed.len()}))
            }
            [id] => match self.organization(id) {
                Some(o) => ResponseTemplate::new(200).set_body_json(o.data()),
                None => not_found,
            },
            [id, "memberships"] => {
                if self.organization(id).is_none() {
                    return not_found;
                }
                assert_eq!(
                    query.get("order_by").map(String::as_str),
                    Some("+created_at"),
                    "{}",
                    request.url
                );
                let mut hidden = self.hidden_once.lock().expect("lock");
                let all: Vec<&ClerkMembership> = self.members.get(*id).map(|m| m.iter().collect()).unwrap_or_default();
                let shown: Vec<&ClerkMembership> = all.iter().copied().filter(|m| !hidden.remove(&m.id)).collect();
                let data: Vec<_> = shown.iter().skip(offset).take(limit).map(|m| m.data()).collect();
                ResponseTemplate::new(200).set_body_json(json!({"data": data, "total_count": all.len()}))
            }
            _ => ResponseTemplate::new(400),
        }
    }
}

struct Shared(Arc<FakeOrgs>);

impl Respond for Shared {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.0.respond(request)
    }
}

/// Mounts `fake` and a user list with no one in it.
pub async fn mount(app: &TestApp, fake: FakeOrgs) -> Arc<FakeOrgs> {
    use wiremock::matchers::{method, path, path_regex};
    let fake = Arc::new(fake);
    wiremock::Mock::given(method("GET"))
        .and(path_regex("^/v1/organizations"))
        .respond_with(Shared(fake.clone()))
        .mount(app.clerk())
        .await;
    wiremock::Mock::given(method("GET"))
        .and(path("/v1/users/count"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"object": "total_count", "total_count": 0})))
        .mount(app.clerk())
        .await;
    wiremock::Mock::given(method("GET"))
        .and(path("/v1/users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(app.clerk())
        .await;
    fake
}

/// `n` organizations, in `created_at` order.
pub fn organizations(n: usize) -> Vec<ClerkOrganization> {
    let t = now_ms() - 3_600_000;
    (0..n).map(|i| ClerkOrganization::new(t + i as i64)).collect()
}

/// `n` members of `organization`, in `created_at` order.
pub fn members(organization: &ClerkOrganization, n: usize) -> Vec<ClerkMembership> {
    let t = now_ms() - 1_800_000;
    (0..n)
        .map(|i| ClerkMembership::new(organization, t + i as i64))
        .collect()
}

fn only(kinds: &[Kind]) -> Options {
    Options {
        only: Only::of(kinds),
        ..Options::default()
    }
}

const PRUNE: Options = Options {
    prune: true,
    dry_run: false,
    restart: false,
    only: Only::ALL,
    max_prune: None,
};

async fn run(app: &TestApp, options: Options) -> Summary {
    app.backfill(options).await.expect("backfill succeeds")
}

/// The first column of each row, sorted here (Postgres collations sort ids otherwise).
pub async fn rows(app: &TestApp, sql: &str) -> Vec<String> {
    let mut rows: Vec<String> = app.db.strings(sql).await.into_iter().flatten().collect();
    rows.sort();
    rows
}

/// Every `organizations` row as `clerk_id|name|created_via|live or deleted`.
async fn organization_rows(app: &TestApp) -> Vec<String> {
    rows(
        app,
        "SELECT clerk_id || '|' || COALESCE(name, '') || '|' || created_via || '|' || \
         CASE WHEN deleted_at IS NULL THEN 'live' ELSE 'deleted' END FROM organizations",
    )
    .await
}

fn organization_row(o: &ClerkOrganization, via: &str, state: &str) -> String {
    format!("{}|{}|{via}|{state}", o.id, o.name)
}

/// Every `organization_memberships` row as `clerk_id|organization|user|role|created_via|live or deleted`.
pub async fn membership_rows(app: &TestApp) -> Vec<String> {
    rows(
        app,
        "SELECT clerk_id || '|' || organization_clerk_id || '|' || user_clerk_id || '|' || COALESCE(role, '') || \
         '|' || created_via || '|' || CASE WHEN deleted_at IS NULL THEN 'live' ELSE 'deleted' END \
         FROM organization_memberships",
    )
    .await
}

pub fn membership_row(m: &ClerkMembership, via: &str, state: &str) -> String {
    format!("{}|{}|{}|{}|{via}|{state}", m.id, m.organization.id, m.user_id, m.role)
}

pub fn sorted(mut rows: Vec<String>) -> Vec<String> {
    rows.sort();
    rows
}

both_backends!(organizations_and_memberships_are_backfilled, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    // Two pages of organizations; the first has two pages of members, the second an admin and a member.
    let orgs = organizations(520);
    let mut all = members(&orgs[0], 501);
    let mut pair = members(&orgs[1], 2);
    pair[0].role = "org:admin".into();
    all.extend(pair.iter().cloned());
    let fake = mount(&app, FakeOrgs::new(orgs.clone(), all.clone())).await;

    let summary = run(&app, Options::default()).await;
    assert_eq!(summary.users.walked, Walked::Fresh, "users are walked too: {summary:?}");
    let o = &summary.organizations;
    assert_eq!(
        (o.walked, o.scanned, o.created, o.failed),
        (Walked::Fresh, 520, 520, 0),
        "{summary:?}"
    );
    let m = &summary.memberships;
    assert_eq!((m.scanned, m.created, m.failed), (503, 503, 0), "{summary:?}");
    assert_eq!(
        organization_rows(&app).await,
        sorted(orgs.iter().map(|o| organization_row(o, "backfill", "live")).collect())
    );
    assert_eq!(
        membership_rows(&app).await,
        sorted(all.iter().map(|m| membership_row(m, "backfill", "live")).collect())
    );
    assert_eq!(app.db.count_all_users().await, 0, "a membership makes no users row");
    let count = format!(
        "SELECT CAST(members_count AS TEXT) FROM organizations WHERE clerk_id = '{}'",
        orgs[1].id
    );
    assert_eq!(app.db.string(&count).await.as_deref(), Some("2"));
    let data = format!(
        "SELECT CAST(data AS TEXT) FROM organization_memberships WHERE clerk_id = '{}'",
        pair[0].id
    );
    let data: serde_json::Value = serde_json::from_str(&app.db.string(&data).await.expect("data")).expect("JSON");
    assert_eq!(data, pair[0].data(), "data keeps the whole membership");
    assert_eq!(fake.served(&members_path(&orgs[0].id)), 2, "two pages of members");

    // Users, then organizations, then memberships.
    let order: Vec<String> = app
        .clerk()
        .received_requests()
        .await
        .expect("recorded")
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    let first = |p: &dyn Fn(&str) -> bool| order.iter().position(|s| p(s)).expect("requested");
    let users = first(&|s| s == "/v1/users");
    let organizations = first(&|s| s == "/v1/organizations");
    let memberships = first(&|s| s.ends_with("/memberships"));
    assert!(users < organizations && organizations < memberships, "{order:?}");

    // A second run changes nothing.
    let again = run(&app, Options::default()).await;
    assert_eq!(
        (again.organizations.created, again.organizations.unchanged),
        (0, 520),
        "{again:?}"
    );
    assert_eq!(
        (again.memberships.created, again.memberships.unchanged),
        (0, 503),
        "{again:?}"
    );
});

both_backends!(only_organizations_leaves_memberships_alone, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let orgs = organizations(3);
    let all: Vec<ClerkMembership> = orgs.iter().flat_map(|o| members(o, 2)).collect();
    let fake = mount(&app, FakeOrgs::new(orgs.clone(), all.clone())).await;

    let summary = run(&app, only(&[Kind::Organization])).await;
    assert_eq!(summary.organizations.created, 3, "{summary:?}");
    assert_eq!(
        (summary.users.walked, summary.memberships.walked),
        (Walked::No, Walked::No)
    );
    assert_eq!(organization_rows(&app).await.len(), 3);
    assert!(membership_rows(&app).await.is_empty());
    assert_eq!(app.clerk_requests("/v1/users").await, 0);
    assert_eq!(fake.served("/v1/organizations/"), 0, "no memberships read");

    // --only memberships walks the stored organizations, without listing them from Clerk again.
    let summary = run(&app, only(&[Kind::Membership])).await;
    assert_eq!(
        (summary.memberships.created, summary.organizations.walked),
        (6, Walked::No)
    );
    assert_eq!(
        membership_rows(&app).await,
        sorted(all.iter().map(|m| membership_row(m, "backfill", "live")).collect())
    );
    assert_eq!(fake.served("/v1/organizations?"), 1);
});

both_backends!(an_interrupted_organizations_walk_resumes, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[("CLERK_SYNC_CLERK__RETRY_BUDGET_MS", "500")]).await;
    let gone = ClerkOrganization::new(now_ms() - 7_200_000);
    app.expect_outcome(&gone.created(), &svix_id(), "applied").await;
    let orgs = organizations(1100);
    let fake = mount(&app, FakeOrgs::new(orgs.clone(), vec![])).await;
    fake.fail("/v1/organizations?offset=500");
    let prune_orgs = Options {
        only: Only::of(&[Kind::Organization]),
        ..PRUNE
    };
    assert!(
        app.backfill(prune_orgs).await.is_err(),
        "a run that cannot read the list fails"
    );
    assert_eq!(organization_rows(&app).await.len(), 501, "the first page was committed");
    assert!(
        organization_rows(&app)
            .await
            .contains(&organization_row(&gone, "webhook", "live")),
        "a partial read prunes nothing"
    );

    fake.heal();
    let summary = run(&app, prune_orgs).await;
    let o = &summary.organizations;
    assert_eq!(
        (o.walked, o.scanned, o.created, o.pruned),
        (Walked::Resumed, 1100, 600, 1),
        "{summary:?}"
    );
    assert_eq!(
        fake.served("/v1/organizations?offset=0"),
        1,
        "the first page is not read again"
    );
    let mut expected: Vec<String> = orgs.iter().map(|o| organization_row(o, "backfill", "live")).collect();
    expected.push(organization_row(&gone, "webhook", "deleted"));
    assert_eq!(
        organization_rows(&app).await,
        sorted(expected),
        "every organization once"
    );
    assert!(app.db.tombstone(&gone.id).await.is_some());
    assert_eq!(
        app.db.int("SELECT count(*) FROM clerk_sync_backfill").await,
        0,
        "the run is complete"
    );
});

both_backends!(an_interrupted_memberships_walk_resumes, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[("CLERK_SYNC_CLERK__RETRY_BUDGET_MS", "500")]).await;
    let orgs = organizations(5);
    let all: Vec<ClerkMembership> = orgs.iter().flat_map(|o| members(o, 3)).collect();
    let fake = mount(&app, FakeOrgs::new(orgs.clone(), all.clone())).await;
    run(&app, only(&[Kind::Organization])).await;
    // The walk takes organizations in the database's id order: the third one fails.
    let walk_order = app
        .db
        .strings("SELECT clerk_id FROM organizations ORDER BY clerk_id")
        .await;
    let walk_order: Vec<String> = walk_order.into_iter().flatten().collect();
    fake.fail(&members_path(&walk_order[2]));

    assert!(app.backfill(Options::default()).await.is_err());
    assert_eq!(
        membership_rows(&app).await.len(),
        6,
        "the first two organizations' memberships"
    );

    fake.heal();
    let summary = run(&app, Options::default()).await;
    assert_eq!(summary.users.walked, Walked::Earlier, "{summary:?}");
    assert_eq!(summary.organizations.walked, Walked::Earlier, "{summary:?}");
    let m = &summary.memberships;
    assert_eq!(
        (m.walked, m.scanned, m.created),
        (Walked::Resumed, 15, 9),
        "{summary:?}"
    );
    for done in &walk_order[..2] {
        assert_eq!(fake.served(&members_path(done)), 1, "{done} is not read again");
    }
    assert_eq!(
        membership_rows(&app).await,
        sorted(all.iter().map(|m| membership_row(m, "backfill", "live")).collect())
    );
});

both_backends!(prune_tombstones_what_clerk_confirms_gone, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let t = now_ms() - 7_200_000;
    // In the database only: gone from Clerk, with a member.
    let gone = ClerkOrganization::new(t);
    let gone_member = ClerkMembership::new(&gone, t);
    // Skipped by Clerk's list during the walk, though Clerk has it.
    let missed = ClerkOrganization::new(t);
    let orgs = organizations(2);
    let listed = members(&orgs[0], 2);
    // Removed from a listed organization in Clerk, and a member the walk's page skipped.
    let removed = ClerkMembership::new(&orgs[0], t);
    let skipped = ClerkMembership::new(&orgs[1], t);
    // (A membership event brings its organization's copy: the listed organizations are created by webhook.)
    for event in [
        gone.created(),
        missed.created(),
        gone_member.created(),
        removed.created(),
        skipped.created(),
    ] {
        app.expect_outcome(&event, &svix_id(), "applied").await;
    }
    let mut fake = FakeOrgs::new(orgs.clone(), [listed.clone(), vec![skipped.clone()]].concat());
    fake.unlisted.push(missed.clone());
    fake.hidden_once.lock().expect("lock").insert(skipped.id.clone());
    mount(&app, fake).await;

    // Two of four organizations are candidates, past the brake: this test is about Clerk's confirmations.
    let allowed = Options {
        max_prune: Some(2),
        ..PRUNE
    };
    let summary = run(&app, allowed).await;
    let o = &summary.organizations;
    // The listed organizations' rows hold membership events' copies: Clerk's own object of the same updated_at
    // replaces them.
    assert_eq!((o.updated, o.pruned), (2, 1), "{summary:?}");
    // The gone organization's member went with it (organizations are walked first): only `removed` is pruned.
    assert_eq!(summary.memberships.pruned, 1, "{summary:?}");
    let mut expected: Vec<String> = orgs.iter().map(|o| organization_row(o, "webhook", "live")).collect();
    expected.push(organization_row(&gone, "webhook", "deleted"));
    expected.push(organization_row(&missed, "webhook", "live"));
    assert_eq!(organization_rows(&app).await, sorted(expected));
    let mut expected: Vec<String> = listed.iter().map(|m| membership_row(m, "backfill", "live")).collect();
    expected.push(membership_row(&gone_member, "webhook", "deleted"));
    expected.push(membership_row(&removed, "webhook", "deleted"));
    expected.push(membership_row(&skipped, "webhook", "live"));
    assert_eq!(membership_rows(&app).await, sorted(expected));
    for id in [&gone.id, &removed.id] {
        assert!(app.db.tombstone(id).await.is_some(), "{id}");
    }
    assert!(
        app.db.tombstone(&gone_member.id).await.is_some(),
        "a prune's tombstone for the member its organization took with it, lifted with the organization's"
    );
    let via = format!("SELECT updated_via FROM organizations WHERE clerk_id = '{}'", gone.id);
    assert_eq!(app.db.string(&via).await.as_deref(), Some("backfill"));
});

both_backends!(tombstoned_records_stay_tombstoned, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let orgs = organizations(2);
    let (deleted, kept) = (&orgs[0], &orgs[1]);
    let all = [members(deleted, 1), members(kept, 2)].concat();
    app.expect_outcome(&deleted.deleted(now_ms()), &svix_id(), "applied")
        .await;
    app.expect_outcome(&all[1].deleted(now_ms()), &svix_id(), "applied")
        .await;
    let fake = mount(&app, FakeOrgs::new(orgs.clone(), all.clone())).await;

    let summary = run(&app, Options::default()).await;
    let (o, m) = (&summary.organizations, &summary.memberships);
    assert_eq!((o.created, o.skipped_tombstoned), (1, 1), "{summary:?}");
    assert_eq!((m.created, m.skipped_tombstoned), (1, 1), "{summary:?}");
    assert_eq!(
        organization_rows(&app).await,
        vec![organization_row(kept, "backfill", "live")]
    );
    assert_eq!(
        membership_rows(&app).await,
        vec![membership_row(&all[2], "backfill", "live")]
    );
    assert_eq!(
        fake.served(&members_path(&deleted.id)),
        0,
        "a deleted organization's members are not read"
    );
});

both_backends!(dry_run_classifies_every_walk_and_writes_nothing, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let orgs = organizations(3);
    let (same, older) = (&orgs[0], &orgs[1]);
    let all: Vec<ClerkMembership> = orgs.iter().flat_map(|o| members(o, 1)).collect();
    let gone = ClerkOrganization::new(now_ms() - 7_200_000);
    app.expect_outcome(&same.created(), &svix_id(), "applied").await;
    app.expect_outcome(&older.at(older.updated_at - 1, "Old").created(), &svix_id(), "applied")
        .await;
    app.expect_outcome(&gone.created(), &svix_id(), "applied").await;
    app.expect_outcome(&all[0].created(), &svix_id(), "applied").await;
    mount(&app, FakeOrgs::new(orgs.clone(), all.clone())).await;
    let (organizations_before, memberships_before) = (organization_rows(&app).await, membership_rows(&app).await);

    let options = Options { dry_run: true, ..PRUNE };
    let summary = run(&app, options).await;
    let o = &summary.organizations;
    assert_eq!(
        (o.created, o.updated, o.unchanged, o.pruned),
        (1, 1, 1, 1),
        "{summary:?}"
    );
    let m = &summary.memberships;
    // The new organization's member is counted too: the dry run walks the organizations it listed.
    assert_eq!(
        (m.scanned, m.created, m.unchanged, m.pruned),
        (3, 2, 1, 0),
        "{summary:?}"
    );
    assert_eq!(organization_rows(&app).await, organizations_before);
    assert_eq!(membership_rows(&app).await, memberships_before);
    for table in ["clerk_sync_backfill", "clerk_sync_backfill_seen"] {
        assert_eq!(app.db.int(&format!("SELECT count(*) FROM {table}")).await, 0, "{table}");
    }
});

both_backends!(serve_reconciles_organizations_on_its_interval, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[("CLERK_SYNC_RECONCILE__INTERVAL", "1s")]).await;
    let orgs = organizations(1);
    let all = members(&orgs[0], 1);
    mount(&app, FakeOrgs::new(orgs.clone(), all.clone())).await;
    let expected = vec![membership_row(&all[0], "backfill", "live")];
    for _ in 0..100 {
        if membership_rows(&app).await == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        membership_rows(&app).await,
        expected,
        "the reconcile walked the memberships"
    );
    assert_eq!(
        organization_rows(&app).await,
        vec![organization_row(&orgs[0], "backfill", "live")]
    );
});
