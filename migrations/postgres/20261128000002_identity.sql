-- The whole Clerk identity model: the full user profile, organizations and organization memberships.
--
-- Like the first migration, this adopts what the application already made: a column that exists with a
-- compatible type is kept (its values too), a missing one is added, an incompatible one stops the migration
-- with a message (sqlx runs this file in one transaction, so a failure changes nothing). No foreign keys join
-- the synced tables: events arrive in any order, so a membership may come before its organization or user.
CREATE FUNCTION pg_temp.clerk_sync_adopt(tbl text, columns jsonb) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    col record;
    kind text;
    compatible boolean;
    n bigint;
BEGIN
    FOR col IN
        SELECT c.column_name, c.data_type, c.udt_name FROM information_schema.columns c
        WHERE c.table_schema = current_schema() AND c.table_name = tbl AND columns ? c.column_name
    LOOP
        kind := columns -> col.column_name ->> 0;
        compatible := CASE kind
            WHEN 'text' THEN col.data_type IN ('text', 'character varying') OR col.udt_name = 'citext'
            WHEN 'bigint' THEN col.data_type = 'bigint'
            WHEN 'boolean' THEN col.data_type = 'boolean'
            WHEN 'json' THEN col.data_type IN ('jsonb', 'json')
            ELSE col.data_type IN ('timestamp with time zone', 'timestamp without time zone')
        END;
        IF NOT compatible THEN
            RAISE EXCEPTION 'clerk-sync cannot adopt table "%": column "%" has type %, expected %; '
                'change or rename that column, then run clerk-sync migrate again',
                tbl, col.column_name, col.data_type, kind;
        END IF;
    END LOOP;
    FOR col IN SELECT key, value ->> 1 AS definition FROM jsonb_each(columns) LOOP
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS %I %s', tbl, col.key, col.definition);
    END LOOP;
    EXECUTE format('SELECT count(*) FROM %I WHERE clerk_id IS NULL', tbl) INTO n;
    IF n > 0 THEN
        RAISE EXCEPTION 'clerk-sync cannot adopt table "%": % rows have no clerk_id; fill or remove them, then run '
            'clerk-sync migrate again', tbl, n;
    END IF;
    EXECUTE format('SELECT count(*) FROM (SELECT clerk_id FROM %I GROUP BY clerk_id HAVING count(*) > 1) d', tbl)
        INTO n;
    IF n > 0 THEN
        RAISE EXCEPTION 'clerk-sync cannot adopt table "%": % clerk_id values appear more than once; merge or '
            'remove the duplicate rows, then run clerk-sync migrate again', tbl, n;
    END IF;
    EXECUTE format('ALTER TABLE %I ALTER COLUMN clerk_id SET NOT NULL', tbl);
    -- ON CONFLICT (clerk_id) needs a unique, non-partial index on exactly clerk_id.
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = tbl::regclass AND i.indisunique AND i.indnkeyatts = 1
          AND i.indpred IS NULL AND a.attname = 'clerk_id'
    ) THEN
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I UNIQUE (clerk_id)', tbl, tbl || '_clerk_id_key');
    END IF;
END
$fn$;

-- The full profile. public_metadata and data are jsonb; banned a boolean; the two timestamps come from Clerk's
-- milliseconds. Existing rows keep NULL until their next event, fallback or backfill.
SELECT pg_temp.clerk_sync_adopt('users', '{
    "phone_number": ["text", "text"], "external_id": ["text", "text"], "public_metadata": ["json", "jsonb"],
    "banned": ["boolean", "boolean"], "last_sign_in_at": ["timestamp", "timestamptz"],
    "clerk_created_at": ["timestamp", "timestamptz"], "data": ["json", "jsonb"]
}');

DO $tables$
BEGIN
    IF to_regclass('organizations') IS NULL THEN
        CREATE TABLE organizations (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
    END IF;
    IF to_regclass('organization_memberships') IS NULL THEN
        CREATE TABLE organization_memberships (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
    END IF;
END
$tables$;

-- Rows of an application-made table take created_via 'adopted' through the column default, dropped below.
SELECT pg_temp.clerk_sync_adopt('organizations', '{
    "clerk_id": ["text", "text"], "name": ["text", "text"], "slug": ["text", "text"],
    "image_url": ["text", "text"], "public_metadata": ["json", "jsonb"], "members_count": ["bigint", "bigint"],
    "clerk_created_at": ["timestamp", "timestamptz"], "data": ["json", "jsonb"],
    "created_via": ["text", "text NOT NULL DEFAULT ''adopted''"], "updated_via": ["text", "text"],
    "clerk_updated_at": ["bigint", "bigint"], "deleted_at": ["timestamp", "timestamptz"],
    "created_at": ["timestamp", "timestamptz NOT NULL DEFAULT now()"],
    "updated_at": ["timestamp", "timestamptz NOT NULL DEFAULT now()"]
}');
SELECT pg_temp.clerk_sync_adopt('organization_memberships', '{
    "clerk_id": ["text", "text"], "organization_clerk_id": ["text", "text"], "user_clerk_id": ["text", "text"],
    "role": ["text", "text"], "clerk_created_at": ["timestamp", "timestamptz"], "data": ["json", "jsonb"],
    "created_via": ["text", "text NOT NULL DEFAULT ''adopted''"], "updated_via": ["text", "text"],
    "clerk_updated_at": ["bigint", "bigint"], "deleted_at": ["timestamp", "timestamptz"],
    "created_at": ["timestamp", "timestamptz NOT NULL DEFAULT now()"],
    "updated_at": ["timestamp", "timestamptz NOT NULL DEFAULT now()"]
}');
ALTER TABLE organizations ALTER COLUMN created_via DROP DEFAULT;
ALTER TABLE organization_memberships ALTER COLUMN created_via DROP DEFAULT;

-- "Members of an organization" and "organizations of a user", newest first.
CREATE INDEX IF NOT EXISTS organization_memberships_organization
    ON organization_memberships (organization_clerk_id, clerk_created_at DESC);
CREATE INDEX IF NOT EXISTS organization_memberships_user
    ON organization_memberships (user_clerk_id, clerk_created_at DESC);
