-- The Clerk instance this database mirrors: same meaning as migrations/postgres.
CREATE TABLE clerk_sync_instance (
    singleton   INTEGER PRIMARY KEY NOT NULL DEFAULT 1 CHECK (singleton = 1),
    instance_id TEXT NOT NULL,
    environment TEXT,
    pinned_by   TEXT NOT NULL,
    pinned_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- A delivery of another instance is recorded as such. SQLite cannot change a CHECK constraint: the table is
-- rebuilt with its rows (a week of deliveries at most).
CREATE TABLE clerk_sync_deliveries_new (
    svix_id     TEXT PRIMARY KEY NOT NULL,
    event_type  TEXT NOT NULL,
    clerk_id    TEXT,
    outcome     TEXT NOT NULL
        CHECK (outcome IN ('applied', 'stale', 'tombstoned', 'ignored', 'invalid_payload', 'wrong_instance')),
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
INSERT INTO clerk_sync_deliveries_new (svix_id, event_type, clerk_id, outcome, received_at)
    SELECT svix_id, event_type, clerk_id, outcome, received_at FROM clerk_sync_deliveries;
DROP TABLE clerk_sync_deliveries;
ALTER TABLE clerk_sync_deliveries_new RENAME TO clerk_sync_deliveries;
CREATE INDEX clerk_sync_deliveries_received_at ON clerk_sync_deliveries (received_at);
