-- Backfill and reconciliation: a resumable cursor per walk, and the ids a walk has seen (for --prune).
CREATE TABLE clerk_sync_backfill (
    name       text PRIMARY KEY,
    cursor     text,
    scanned    bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE clerk_sync_backfill_seen (
    name     text NOT NULL,
    clerk_id text NOT NULL,
    PRIMARY KEY (name, clerk_id)
);
