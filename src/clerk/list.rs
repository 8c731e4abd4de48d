//! Walking Clerk's whole lists, a page at a time (backfill and reconciliation): users, organizations, and the
//! memberships of one organization.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{ClerkClient, ClerkError, ClerkMembership, ClerkOrganization, ClerkUser};

/// Clerk's largest page.
pub const PAGE_SIZE: usize = 500;

/// The most ids one `user_id`-filtered list request asks about (Clerk's limit on the filter).
pub const BY_ID: usize = 100;

/// Where the next page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// After this user id, in `created_at` order (cheap on Clerk's side at any depth).
    After(String),
    /// At this offset: used only when Clerk refuses `starting_after` (large offsets get slow).
    Offset(u64),
}

#[derive(Deserialize)]
struct Count {
    total_count: u64,
}

/// The `{data, total_count}` answer of Clerk's organization lists (not the bare array of `GET /v1/users`).
#[derive(Deserialize)]
struct Paginated {
    data: Vec<Box<RawValue>>,
    total_count: u64,
}

impl ClerkClient {
    /// One page of users in ascending `created_at` order, starting after `cursor` (`None`: from the start).
    /// Clerk answers a bare JSON array.
    pub async fn list_users(&self, cursor: Option<&Cursor>, limit: usize) -> Result<Vec<ClerkUser>, ClerkError> {
        let values: Vec<Box<RawValue>> = self.get_json("list_users", &users_path(cursor, limit)).await?;
        parse(values, ClerkUser::from_raw)
    }

    /// Which of `ids` (at most [`BY_ID`]) Clerk has: `GET /v1/users?user_id=…` (the list filtered by id), one
    /// request for up to a hundred users. An answer naming a user not asked for (a filter the server ignored) is
    /// malformed: read as "these are all Clerk has", it would make every other id look deleted.
    pub async fn users_by_id(&self, ids: &[&str]) -> Result<Vec<ClerkUser>, ClerkError> {
        let ids = &ids[..ids.len().min(BY_ID)];
        let mut path = format!("/v1/users?limit={}&order_by=%2Bcreated_at", ids.len().max(1));
        for id in ids {
            path.push_str("&user_id=");
            path.push_str(&encode(id));
        }
        let values: Vec<Box<RawValue>> = self.get_json("users_by_id", &path).await?;
        let users = parse(values, ClerkUser::from_raw)?;
        if let Some(stranger) = users.iter().find(|u| !ids.contains(&u.id.as_str())) {
            return Err(ClerkError::Malformed(format!(
                "asked for {} users by id, Clerk answered {} too: the user_id filter was not applied",
                ids.len(),
                stranger.id
            )));
        }
        Ok(users)
    }

    /// One page of organizations in ascending `created_at` order from `offset`, with their members count, and
    /// Clerk's `total_count` of organizations. Clerk offers only offset paging here (no `starting_after`, see
    /// tests/fixtures/clerk/SOURCES.md); `+created_at` puts organizations created during a walk at its end.
    pub async fn list_organizations(
        &self,
        offset: u64,
        limit: usize,
    ) -> Result<(Vec<ClerkOrganization>, u64), ClerkError> {
        let path = format!(
            "/v1/organizations?limit={}&offset={offset}&order_by=%2Bcreated_at&include_members_count=true",
            limit.clamp(1, PAGE_SIZE)
        );
        let page: Paginated = self.get_json("list_organizations", &path).await?;
        let organizations = parse(page.data, ClerkOrganization::from_raw)?;
        Ok((organizations, page.total_count))
    }

    /// One page of the memberships of organization `organization_id`, in ascending `created_at` order from
    /// `offset`, and Clerk's `total_count` of them. [`ClerkError::NotFound`]: Clerk has no such organization.
    pub async fn list_memberships(
        &self,
        organization_id: &str,
        offset: u64,
        limit: usize,
    ) -> Result<(Vec<ClerkMembership>, u64), ClerkError> {
        let path = format!(
            "/v1/organizations/{}/memberships?limit={}&offset={offset}&order_by=%2Bcreated_at",
            encode(organization_id),
            limit.clamp(1, PAGE_SIZE)
        );
        let page: Paginated = self.get_json("list_memberships", &path).await?;
        let memberships = parse(page.data, ClerkMembership::from_raw)?;
        Ok((memberships, page.total_count))
    }

    /// `GET /v1/users/count`: the total, for progress estimates.
    pub async fn count_users(&self) -> Result<u64, ClerkError> {
        let count: Count = self.get_json("count_users", "/v1/users/count").await?;
        Ok(count.total_count)
    }
}

/// The error codes Clerk answers a feature that is turned off on the instance with (organizations on an instance
/// without them: 403 `organization_not_enabled_in_instance`).
const NOT_ENABLED_CODES: &[&str] = &["organization_not_enabled_in_instance", "feature_not_enabled"];

impl ClerkError {
    /// Whether this answer to an organizations list means the instance has organizations turned off, and if so
    /// what Clerk said (for the log line). A documented "not enabled" code counts on any page; on the first
    /// page of a walk so does any other refusal (a 404 `resource_not_found`, an unknown 4xx), as nothing was
    /// listed yet — except 401, a key Clerk does not accept, which stays an error.
    pub fn organizations_off(&self, first_page: bool) -> Option<String> {
        match self {
            ClerkError::Refused {
                status,
                code: Some(code),
            } if NOT_ENABLED_CODES.contains(&code.as_str()) || code.ends_with("_not_enabled") => {
                Some(format!("HTTP {status} {code}"))
            }
            ClerkError::NotFound if first_page => Some("HTTP 404 resource_not_found".into()),
            ClerkError::Refused { status, code } if first_page && *status != 401 => Some(match code {
                Some(code) => format!("HTTP {status} {code}"),
                None => format!("HTTP {status}"),
            }),
            _ => None,
        }
    }
}

/// Every object of a page, or the page is malformed (a walk never skips an object it cannot read: `--prune`
/// would then tombstone it).
fn parse<T>(
    values: Vec<Box<RawValue>>,
    from_raw: fn(&RawValue) -> Result<T, serde_json::Error>,
) -> Result<Vec<T>, ClerkError> {
    values
        .into_iter()
        .map(|raw| from_raw(&raw))
        .collect::<Result<_, _>>()
        .map_err(|e| ClerkError::Malformed(e.to_string()))
}

fn users_path(cursor: Option<&Cursor>, limit: usize) -> String {
    let mut path = format!("/v1/users?limit={}&order_by=%2Bcreated_at", limit.clamp(1, PAGE_SIZE));
    match cursor {
        Some(Cursor::After(id)) => path.push_str(&format!("&starting_after={}", encode(id))),
        Some(Cursor::Offset(n)) => path.push_str(&format!("&offset={n}")),
        None => {}
    }
    path
}

/// Clerk ids are letters, digits and `_`; anything else is percent-encoded rather than trusted.
fn encode(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, code: Option<&str>) -> ClerkError {
        ClerkError::Refused {
            status,
            code: code.map(Into::into),
        }
    }

    #[test]
    fn organizations_off_reads_clerks_answers() {
        let off = refused(403, Some("organization_not_enabled_in_instance"));
        assert_eq!(
            off.organizations_off(false).as_deref(),
            Some("HTTP 403 organization_not_enabled_in_instance"),
            "a documented code counts on any page"
        );
        assert!(ClerkError::NotFound.organizations_off(true).is_some());
        assert!(
            ClerkError::NotFound.organizations_off(false).is_none(),
            "later: a shifted page, not a feature"
        );
        assert_eq!(
            refused(422, None).organizations_off(true).as_deref(),
            Some("HTTP 422"),
            "an unknown 4xx on the first page"
        );
        assert!(refused(422, Some("form_param_unknown"))
            .organizations_off(false)
            .is_none());
        assert!(
            refused(401, None).organizations_off(true).is_none(),
            "a wrong key stays an error"
        );
        assert!(ClerkError::Unavailable("HTTP 503".into())
            .organizations_off(true)
            .is_none());
        assert!(ClerkError::RateLimited(None).organizations_off(true).is_none());
    }
}
