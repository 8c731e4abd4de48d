-- Postgres keeps synced rows up to a page uncompressed (toast_tuple_target); SQLite never compresses values. This
-- migration only keeps the versions of the two backends in step.
SELECT 1;
