-- The change feed, SQLite. Same meaning as migrations/postgres. AUTOINCREMENT: a seq is never reused, even
-- after the newest rows were pruned. One writer at a time, so seq follows commit order.
CREATE TABLE clerk_sync_changes (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind     TEXT NOT NULL CHECK (kind IN ('user', 'organization', 'membership')),
    clerk_id TEXT NOT NULL,
    op       TEXT NOT NULL CHECK (op IN ('created', 'updated', 'deleted')),
    via      TEXT NOT NULL CHECK (via IN ('webhook', 'fallback', 'backfill')),
    at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE clerk_sync_changes_pruned (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    through INTEGER NOT NULL
);
INSERT INTO clerk_sync_changes_pruned (id, through) VALUES (1, 0);

CREATE TABLE clerk_sync_forward (
    name       TEXT PRIMARY KEY NOT NULL,
    seq        INTEGER NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
