-- The common batch — users created or updated, by webhooks or the fallback — in one round trip: the writer calls
-- this function as one statement, in autocommit, instead of BEGIN, the lock statement, the deliveries, the upsert
-- with its feed rows, (corrections,) COMMIT. It does what store::sql does for such a batch, statement for
-- statement: each statement below takes a fresh snapshot (a VOLATILE function in READ COMMITTED), so the upsert
-- sees every tombstone committed before the per-record locks were granted, as with separate statements.
--
-- Rows come as parallel arrays, one element per change, distinct clerk ids and svix ids (the caller checks).
-- Returns one row per change, in order: `created`, `updated`, `stale`, `tombstoned`, or `duplicate` with the
-- delivery's recorded outcome in `prior`; `seq`, the highest feed seq written. When a record has a tombstone a
-- prune made (which a write may lift: store::sql::lift), it writes nothing and returns no row at all: the
-- caller applies the batch the general way.
CREATE FUNCTION clerk_sync_apply_users(
    p_clerk_id text[], p_email text[], p_first_name text[], p_last_name text[], p_name text[], p_username text[],
    p_image_url text[], p_phone_number text[], p_external_id text[], p_public_metadata text[], p_banned boolean[],
    p_last_sign_in_at bigint[], p_clerk_created_at bigint[], p_data text[], p_via text[], p_clerk_updated_at bigint[],
    p_svix_id text[], p_event_type text[], p_feed boolean, p_lock_a integer, p_lock_b integer
) RETURNS TABLE (clerk_id text, outcome text, prior text, seq bigint)
LANGUAGE plpgsql VOLATILE AS $apply$
#variable_conflict use_column
DECLARE
    fresh text[];
    written text[];
    created boolean[];
    last_seq bigint;
BEGIN
    -- The per-record locks of store::postgres (same keys, sorted), held to the end of the statement's transaction.
    PERFORM pg_advisory_xact_lock(hashtextextended(k, 0)) FROM (SELECT DISTINCT k FROM unnest(p_clerk_id) AS k) s
        ORDER BY k;
    IF EXISTS (SELECT 1 FROM clerk_sync_tombstones t WHERE t.clerk_id = ANY (p_clerk_id) AND t.prune_run IS NOT NULL)
    THEN
        RETURN;
    END IF;

    -- Deliveries first: a redelivered svix id stops here.
    WITH d AS (
        INSERT INTO clerk_sync_deliveries (svix_id, event_type, clerk_id, outcome)
        SELECT i.svix_id, i.event_type, i.clerk_id, 'applied'
        FROM unnest(p_svix_id, p_event_type, p_clerk_id) AS i(svix_id, event_type, clerk_id)
        WHERE i.svix_id IS NOT NULL
        ORDER BY i.svix_id
        ON CONFLICT (svix_id) DO NOTHING
        RETURNING svix_id
    )
    SELECT coalesce(array_agg(d.svix_id), '{}') INTO fresh FROM d;

    -- The upsert under the ordering guard and the tombstone check, with its feed rows.
    WITH i AS (
        SELECT * FROM unnest(p_clerk_id, p_email, p_first_name, p_last_name, p_name, p_username, p_image_url,
                             p_phone_number, p_external_id, p_public_metadata, p_banned, p_last_sign_in_at,
                             p_clerk_created_at, p_data, p_via, p_clerk_updated_at, p_svix_id)
            AS i(clerk_id, email, first_name, last_name, name, username, image_url, phone_number, external_id,
                 public_metadata, banned, last_sign_in_at, clerk_created_at, data, via, clerk_updated_at, svix_id)
        WHERE i.svix_id IS NULL OR i.svix_id = ANY (fresh)
    ),
    up AS (
        INSERT INTO users AS u (clerk_id, email, first_name, last_name, name, username, image_url, phone_number,
                                external_id, public_metadata, banned, last_sign_in_at, clerk_created_at, data,
                                created_via, updated_via, clerk_updated_at, created_at, updated_at)
        SELECT i.clerk_id, i.email, i.first_name, i.last_name, i.name, i.username, i.image_url, i.phone_number,
               i.external_id, i.public_metadata::jsonb, i.banned,
               to_timestamp(i.last_sign_in_at::double precision / 1000),
               to_timestamp(i.clerk_created_at::double precision / 1000), i.data::jsonb,
               i.via, i.via, i.clerk_updated_at, now(), now()
        FROM i
        WHERE NOT EXISTS (SELECT 1 FROM clerk_sync_tombstones t WHERE t.clerk_id IN (i.clerk_id))
        ORDER BY i.clerk_id
        ON CONFLICT (clerk_id) DO UPDATE SET
            email = EXCLUDED.email, first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
            name = EXCLUDED.name, username = EXCLUDED.username, image_url = EXCLUDED.image_url,
            phone_number = EXCLUDED.phone_number, external_id = EXCLUDED.external_id,
            public_metadata = EXCLUDED.public_metadata, banned = EXCLUDED.banned,
            last_sign_in_at = EXCLUDED.last_sign_in_at, clerk_created_at = EXCLUDED.clerk_created_at,
            data = EXCLUDED.data, updated_via = EXCLUDED.updated_via, clerk_updated_at = EXCLUDED.clerk_updated_at,
            updated_at = now()
        WHERE u.deleted_at IS NULL AND (u.clerk_updated_at IS NULL OR u.clerk_updated_at < EXCLUDED.clerk_updated_at)
        RETURNING u.clerk_id, (u.xmax = 0) AS created, u.updated_via AS via
    ),
    feed AS (
        -- The feed lock, shared, before the first seq is handed out (store::postgres::FEED_LOCK).
        INSERT INTO clerk_sync_changes (kind, clerk_id, op, via)
        SELECT 'user', up.clerk_id, CASE WHEN up.created THEN 'created' ELSE 'updated' END, up.via
        FROM (SELECT pg_advisory_xact_lock_shared(p_lock_a, p_lock_b)) AS lock, up
        WHERE p_feed
        ORDER BY up.clerk_id
        RETURNING clerk_sync_changes.seq
    )
    SELECT coalesce(array_agg(up.clerk_id), '{}'), coalesce(array_agg(up.created), '{}'), (SELECT max(feed.seq) FROM feed)
    INTO written, created, last_seq FROM up;

    -- Correct the recorded outcome of deliveries whose change was not applied (stale or tombstoned).
    UPDATE clerk_sync_deliveries d
    SET outcome = CASE WHEN EXISTS (SELECT 1 FROM clerk_sync_tombstones t WHERE t.clerk_id = i.clerk_id)
                       THEN 'tombstoned' ELSE 'stale' END
    FROM unnest(p_svix_id, p_clerk_id) AS i(svix_id, clerk_id)
    WHERE d.svix_id = i.svix_id AND i.svix_id = ANY (fresh) AND NOT (i.clerk_id = ANY (written));

    RETURN QUERY
    SELECT i.clerk_id,
           CASE
               WHEN i.svix_id IS NOT NULL AND NOT (i.svix_id = ANY (fresh)) THEN 'duplicate'
               WHEN w.created IS NOT NULL THEN CASE WHEN w.created THEN 'created' ELSE 'updated' END
               WHEN EXISTS (SELECT 1 FROM clerk_sync_tombstones t WHERE t.clerk_id = i.clerk_id) THEN 'tombstoned'
               ELSE 'stale'
           END,
           CASE WHEN i.svix_id IS NOT NULL AND NOT (i.svix_id = ANY (fresh))
                THEN (SELECT d.outcome FROM clerk_sync_deliveries d WHERE d.svix_id = i.svix_id) END,
           last_seq
    FROM unnest(p_clerk_id, p_svix_id) WITH ORDINALITY AS i(clerk_id, svix_id, n)
    LEFT JOIN unnest(written, created) AS w(clerk_id, created) ON w.clerk_id = i.clerk_id
    ORDER BY i.n;
END
$apply$;

-- Only the daemon (the function's owner, the role that migrates) calls it. PUBLIC may execute a new function by
-- default, and Supabase grants its Data API roles EXECUTE on new functions too: an RPC must not write users.
REVOKE ALL ON FUNCTION clerk_sync_apply_users FROM PUBLIC;
DO $revoke$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION clerk_sync_apply_users FROM %I', r);
        END IF;
    END LOOP;
END
$revoke$;
