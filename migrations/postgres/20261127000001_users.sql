-- clerk-sync schema, Postgres.
--
-- Creates `users` or adopts the application's own `users` table: missing columns are added, existing columns
-- and rows are kept (rows are marked created_via = 'adopted'), nothing is dropped or renamed. Any incompatible
-- column type, NULL or duplicate clerk_id raises an exception; sqlx runs this file in one transaction, so a
-- failure changes nothing.
DO $adopt$
DECLARE
    expected CONSTANT jsonb := '{
        "clerk_id": "text", "email": "text", "first_name": "text", "last_name": "text", "name": "text",
        "username": "text", "image_url": "text", "created_via": "text", "updated_via": "text",
        "clerk_updated_at": "bigint", "deleted_at": "timestamp", "created_at": "timestamp",
        "updated_at": "timestamp"
    }';
    col record;
    dupes bigint;
    example text;
    compatible boolean;
BEGIN
    IF to_regclass('users') IS NULL THEN
        CREATE TABLE users (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
    END IF;

    FOR col IN
        SELECT c.column_name, c.data_type, c.udt_name
        FROM information_schema.columns c
        WHERE c.table_schema = current_schema() AND c.table_name = 'users'
          AND expected ? c.column_name
    LOOP
        compatible := CASE expected ->> col.column_name
            WHEN 'text' THEN col.data_type IN ('text', 'character varying') OR col.udt_name = 'citext'
            WHEN 'bigint' THEN col.data_type = 'bigint'
            ELSE col.data_type IN ('timestamp with time zone', 'timestamp without time zone')
        END;
        IF NOT compatible THEN
            RAISE EXCEPTION 'clerk-sync cannot adopt table "users": column "%" has type %, expected %; '
                'change or rename that column, then run clerk-sync migrate again',
                col.column_name, col.data_type, expected ->> col.column_name;
        END IF;
    END LOOP;

    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'users' AND column_name = 'clerk_id') THEN
        EXECUTE 'SELECT count(*), min(clerk_id) FROM (SELECT clerk_id FROM users WHERE clerk_id IS NOT NULL
                 GROUP BY clerk_id HAVING count(*) > 1) d' INTO dupes, example;
        IF dupes > 0 THEN
            RAISE EXCEPTION 'clerk-sync cannot adopt table "users": % clerk_id values appear more than once '
                '(for example %), so clerk_id cannot be made unique; merge or remove the duplicate rows, then run '
                'clerk-sync migrate again', dupes, example;
        END IF;
        EXECUTE 'SELECT count(*) FROM users WHERE clerk_id IS NULL' INTO dupes;
        IF dupes > 0 THEN
            RAISE EXCEPTION 'clerk-sync cannot adopt table "users": % rows have no clerk_id; fill or remove them, '
                'then run clerk-sync migrate again', dupes;
        END IF;
    END IF;

    -- Existing rows take 'adopted' through the column default, which is dropped right after.
    ALTER TABLE users
        ADD COLUMN IF NOT EXISTS id uuid DEFAULT gen_random_uuid(),
        ADD COLUMN IF NOT EXISTS clerk_id text,
        ADD COLUMN IF NOT EXISTS email text,
        ADD COLUMN IF NOT EXISTS first_name text,
        ADD COLUMN IF NOT EXISTS last_name text,
        ADD COLUMN IF NOT EXISTS name text,
        ADD COLUMN IF NOT EXISTS username text,
        ADD COLUMN IF NOT EXISTS image_url text,
        ADD COLUMN IF NOT EXISTS created_via text NOT NULL DEFAULT 'adopted',
        ADD COLUMN IF NOT EXISTS updated_via text,
        ADD COLUMN IF NOT EXISTS clerk_updated_at bigint,
        ADD COLUMN IF NOT EXISTS deleted_at timestamptz,
        ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now(),
        ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
    ALTER TABLE users ALTER COLUMN created_via DROP DEFAULT;
    UPDATE users SET created_via = 'adopted' WHERE created_via IS NULL;
    ALTER TABLE users ALTER COLUMN created_via SET NOT NULL, ALTER COLUMN clerk_id SET NOT NULL;

    -- Clerk users may lack any of these (phone-only users have no email), so the daemon must be able to write NULL.
    FOR col IN
        SELECT column_name FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'users' AND is_nullable = 'NO'
          AND column_name IN ('email', 'first_name', 'last_name', 'name', 'username', 'image_url')
    LOOP
        RAISE WARNING 'clerk-sync: users.% is now nullable (Clerk users may have none)', col.column_name;
        EXECUTE format('ALTER TABLE users ALTER COLUMN %I DROP NOT NULL', col.column_name);
    END LOOP;

    -- An app-made uuid/text id without a default would make every insert fail.
    SELECT data_type, column_default INTO col FROM information_schema.columns
    WHERE table_schema = current_schema() AND table_name = 'users' AND column_name = 'id';
    IF col.column_default IS NULL AND col.data_type = 'uuid' THEN
        ALTER TABLE users ALTER COLUMN id SET DEFAULT gen_random_uuid();
    ELSIF col.column_default IS NULL AND col.data_type IN ('text', 'character varying') THEN
        ALTER TABLE users ALTER COLUMN id SET DEFAULT gen_random_uuid()::text;
    END IF;

    -- ON CONFLICT (clerk_id) needs a unique, non-partial index on exactly clerk_id.
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = 'users'::regclass AND i.indisunique AND i.indnkeyatts = 1
          AND i.indpred IS NULL AND a.attname = 'clerk_id'
    ) THEN
        ALTER TABLE users ADD CONSTRAINT users_clerk_id_key UNIQUE (clerk_id);
    END IF;

    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'users'::regclass AND conname = 'users_created_via_check') THEN
        ALTER TABLE users ADD CONSTRAINT users_created_via_check
            CHECK (created_via IN ('webhook', 'fallback', 'backfill', 'adopted'));
    END IF;
END
$adopt$;

-- Deleted Clerk users. Kept even when the row itself is hard-deleted, so no event brings a user back.
CREATE TABLE clerk_sync_tombstones (
    clerk_id      text PRIMARY KEY,
    deleted_at_ms bigint NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);

-- One row per processed Svix message id, written in the same transaction as the user change: the dedupe key.
CREATE TABLE clerk_sync_deliveries (
    svix_id     text PRIMARY KEY,
    event_type  text NOT NULL,
    clerk_id    text,
    outcome     text NOT NULL CHECK (outcome IN ('applied', 'stale', 'tombstoned', 'ignored', 'invalid_payload')),
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX clerk_sync_deliveries_received_at ON clerk_sync_deliveries (received_at);
