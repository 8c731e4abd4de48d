-- Backfill and reconciliation: a resumable cursor per walk, and the ids a walk has seen (for --prune).
CREATE TABLE clerk_sync_backfill (
    name       TEXT PRIMARY KEY NOT NULL,
    cursor     TEXT,
    scanned    INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE clerk_sync_backfill_seen (
    name     TEXT NOT NULL,
    clerk_id TEXT NOT NULL,
    PRIMARY KEY (name, clerk_id)
);
