//! SQL both backends share, as macros so that it can be part of their `const` statements (`concat!`): the
//! tombstone check and the ordering guard of organizations. Each takes the name the statement gives the stored
//! row; `excluded` is the incoming one.

/// The tombstone check, written once for every statement that makes one: no tombstone covers any of `$ids`
/// (SQL expressions naming clerk ids, comma-separated). Every upsert is refused by its record's tombstone, and a
/// membership's also by its organization's and its user's (their delete deleted their memberships, see
/// `cascade`); reads and row-level security hide a membership of a tombstoned parent. A tombstone is final
/// today; lifting some (issue 20) changes this one place.
macro_rules! not_tombstoned {
    ($ids:literal) => {
        concat!(
            "NOT EXISTS (SELECT 1 FROM clerk_sync_tombstones t WHERE t.clerk_id IN (",
            $ids,
            "))"
        )
    };
}
pub(crate) use not_tombstoned;

/// The ordering guard of an organization upsert, as SQL on the stored row `$t` and `excluded`: whether the incoming
/// row replaces the stored one. A newer `updated_at` wins; at an equal one, the organization's own event (or
/// Clerk's API) wins over a membership event's copy of it (`embedded`), since Clerk changes an organization
/// without changing its `updated_at` and the own event is the authority on it.
macro_rules! organization_wins {
    ($t:literal) => {
        concat!(
            "(",
            $t,
            ".clerk_updated_at IS NULL OR ",
            $t,
            ".clerk_updated_at < excluded.clerk_updated_at OR (",
            $t,
            ".clerk_updated_at = excluded.clerk_updated_at AND ",
            $t,
            ".embedded AND NOT excluded.embedded))"
        )
    };
}
pub(crate) use organization_wins;

/// Whether a membership event's copy of its organization, as new as the stored row but not winning, still brings
/// its `members_count`: Clerk's copy in a membership event carries the count after that membership changed, with
/// the organization's `updated_at` unchanged. Only a count that differs, so a copy that changes nothing writes
/// nothing (and appends nothing to the feed).
macro_rules! organization_count_only {
    ($t:literal) => {
        concat!(
            "(excluded.embedded AND ",
            $t,
            ".clerk_updated_at = excluded.clerk_updated_at \
             AND excluded.members_count IS NOT NULL \
             AND (",
            $t,
            ".members_count IS NULL OR ",
            $t,
            ".members_count <> excluded.members_count))"
        )
    };
}
pub(crate) use organization_count_only;

/// The `SET` of an organization upsert: the columns of a winning row (see [`organization_wins`]), or of a
/// count-only one just its count. At an equal `updated_at` the own event does not take the count back from the
/// copy before it: which of the two counts is newer cannot be told.
macro_rules! organization_set {
    ($t:literal) => {
        concat!(
            "name = CASE WHEN ",
            $crate::store::sql::organization_wins!($t),
            " THEN excluded.name ELSE ",
            $t,
            ".name END, \
             slug = CASE WHEN ",
            $crate::store::sql::organization_wins!($t),
            " THEN excluded.slug ELSE ",
            $t,
            ".slug END, \
             image_url = CASE WHEN ",
            $crate::store::sql::organization_wins!($t),
            " THEN excluded.image_url ELSE ",
            $t,
            ".image_url END, \
             public_metadata = CASE WHEN ",
            $crate::store::sql::organization_wins!($t),
            " THEN excluded.public_metadata \
                                    ELSE ",
            $t,
            ".public_metadata END, \
             clerk_created_at = CASE WHEN ",
            $crate::store::sql::organization_wins!($t),
            " THEN excluded.clerk_created_at \
                                     ELSE ",
            $t,
            ".clerk_created_at END, \
             data = CASE WHEN ",
            $crate::store::sql::organization_wins!($t),
            " THEN excluded.data ELSE ",
            $t,
            ".data END, \
             embedded = CASE WHEN ",
            $crate::store::sql::organization_wins!($t),
            " THEN excluded.embedded ELSE ",
            $t,
            ".embedded END, \
             members_count = CASE WHEN ",
            $t,
            ".clerk_updated_at = excluded.clerk_updated_at AND NOT excluded.embedded \
                                  THEN coalesce(",
            $t,
            ".members_count, excluded.members_count) \
                                  ELSE coalesce(excluded.members_count, ",
            $t,
            ".members_count) END, \
             updated_via = excluded.updated_via, clerk_updated_at = excluded.clerk_updated_at"
        )
    };
}
pub(crate) use organization_set;
