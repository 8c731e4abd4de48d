-- The whole Clerk identity model, SQLite. Same meaning as migrations/postgres.
--
-- The new users columns (phone_number, external_id, public_metadata, banned, last_sign_in_at, clerk_created_at,
-- data) are added by src/store/sqlite/adopt.rs around the migrations, since SQLite's ALTER TABLE cannot be made
-- conditional and an application's table may already have some of them. The same step adds missing columns to
-- an application-made organizations or organization_memberships table; CREATE TABLE IF NOT EXISTS then leaves
-- it alone. No foreign keys join the synced tables: events arrive in any order.
CREATE TABLE IF NOT EXISTS organizations (
    id               TEXT PRIMARY KEY NOT NULL DEFAULT (lower(
                         hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-'
                         || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-'
                         || hex(randomblob(6)))),
    clerk_id         TEXT NOT NULL,
    name             TEXT,
    slug             TEXT,
    image_url        TEXT,
    public_metadata  TEXT,
    members_count    INTEGER,
    clerk_created_at TEXT,
    data             TEXT,
    created_via      TEXT NOT NULL CHECK (created_via IN ('webhook', 'fallback', 'backfill', 'adopted')),
    updated_via      TEXT,
    clerk_updated_at INTEGER,
    deleted_at       TEXT,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE UNIQUE INDEX IF NOT EXISTS organizations_clerk_id_key ON organizations (clerk_id);

CREATE TABLE IF NOT EXISTS organization_memberships (
    id                    TEXT PRIMARY KEY NOT NULL DEFAULT (lower(
                              hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2)
                              || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2)
                              || '-' || hex(randomblob(6)))),
    clerk_id              TEXT NOT NULL,
    organization_clerk_id TEXT,
    user_clerk_id         TEXT,
    role                  TEXT,
    clerk_created_at      TEXT,
    data                  TEXT,
    created_via           TEXT NOT NULL CHECK (created_via IN ('webhook', 'fallback', 'backfill', 'adopted')),
    updated_via           TEXT,
    clerk_updated_at      INTEGER,
    deleted_at            TEXT,
    created_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE UNIQUE INDEX IF NOT EXISTS organization_memberships_clerk_id_key ON organization_memberships (clerk_id);
CREATE INDEX IF NOT EXISTS organization_memberships_organization
    ON organization_memberships (organization_clerk_id, clerk_created_at DESC);
CREATE INDEX IF NOT EXISTS organization_memberships_user
    ON organization_memberships (user_clerk_id, clerk_created_at DESC);
