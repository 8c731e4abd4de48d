-- clerk-sync schema, SQLite. Same meaning as migrations/postgres.
--
-- An application's own `users` table is adopted before this file runs (src/store/sqlite/adopt.rs adds the
-- missing columns, since SQLite's ALTER TABLE cannot be made conditional in SQL); CREATE TABLE IF NOT EXISTS
-- then leaves it alone.
CREATE TABLE IF NOT EXISTS users (
    id               TEXT PRIMARY KEY NOT NULL DEFAULT (lower(
                         hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-'
                         || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-'
                         || hex(randomblob(6)))),
    clerk_id         TEXT NOT NULL,
    email            TEXT,
    first_name       TEXT,
    last_name        TEXT,
    name             TEXT,
    username         TEXT,
    image_url        TEXT,
    created_via      TEXT NOT NULL CHECK (created_via IN ('webhook', 'fallback', 'backfill', 'adopted')),
    updated_via      TEXT,
    clerk_updated_at INTEGER,
    deleted_at       TEXT,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- ON CONFLICT (clerk_id) needs this; on an adopted table it also enforces uniqueness.
CREATE UNIQUE INDEX IF NOT EXISTS users_clerk_id_key ON users (clerk_id);

-- Deleted Clerk users. Kept even when the row itself is hard-deleted, so no event brings a user back.
CREATE TABLE clerk_sync_tombstones (
    clerk_id      TEXT PRIMARY KEY NOT NULL,
    deleted_at_ms INTEGER NOT NULL,
    recorded_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- One row per processed Svix message id, written in the same transaction as the user change: the dedupe key.
CREATE TABLE clerk_sync_deliveries (
    svix_id     TEXT PRIMARY KEY NOT NULL,
    event_type  TEXT NOT NULL,
    clerk_id    TEXT,
    outcome     TEXT NOT NULL CHECK (outcome IN ('applied', 'stale', 'tombstoned', 'ignored', 'invalid_payload')),
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX clerk_sync_deliveries_received_at ON clerk_sync_deliveries (received_at);
