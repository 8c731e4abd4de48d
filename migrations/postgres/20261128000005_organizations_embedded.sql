-- Whether an organization's row was last written from the copy of it that a membership event embeds, rather
-- than from the organization's own event or Clerk's API. Clerk changes an organization (its members_count, and
-- more) without changing its updated_at, so at an equal updated_at the ordering guard lets the organization's
-- own event win over a copy, and must know which of the two the row holds. Rows already there count as the
-- organization's own (false): the guard treated them so until now.
--
-- An application's own organizations table may already have the column: kept when it is boolean, refused
-- (changing nothing) otherwise, as the identity migration adopts columns.
DO $embedded$
DECLARE
    found text;
BEGIN
    SELECT c.data_type INTO found FROM information_schema.columns c
    WHERE c.table_schema = current_schema() AND c.table_name = 'organizations' AND c.column_name = 'embedded';
    IF found IS NOT NULL AND found <> 'boolean' THEN
        RAISE EXCEPTION 'clerk-sync cannot adopt table "organizations": column "embedded" has type %, expected '
            'boolean; change or rename that column, then run clerk-sync migrate again', found;
    END IF;
END
$embedded$;
ALTER TABLE organizations ADD COLUMN IF NOT EXISTS embedded boolean NOT NULL DEFAULT false;
