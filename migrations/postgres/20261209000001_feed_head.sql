-- The feed's horizon (store::changes::Db::feed_head) in one round trip: the follower calls this as one statement,
-- in autocommit, instead of BEGIN, the lock, the read, COMMIT. It holds the feed lock exclusively only for the
-- read, not for three round trips to a process that may be waiting for a core, so the writers it holds back
-- (every batch waits behind it) wait microseconds, not milliseconds.
--
-- VOLATILE in READ COMMITTED: the read takes its snapshot after the lock is granted, so it sees every batch that
-- committed while the lock was awaited, as the separate statements did.
CREATE FUNCTION clerk_sync_feed_head(p_lock_a integer, p_lock_b integer, OUT last bigint, OUT pruned_through bigint)
LANGUAGE plpgsql VOLATILE AS $head$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_a, p_lock_b);
    SELECT greatest(coalesce((SELECT max(seq) FROM clerk_sync_changes), 0), p.through), p.through
    INTO last, pruned_through
    FROM clerk_sync_changes_pruned p WHERE p.id = 1;
END
$head$;

-- Only the daemon calls it: through Supabase's Data API, any caller could hold every writer back with it.
REVOKE ALL ON FUNCTION clerk_sync_feed_head FROM PUBLIC;
DO $revoke$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION clerk_sync_feed_head FROM %I', r);
        END IF;
    END LOOP;
END
$revoke$;
