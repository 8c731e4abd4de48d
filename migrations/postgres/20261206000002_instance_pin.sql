-- The Clerk instance this database mirrors, pinned the first time the daemon talks to Clerk with a key
-- (GET /v1/instance) or applies a webhook (its envelope's instance_id). A serve, backfill or reconcile whose key
-- belongs to another instance writes nothing; a webhook of another instance is not applied. `clerk-sync pin
-- --replace` re-pins deliberately. One row at most.
CREATE TABLE clerk_sync_instance (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    instance_id text NOT NULL,
    -- Clerk's environment_type (development, production, …); NULL while only a webhook has named the instance.
    environment text,
    pinned_by   text NOT NULL,
    pinned_at   timestamptz NOT NULL DEFAULT now()
);

-- A delivery of another instance is recorded as such.
ALTER TABLE clerk_sync_deliveries DROP CONSTRAINT IF EXISTS clerk_sync_deliveries_outcome_check;
ALTER TABLE clerk_sync_deliveries ADD CONSTRAINT clerk_sync_deliveries_outcome_check
    CHECK (outcome IN ('applied', 'stale', 'tombstoned', 'ignored', 'invalid_payload', 'wrong_instance'));
