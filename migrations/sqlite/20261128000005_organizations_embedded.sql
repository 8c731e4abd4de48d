-- Whether an organization's row was last written from a membership event's copy of it: same meaning as
-- migrations/postgres. The column (`embedded INTEGER NOT NULL DEFAULT 0`) is added by src/store/sqlite/adopt
-- around the migrations, as the identity migration's are: SQLite's ALTER TABLE cannot be made conditional, and
-- an application's own organizations table may already have it. This migration only keeps the versions of the
-- two backends in step.
SELECT 1;
