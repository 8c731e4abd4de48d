//! Walking Clerk's whole user list, a page at a time (backfill and reconciliation).

use serde::Deserialize;

use super::{ClerkClient, ClerkError, ClerkUser};

/// Clerk's largest page.
pub const PAGE_SIZE: usize = 500;

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

impl ClerkClient {
    /// One page of users in ascending `created_at` order, starting after `cursor` (`None`: from the start).
    /// Clerk answers a bare JSON array.
    pub async fn list_users(&self, cursor: Option<&Cursor>, limit: usize) -> Result<Vec<ClerkUser>, ClerkError> {
        let mut path = format!("/v1/users?limit={}&order_by=%2Bcreated_at", limit.clamp(1, PAGE_SIZE));
        match cursor {
            Some(Cursor::After(id)) => path.push_str(&format!("&starting_after={}", encode(id))),
            Some(Cursor::Offset(n)) => path.push_str(&format!("&offset={n}")),
            None => {}
        }
        self.get_json("list_users", &path).await
    }

    /// `GET /v1/users/count`: the total, for progress estimates.
    pub async fn count_users(&self) -> Result<u64, ClerkError> {
        let count: Count = self.get_json("count_users", "/v1/users/count").await?;
        Ok(count.total_count)
    }
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
