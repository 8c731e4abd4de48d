-- Prune tombstones that can be lifted, and the memberships a pruned parent took with it: same meaning as
-- migrations/postgres.
ALTER TABLE clerk_sync_tombstones ADD COLUMN prune_run TEXT;
ALTER TABLE clerk_sync_tombstones ADD COLUMN cascade_of TEXT;
CREATE INDEX clerk_sync_tombstones_prune_run ON clerk_sync_tombstones (prune_run) WHERE prune_run IS NOT NULL;
CREATE INDEX clerk_sync_tombstones_cascade_of ON clerk_sync_tombstones (cascade_of) WHERE cascade_of IS NOT NULL;
