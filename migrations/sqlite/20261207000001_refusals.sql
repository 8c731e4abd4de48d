-- Requests the daemon refused without writing anything for them: same meaning as migrations/postgres.
-- `minute` is ISO-8601 UTC with the seconds at zero, so it compares with the other timestamps as text.
CREATE TABLE clerk_sync_refusals (
    minute TEXT NOT NULL,
    reason TEXT NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (minute, reason)
);
