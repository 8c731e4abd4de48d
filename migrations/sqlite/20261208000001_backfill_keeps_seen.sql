-- Whether a walk records the ids it has seen (clerk_sync_backfill_seen). Only a walk that may prune needs them; a
-- walk started without --prune skips a write per record, and a --prune run does not resume it (it walks again).
-- Checkpoints written before this column kept their ids: true.
ALTER TABLE clerk_sync_backfill ADD COLUMN keeps_seen INTEGER NOT NULL DEFAULT 1;
