-- The change feed: one row per committed change of a synced record, written in the transaction of the change.
-- `seq` increases strictly in commit order: writers take one advisory lock just before inserting here, and
-- hold it to their commit (src/store/changes.rs); a rolled-back transaction leaves a gap, which followers skip.
CREATE TABLE clerk_sync_changes (
    seq      bigserial PRIMARY KEY,
    kind     text NOT NULL CHECK (kind IN ('user', 'organization', 'membership')),
    clerk_id text NOT NULL,
    op       text NOT NULL CHECK (op IN ('created', 'updated', 'deleted')),
    via      text NOT NULL CHECK (via IN ('webhook', 'fallback', 'backfill')),
    at       timestamptz NOT NULL DEFAULT now()
);

-- The highest seq pruned so far (retention): a follower asking for changes after an older seq has missed some.
CREATE TABLE clerk_sync_changes_pruned (
    id      integer PRIMARY KEY CHECK (id = 1),
    through bigint NOT NULL
);
INSERT INTO clerk_sync_changes_pruned (id, through) VALUES (1, 0);

-- Where forwarding stands: the last seq the application acknowledged.
CREATE TABLE clerk_sync_forward (
    name       text PRIMARY KEY,
    seq        bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
