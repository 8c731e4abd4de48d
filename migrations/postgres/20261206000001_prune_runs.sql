-- Tombstones that backfill --prune (or reconcile.prune) made are not final: the daemon inferred the deletion
-- from Clerk's list, Clerk did not announce it. `prune_run` names the run that made one (NULL: Clerk announced
-- the deletion, final as before), so a later sign of the record (a newer webhook, a walk that lists it, a lookup
-- Clerk answers) lifts it, and `clerk-sync undo-prune RUN` lifts exactly one run's. `cascade_of` marks the
-- membership tombstones a pruned organization or user took with it (a Clerk-announced delete needs none: its
-- parent's tombstone covers them), so lifting the parent lifts them too.
ALTER TABLE clerk_sync_tombstones
    ADD COLUMN prune_run text,
    ADD COLUMN cascade_of text;
CREATE INDEX clerk_sync_tombstones_prune_run ON clerk_sync_tombstones (prune_run) WHERE prune_run IS NOT NULL;
CREATE INDEX clerk_sync_tombstones_cascade_of ON clerk_sync_tombstones (cascade_of) WHERE cascade_of IS NOT NULL;
